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
from datamix_cli.protocol.codecs import decode, encode, spec_codec
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


TRITON_TYPES = {"FP32": "TYPE_FP32", "FP16": "TYPE_FP16", "UINT8": "TYPE_UINT8"}


def config_pbtxt(name: str, platform: str, filename: str, inputs: list, outputs: list, k: int, config: TritonConfig) -> str:
    """Triton's model configuration in protobuf text format. ``inputs``/``outputs``: (name, OIP datatype, dims
    without batch)."""

    def tensors(items):
        return ",\n".join(f'  {{ name: "{n}" data_type: {TRITON_TYPES[t]} dims: [ {", ".join(map(str, dims))} ] }}' for n, t, dims in items)

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
    codec, down_codec = spec_codec(up), spec_codec(down)
    names = [input_name or up["name"]]
    if codec.params:  # libtorch: the second forward argument; ONNX: the manifest's name for it
        names.append("INPUT__1" if input_name else codec.params_name(up["name"]))
    output_name = output_name or down["name"]
    name = manifest.model["name"]
    reference, program = _reference(parts)
    with StagedFolder(config.out, config.force) as staged:
        version = staged.staging / name / "1"
        version.mkdir(parents=True)
        path = version / filename
        run = _write_model(config.backend, parts, program, path, names, output_name, up, codec, down_codec)
        error = _verify(run, _on_the_wire(reference, codec, down_codec), parts, tuple(up["shape"][1:]), k, codec, down_codec)
        if not error <= ATOL:
            raise VerificationError(f"{path.name} differs from the PyTorch cloud part by {error:.3g} > {ATOL:g}")
        inputs = [(names[0], codec.datatype, up["shape"][1:])] + [(n, "FP32", [codec.params]) for n in names[1:]]
        outputs = [(output_name, down_codec.datatype, down["shape"][1:])]
        (staged.staging / name / "config.pbtxt").write_text(config_pbtxt(name, platform, filename, inputs, outputs, k, config))
        record = {
            "source_manifest_sha256": sha256_file(Path(config.folder) / "manifest.json"),
            "model_name": name,
            "platform": platform,
            "model_file": f"1/{filename}",
            "sha256": sha256_file(path),
            "max_abs_error": error,
            "inputs": [{"name": n, "datatype": t, "dims": list(d)} for n, t, d in inputs],
            "outputs": [{"name": output_name, "manifest_name": down["name"], "datatype": down_codec.datatype, "dims": down["shape"][1:]}],
            "codecs": {"uplink": codec.name, "downlink": down_codec.name, "decoded": "inside the served model, before the cloud part"},
            "k": k,
        }
        # Triton ignores files in a model folder other than config.pbtxt and version folders.
        (staged.staging / name / "datamix.json").write_text(json.dumps(record, indent=2) + "\n")
        out = staged.publish()
    return TritonResult(out, name, platform, names[0], output_name, error, preferred_batch_sizes(k, config.max_batch), time.perf_counter() - started)


def _reference(parts):
    """The PyTorch cloud part (NumPy in, NumPy out) and its torch.export program when the split has one."""
    import torch

    from exporters.torchscript import numpy_runner

    if "pt2" in parts.formats("cloud"):
        program = torch.export.load(str(parts.file("cloud", "pt2")))
        return numpy_runner(program.module()), program
    return parts.runner("cloud"), None


def _write_model(backend, parts, program, path: Path, names: list[str], output_name: str, up: dict, codec, down_codec):
    """The served model file. With a codec other than fp32 on either leg the file wraps the cloud part with the
    decoding (and the downlink's cast), so a stock Triton serves the wire tensors as they are."""
    import shutil

    import torch

    from datamix_cli.protocol.edge_modules import WireCloud, WireCloudInt8
    from exporters import get_exporter

    wrapped = codec.name != "fp32" or down_codec.name != "fp32"
    wrapper = WireCloudInt8 if codec.params else WireCloud
    example = _encoded(codec, np.zeros((2 * parts.manifest.protocol["k"], *up["shape"][1:]), dtype=np.float32))
    if backend == TritonBackend.torchscript:
        if not wrapped:
            shutil.copyfile(parts.file("cloud", "torchscript"), path)
        else:
            cloud = torch.jit.load(str(parts.file("cloud", "torchscript")), map_location="cpu").eval()
            torch.jit.script(wrapper(cloud, down_codec.name == "fp16").eval()).save(str(path))
        return get_exporter("torchscript").load(path)
    if program is None:
        raise ConfigError("this split has no cloud/cloud.pt2 (made before datamix wrote one): re-run `datamix split`, or use --backend torchscript")
    onnx = get_exporter("onnx")
    onnx.check_available()
    model = program
    if wrapped:
        batch = torch.export.Dim("batch", min=1, max=1 << 16)  # one batch dimension shared by payload and parameters
        model = torch.export.export(wrapper(program.module(), down_codec.name == "fp16"), tuple(torch.from_numpy(a) for a in example),
                                    dynamic_shapes=tuple({0: batch} for _ in example))
    onnx.export(model, tuple(torch.from_numpy(a) for a in example), path, names, output_name)
    return onnx.load(path)


def _encoded(codec, x: np.ndarray) -> tuple:
    """The arrays a request carries for float32 values ``x``."""
    payload, params = encode(codec, x)
    return (payload,) if params is None else (payload, params)


def _on_the_wire(reference, codec, down_codec):
    """The PyTorch cloud part behind the codecs: the request's arrays in, the downlink's values out (float32)."""

    def run(*arrays):
        out = reference(decode(codec, *arrays))
        return decode(down_codec, *encode(down_codec, out))

    return run


def _verify(run, reference, parts, sample_shape: tuple, k: int, codec, down_codec) -> float:
    """Max abs error on the split's test-vector mixtures and on random batches of 1 and 2k+1, as the codec sends them,
    beyond one step of a lossy downlink: both sides round to it, and a value a hair from a rounding boundary in
    fp32 lands one step (fp16: 2^-10 of its magnitude) apart, which is the codec's error, not the artifact's."""
    from exporters.verify import max_abs_error

    mixtures = parts.test_vectors()["mixtures"]
    rng = np.random.default_rng(0)
    scale = float(np.abs(mixtures).max()) or 1.0
    cases = [mixtures] + [(scale * rng.standard_normal((b, *sample_shape))).astype(np.float32) for b in (1, 2 * k + 1)]
    step = (lambda want: np.spacing(np.abs(want).astype(np.float16)).astype(np.float64)) if down_codec.datatype == "FP16" else None
    return max_abs_error(lambda *a: np.asarray(run(*a), dtype=np.float32), reference, [_encoded(codec, c) for c in cases], allowance=step)