"""The cloud part on a production inference engine: a Triton model repository, a KServe InferenceService.

``export_triton`` writes a repository a stock Triton server loads unchanged:
``<model name>/config.pbtxt`` and ``<model name>/1/model.onnx`` (platform
``onnxruntime_onnx``, converted from the split's verified ``cloud.pt2``) or
``model.pt`` (``pytorch_libtorch``, the split's TorchScript). The model file is
run against the PyTorch cloud part before the folder is published, like every
artifact. The model name is the manifest's, so ``datamix infer`` asks Triton
for the same model it asks ``datamix serve`` for.

``kserve_manifest`` writes an ``InferenceService`` (``serving.kserve.io/v1beta1``)
that points KServe's Triton runtime at such a repository.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.errors import ConfigError, VerificationError
from datamix_cli.options import InstanceKind, TritonBackend

ATOL = 1e-4
# platform, model file, and the tensor names the backend requires (None: the manifest's own names).
PLATFORMS = {
    TritonBackend.onnx: ("onnxruntime_onnx", "model.onnx", None, None),
    # libtorch binds TorchScript tensors by position: INPUT__<i> are forward's arguments, OUTPUT__<j> its results.
    TritonBackend.torchscript: ("pytorch_libtorch", "model.pt", "INPUT__0", "OUTPUT__0"),
}
KINDS = {InstanceKind.auto: "KIND_AUTO", InstanceKind.cpu: "KIND_CPU", InstanceKind.gpu: "KIND_GPU"}


@dataclass(frozen=True)
class TritonConfig:
    folder: Path
    out: Path
    backend: TritonBackend = TritonBackend.onnx
    max_batch: int = 256
    instances: int = 1
    kind: InstanceKind = InstanceKind.auto
    max_queue_delay_us: int = 500
    force: bool = False


@dataclass(frozen=True)
class TritonResult:
    out: Path
    model_name: str
    platform: str
    input_name: str
    output_name: str
    max_abs_error: float
    preferred_batch_sizes: tuple[int, ...]
    seconds: float


def preferred_batch_sizes(k: int, max_batch: int) -> tuple[int, ...]:
    """k, 4k, 16k, ... up to ``max_batch``: whole groups only."""
    sizes, size = [], k
    while size <= max_batch:
        sizes.append(size)
        size *= 4
    return tuple(sizes)


def _check(config: TritonConfig, k: int) -> None:
    if config.max_batch < k or config.max_batch % k:
        raise ConfigError(f"--max-batch must be a positive multiple of the group size k={k}, got {config.max_batch}")
    if config.instances < 1:
        raise ConfigError(f"--instances must be >= 1, got {config.instances}")
    if config.max_queue_delay_us < 0:
        raise ConfigError(f"--max-queue-delay-us must be >= 0, got {config.max_queue_delay_us}")


def config_pbtxt(name: str, platform: str, filename: str, inputs: list, outputs: list, k: int, config: TritonConfig) -> str:
    """Triton's model configuration in protobuf text format. ``inputs``/``outputs``: (name, dims without batch)."""

    def tensors(items):
        return ",\n".join(f'  {{ name: "{n}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, dims))} ] }}' for n, dims in items)

    sizes = preferred_batch_sizes(k, config.max_batch)
    return f'''# Written by datamix from the split's manifest; the cloud part of a DataMix split.
name: "{name}"
platform: "{platform}"
default_model_filename: "{filename}"
# The first dimension of every tensor is the batch of mixtures; a request carries whole groups of k = {k}.
max_batch_size: {config.max_batch}
input [
{tensors(inputs)}
]
output [
{tensors(outputs)}
]
# Dynamic batching joins requests, never splits one, and every datamix request holds whole groups of k.
# Preferred sizes are multiples of k so a formed batch is made of whole groups; results do not depend on
# the batch either way (the cloud part runs per sample: BatchNorm in eval mode), this only keeps batches
# aligned with what clients send. The queue delay trades a little latency for fuller batches.
dynamic_batching {{
  preferred_batch_size: [ {", ".join(map(str, sizes))} ]
  max_queue_delay_microseconds: {config.max_queue_delay_us}
}}
instance_group [ {{ count: {config.instances} kind: {KINDS[config.kind]} }} ]
'''


def export_triton(config: TritonConfig) -> TritonResult:
    from datamix_cli.artifacts.manifest import load_manifest, sha256_file
    from datamix_cli.artifacts.staging import StagedFolder

    started = time.perf_counter()
    manifest = load_manifest(config.folder, roles=("cloud",))
    k = manifest.protocol["k"]
    _check(config, k)
    platform, filename, input_name, output_name = PLATFORMS[config.backend]
    up, down = manifest.split["uplink"], manifest.split["downlink"]
    input_name, output_name = input_name or up["name"], output_name or down["name"]
    name = manifest.model["name"]
    reference, program = _reference(config.folder, manifest)
    with StagedFolder(config.out, config.force) as staged:
        version = staged.staging / name / "1"
        version.mkdir(parents=True)
        path = version / filename
        run = _write_model(config.backend, config.folder, manifest, program, path, input_name, output_name, up)
        error = _verify(run, reference, config.folder, tuple(up["shape"][1:]), k)
        if not error <= ATOL:
            raise VerificationError(f"{path.name} differs from the PyTorch cloud part by {error:.3g} > {ATOL:g}")
        inputs, outputs = [(input_name, up["shape"][1:])], [(output_name, down["shape"][1:])]
        (staged.staging / name / "config.pbtxt").write_text(config_pbtxt(name, platform, filename, inputs, outputs, k, config))
        record = {
            "source_manifest_sha256": sha256_file(Path(config.folder) / "manifest.json"),
            "model_name": name,
            "platform": platform,
            "model_file": f"1/{filename}",
            "sha256": sha256_file(path),
            "max_abs_error": error,
            "inputs": [{"name": input_name, "manifest_name": up["name"], "dims": up["shape"][1:]}],
            "outputs": [{"name": output_name, "manifest_name": down["name"], "dims": down["shape"][1:]}],
            "k": k,
        }
        # Triton ignores files in a model folder other than config.pbtxt and version folders.
        (staged.staging / name / "datamix.json").write_text(json.dumps(record, indent=2) + "\n")
        out = staged.publish()
    return TritonResult(out, name, platform, input_name, output_name, error, preferred_batch_sizes(k, config.max_batch), time.perf_counter() - started)


def _reference(folder: Path, manifest):
    """The PyTorch cloud part (NumPy in, NumPy out) and its torch.export program when the split has one."""
    import torch

    from exporters import get_exporter

    formats = {a["format"] for a in manifest.artifacts if a["role"] == "cloud"}
    if "pt2" in formats:
        program = torch.export.load(str(Path(folder) / manifest.artifact("cloud", "pt2")["path"]))
        from exporters.torchscript import numpy_runner

        return numpy_runner(program.module()), program
    return get_exporter("torchscript").load(Path(folder) / manifest.artifact("cloud", "torchscript")["path"]), None


def _write_model(backend, folder: Path, manifest, program, path: Path, input_name: str, output_name: str, up: dict):
    import shutil

    import torch

    from exporters import get_exporter

    if backend == TritonBackend.torchscript:
        shutil.copyfile(Path(folder) / manifest.artifact("cloud", "torchscript")["path"], path)
        return get_exporter("torchscript").load(path)
    if program is None:
        raise ConfigError("this split has no cloud/cloud.pt2 (made before datamix wrote one): re-run `datamix split`, or use --backend torchscript")
    onnx = get_exporter("onnx")
    onnx.check_available()
    example = torch.zeros(2 * manifest.protocol["k"], *up["shape"][1:])
    onnx.export(program, (example,), path, [input_name], output_name)
    return onnx.load(path)


def _verify(run, reference, folder: Path, sample_shape: tuple, k: int) -> float:
    """Max abs error on the split's test-vector mixtures and on random batches of 1 and 2k+1."""
    from exporters.verify import max_abs_error

    with np.load(Path(folder) / "test_vectors.npz", allow_pickle=False) as vectors:
        mixtures = vectors["mixtures"]
    rng = np.random.default_rng(0)
    scale = float(np.abs(mixtures).max()) or 1.0
    cases = [(mixtures,)] + [((scale * rng.standard_normal((b, *sample_shape))).astype(np.float32),) for b in (1, 2 * k + 1)]
    return max_abs_error(run, reference, cases)


# --- KServe -------------------------------------------------------------------------------------

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


def to_yaml(node, indent: int = 0) -> str:
    """Block YAML for nested dicts and lists of strings and numbers; strings are JSON-quoted (valid YAML)."""
    pad = "  " * indent
    if isinstance(node, dict):
        lines = []
        for key, value in node.items():
            if isinstance(value, (dict, list)) and value:
                lines.append(f"{pad}{key}:\n{to_yaml(value, indent + 1)}")
            else:
                lines.append(f"{pad}{key}: {json.dumps(value)}")
        return "\n".join(lines)
    if isinstance(node, list):
        return "\n".join(f"{pad}- {json.dumps(item)}" if not isinstance(item, (dict, list)) else f"{pad}-\n{to_yaml(item, indent + 1)}" for item in node)
    return f"{pad}{json.dumps(node)}"


def write_kserve(config: KServeConfig) -> dict:
    from datamix_cli.artifacts.staging import write_atomically

    manifest = kserve_manifest(config)
    write_atomically(config.out, to_yaml(manifest) + "\n", config.force)
    return manifest
