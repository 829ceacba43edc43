"""A published split folder, read back: its manifest (schema-checked) and each part by role and format.

Every file a caller asks for by role is sha256-checked against the manifest when the folder is opened, so what
runs is what ``datamix split`` verified. Servers, clients, the loopback check, deployment and the audit all load
parts through here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamix_cli.artifacts.manifest import Manifest, load_manifest
from datamix_cli.errors import ConfigError


class SplitFolder:
    def __init__(self, path: Path, roles: tuple[str, ...] | None = None, manifest: Manifest | None = None):
        """Open ``path`` checking the files of ``roles`` (all when None); a caller that already loaded (and so
        checked) the manifest passes it."""
        self.path = Path(path)
        self.manifest = manifest or load_manifest(self.path, roles=roles)

    def formats(self, role: str) -> list[str]:
        return [a["format"] for a in self.manifest.artifacts if a["role"] == role]

    def file(self, role: str, fmt: str) -> Path:
        """The path of the ``role`` artifact in format ``fmt`` (ManifestError naming what the split has, if none)."""
        return self.path / self.manifest.artifact(role, fmt)["path"]

    def runner(self, role: str, fmt: str = "torchscript", threads: int = 1):
        """The artifact as a NumPy-in, NumPy-out function, run by its format's exporter."""
        from exporters import get_exporter

        if fmt not in self.formats(role):
            raise ConfigError(f"the split has no {fmt!r} {role} artifact; it has {', '.join(self.formats(role)) or 'none'}")
        return get_exporter(fmt).load(self.file(role, fmt), threads=threads)

    def module(self, role: str):
        """The PyTorch (TorchScript) artifact of ``role`` as a torch module."""
        from exporters.torchscript import load_module

        return load_module(self.file(role, "torchscript"))

    def decoys(self) -> np.ndarray:
        with np.load(self.path / self.manifest.protocol["decoys"]["path"], allow_pickle=False) as archive:
            return archive["x"]

    def test_vectors(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "test_vectors.npz", allow_pickle=False) as vectors:
            return {name: vectors[name] for name in vectors.files}
