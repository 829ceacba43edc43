"""A KServe ``InferenceService`` (``serving.kserve.io/v1beta1``) that points KServe's Triton runtime at a
repository written by :func:`datamix_cli.serving.deploy.triton.export_triton`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from datamix_cli.errors import ConfigError
from datamix_cli.serving.deploy.yaml import to_yaml


MODEL_FORMATS = {"onnxruntime_onnx": "onnx", "pytorch_libtorch": "pytorch"}


@dataclass(frozen=True)
class KServeConfig:
    repository: Path  # a repository written by export_triton
    out: Path  # the YAML file to write
    storage_uri: str
    name: str | None = None
    namespace: str | None = None
    cpu: str = "1"
    memory: str = "2Gi"
    gpus: int = 0
    force: bool = False


def kserve_manifest(config: KServeConfig) -> dict:
    """An InferenceService for KServe's Triton runtime serving the repository's one model (Open Inference Protocol v2)."""
    records = sorted(config.repository.glob("*/datamix.json"))
    if len(records) != 1:
        raise ConfigError(f"{config.repository} is not a repository written by `datamix export triton` (one model folder with datamix.json)")
    record = json.loads(records[0].read_text())
    name = config.name or re.sub(r"[^a-z0-9-]+", "-", record["model_name"].lower()).strip("-")[:63] or "datamix"
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        raise ConfigError(f"InferenceService name {name!r} must be a DNS-1035 label: lower-case letters, digits and '-', starting with a letter")
    if not re.match(r"^[a-z][a-z0-9+.-]*://", config.storage_uri):
        raise ConfigError(f"--storage-uri {config.storage_uri!r} must be a URI such as s3://bucket/path, gs://… or pvc://claim/path")
    if config.gpus < 0:
        raise ConfigError(f"--gpus must be >= 0, got {config.gpus}")
    resources = {"cpu": config.cpu, "memory": config.memory}
    if config.gpus:
        resources["nvidia.com/gpu"] = str(config.gpus)
    metadata = {"name": name, "annotations": {"datamix/source-manifest-sha256": record["source_manifest_sha256"], "datamix/model-name": record["model_name"]}}
    if config.namespace:
        metadata["namespace"] = config.namespace
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": MODEL_FORMATS[record["platform"]]},
                    "runtime": "kserve-tritonserver",
                    "protocolVersion": "v2",
                    # The repository root: Triton finds <model name>/config.pbtxt under it.
                    "storageUri": config.storage_uri,
                    "resources": {"requests": dict(resources), "limits": dict(resources)},
                }
            }
        },
    }


def write_kserve(config: KServeConfig) -> dict:
    from datamix_cli.artifacts.staging import write_atomically

    manifest = kserve_manifest(config)
    write_atomically(config.out, to_yaml(manifest) + "\n", config.force)
    return manifest
