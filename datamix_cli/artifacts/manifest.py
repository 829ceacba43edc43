"""The manifest of a split folder: one dataclass, one JSON Schema, one version.

Loading a folder validates the manifest against the schema shipped in this
package, rejects unknown schema versions, and checks the sha256 of every file
it lists before anything is used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datamix_cli.artifacts.sections import (
    AccuracySection, ArtifactRecord, FileRecord, FlopsSection, ModelSection, ProtocolSection, SplitSection,
)
from datamix_cli.errors import ManifestError

SCHEMA_VERSION = 2  # written; 2 adds the wire codecs and the bottleneck (protocol version 2)
READABLE_VERSIONS = (1, 2)  # a version-1 manifest is an fp32 split without a bottleneck
MANIFEST_NAME = "manifest.json"
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")


@dataclass(frozen=True)
class Manifest:
    """Everything needed to run and check one split."""

    datamix_version: str
    model: ModelSection
    split: SplitSection
    protocol: ProtocolSection
    flops: FlopsSection
    accuracy: AccuracySection
    training: dict  # free-form in the schema: the fine-tuning options and history (docs/manifest.md)
    artifacts: list[ArtifactRecord]
    files: list[FileRecord]
    versions: dict[str, str | None]
    schema_version: int = SCHEMA_VERSION
    created: str = ""
    extra: dict = field(default_factory=dict)
    certificate: dict | None = None  # schema 2: the Fisher-information bound at split time (datamix_cli.privacy.certificate)
    privacy: dict | None = None  # schema 2: the noise mechanism, its clipping and calibration (datamix_cli.pipeline.privacy)

    def to_json(self) -> str:
        data = asdict(self)
        validate(data)
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest is not valid JSON: {exc}") from None
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            readable = " and ".join(map(str, READABLE_VERSIONS))
            raise ManifestError(f"unsupported manifest schema_version {version!r}; this datamix reads versions {readable}")
        validate(data)
        return cls(**data)

    def artifact(self, role: str, fmt: str) -> ArtifactRecord:
        for record in self.artifacts:
            if record["role"] == role and record["format"] == fmt:
                return record
        have = ", ".join(f"{a['role']}/{a['format']}" for a in self.artifacts)
        raise ManifestError(f"the split has no {role} artifact in format {fmt!r}; it has {have}")


def validate(data: dict) -> None:
    """Validate against the shipped JSON Schema; one line naming the first problem."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(top level)"
        raise ManifestError(f"manifest does not match schema at {where}: {first.message}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(folder: Path, roles: tuple[str, ...] | None = None) -> Manifest:
    """Read ``folder/manifest.json`` and verify the sha256 of its files (only those with ``roles`` if given).

    Roles: ``head``, ``cloud``, ``tail`` (artifacts), ``decoys``, ``test_vectors`` (other files).
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{folder} is not a split folder: {MANIFEST_NAME} not found")
    manifest = Manifest.from_json(path.read_text())
    records = [r for r in (*manifest.artifacts, *manifest.files) if roles is None or r["role"] in roles]
    for record in records:
        file = Path(folder) / record["path"]
        if not file.is_file():
            raise ManifestError(f"{record['path']} listed in the manifest is missing from {folder}")
        if sha256_file(file) != record["sha256"]:
            raise ManifestError(f"{record['path']} does not match its sha256 in the manifest: the file was changed")
    return manifest
