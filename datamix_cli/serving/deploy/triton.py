"""The cloud part on a production inference engine: a Triton model repository, a KServe InferenceService.

``export_triton`` writes a repository a stock Triton server loads unchanged:
``<model name>/config.pbtxt`` and ``<model name>/1/model.onnx`` (platform
``onnxruntime_onnx``, converted from the split's verified ``cloud.pt2``) or
``model.pt`` (``pytorch_libtorch``, the split's TorchScript). The model file is
run against the PyTorch cloud part before the folder is published, like every
artifact. The model name is the manifest's, so ``datamix infer`` asks Triton
for the same model it asks ``datamix serve`` for.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.errors import ConfigError, VerificationError
from datamix_cli.options import InstanceKind, TritonBackend
from datamix_cli.serving.platforms import PLATFORMS


ATOL = 1e-4


# model file, and the tensor names the backend requires (None: the manifest's own names).
MODEL_FILES = {
    TritonBackend.onnx: ("model.onnx", None, None),
    # libtorch binds TorchScript tensors by position: INPUT__<i> are forward's arguments, OUTPUT__<j> its results.
    TritonBackend.torchscript: ("model.pt", "INPUT__0", "OUTPUT__0"),
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
    from datamix_cli.artifacts.folder import SplitFolder
    from datamix_cli.artifacts.manifest import sha256_file
    from datamix_cli.artifacts.staging import StagedFolder

    started = time.perf_counter()
    parts = SplitFolder(config.folder, roles=("cloud",))
    manifest = parts.manifest
    k = manifest.protocol["k"]
    _check(config, k)
    platform = PLATFORMS[config.backend.value]
    filename, input_name, output_name = MODEL_FILES[config.backend]
    up, down = manifest.split["uplink"], manifest.split["downlink"]
    input_name, output_name = input_name or up["name"], output_name or down["name"]
    name = manifest.model["name"]
    reference, program = _reference(parts)
    with StagedFolder(config.out, config.force) as staged:
        version = staged.staging / name / "1"
        version.mkdir(parents=True)
        path = version / filename
        run = _write_model(config.backend, parts, program, path, input_name, output_name, up)
        error = _verify(run, reference, parts, tuple(up["shape"][1:]), k)
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


def _reference(parts):
    """The PyTorch cloud part (NumPy in, NumPy out) and its torch.export program when the split has one."""
    import torch

    from exporters.torchscript import numpy_runner

    if "pt2" in parts.formats("cloud"):
        program = torch.export.load(str(parts.file("cloud", "pt2")))
        return numpy_runner(program.module()), program
    return parts.runner("cloud"), None


def _write_model(backend, parts, program, path: Path, input_name: str, output_name: str, up: dict):
    import shutil

    import torch

    from exporters import get_exporter

    if backend == TritonBackend.torchscript:
        shutil.copyfile(parts.file("cloud", "torchscript"), path)
        return get_exporter("torchscript").load(path)
    if program is None:
        raise ConfigError("this split has no cloud/cloud.pt2 (made before datamix wrote one): re-run `datamix split`, or use --backend torchscript")
    onnx = get_exporter("onnx")
    onnx.check_available()
    example = torch.zeros(2 * parts.manifest.protocol["k"], *up["shape"][1:])
    onnx.export(program, (example,), path, [input_name], output_name)
    return onnx.load(path)


def _verify(run, reference, parts, sample_shape: tuple, k: int) -> float:
    """Max abs error on the split's test-vector mixtures and on random batches of 1 and 2k+1."""
    from exporters.verify import max_abs_error

    mixtures = parts.test_vectors()["mixtures"]
    rng = np.random.default_rng(0)
    scale = float(np.abs(mixtures).max()) or 1.0
    cases = [(mixtures,)] + [((scale * rng.standard_normal((b, *sample_shape))).astype(np.float32),) for b in (1, 2 * k + 1)]
    return max_abs_error(run, reference, cases)
