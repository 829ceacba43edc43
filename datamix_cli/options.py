"""Option types shared by the CLI and the library, and their parsing."""

from __future__ import annotations

import enum

from datamix_cli.errors import InputShapeError


class OptimizerName(str, enum.Enum):
    adam = "adam"
    sgd = "sgd"


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,1,32,32"`` -> ``(1, 1, 32, 32)``; the first number is the batch dimension."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise InputShapeError(f"malformed input shape {text!r}: expected comma-separated integers like 1,1,32,32") from None
    if len(shape) < 2 or any(d <= 0 for d in shape):
        raise InputShapeError(f"input shape {text!r} needs a batch dimension and positive sizes, like 1,1,32,32")
    return shape


class TritonBackend(str, enum.Enum):
    """The Triton backend a repository targets (its production C++ backends, not Python)."""

    onnx = "onnx"  # platform onnxruntime_onnx
    torchscript = "torchscript"  # platform pytorch_libtorch


class InstanceKind(str, enum.Enum):
    auto = "auto"  # GPU when the server has one, else CPU (Triton's KIND_AUTO)
    cpu = "cpu"
    gpu = "gpu"
