"""Part times measured by ``profile --measure``, kept between runs.

A time is looked up by everything it depends on: the model (the sha256 of its traced graph and parameters), the
part (which cut, which tail, with or without mixing), the group size, the sample shape, the runtime, its version
and threads, and this machine. A changed weight, cut or thread count is a different key, so it is measured anew;
nothing is ever reused across machines. The cache is one JSON file under ``$DATAMIX_CACHE_DIR`` (default
``$XDG_CACHE_HOME/datamix``, else ``~/.cache/datamix``), written once per run (``save``), whole, to a temporary
file that is then renamed, so a crash never leaves it half-written; an unreadable cache is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path

CACHE_FILE = "part-times.json"


def cache_dir() -> Path:
    if os.environ.get("DATAMIX_CACHE_DIR"):
        return Path(os.environ["DATAMIX_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "datamix"


def model_sha256(traced) -> str:
    """The sha256 of a traced model's generated code and of every parameter and buffer (name, dtype, shape, bytes)."""
    import torch

    module = traced.module
    digest = hashlib.sha256(module.code.encode())
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def runtime_version(runtime: str) -> str:
    """The version of the package that runs ``runtime`` parts (a new version may time differently)."""
    from importlib import metadata

    for package in {"onnx": ("onnxruntime",), "tflite": ("ai-edge-litert", "tflite-runtime"), "torch": ("torch",)}[runtime]:
        try:
            return f"{package} {metadata.version(package)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def machine() -> str:
    return f"{platform.node()}|{platform.machine()}|{platform.processor()}|{os.cpu_count()}"


class TimeCache:
    """``seconds(key, measure)``: the cached time for ``key`` (a JSON-able dict), else ``measure()``, stored."""

    def __init__(self, path: Path | None = None, enabled: bool = True):
        self.path = path or cache_dir() / CACHE_FILE
        self.enabled = enabled
        self.hits = self.misses = 0
        self._entries = self._read() if enabled else {}

    def seconds(self, key: dict, measure) -> float:
        if not self.enabled:
            self.misses += 1
            return measure()
        name = hashlib.sha256(json.dumps({**key, "machine": machine()}, sort_keys=True).encode()).hexdigest()
        if name in self._entries:
            self.hits += 1
            return float(self._entries[name]["seconds"])
        self.misses += 1
        value = measure()
        self._entries[name] = {"seconds": value, "key": key}
        return value

    def _read(self) -> dict:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        ok = isinstance(entries, dict) and all(isinstance(e, dict) and isinstance(e.get("seconds"), (int, float)) for e in entries.values())
        return entries if ok else {}

    def save(self) -> None:
        """Writes the times measured in this run (once, at the end: a crash loses only them)."""
        if not self.enabled or not self.misses:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".part-times-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(self._entries, f)
            os.replace(tmp, self.path)
        except OSError:  # a read-only home: the times are still used in this run, just not kept
            self.enabled = False
