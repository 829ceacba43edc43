"""Option types shared by the CLI and the library, and their parsing."""

from __future__ import annotations

import enum

from datamix_cli.errors import ConfigError, InputShapeError


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


class MixingDistribution(str, enum.Enum):
    """How the secret C of each group is drawn (docs/protocol.md)."""

    dirichlet = "dirichlet"  # rows ~ Dirichlet(alpha), cond(C) <= kappa_max: the paper's convex mixing
    orthogonal = "orthogonal"  # Haar-random orthogonal, cond 1 at any k


class UplinkCodec(str, enum.Enum):
    """How the mixtures travel (datamix_cli.protocol.codecs)."""

    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"  # uint8 with a scale and zero point per mixture


class DownlinkCodec(str, enum.Enum):
    """How the cloud outputs travel back (de-mixing amplifies rounding by up to cond(C): no int8)."""

    fp32 = "fp32"
    fp16 = "fp16"


class CutFeatures(str, enum.Enum):
    """Which cuts the head may end at."""

    any = "any"
    signed = "signed"  # only cuts whose features take both signs (pre-activation)


class Preset(str, enum.Enum):
    """Named protocol configurations (datamix_cli.protocol.presets)."""

    default = "default"
    private = "private"


class Runtime(str, enum.Enum):
    """The edge runtime that runs the head and tail artifacts."""

    onnx = "onnx"
    tflite = "tflite"
    torchscript = "torchscript"  # the PyTorch reference


class PreprocessPreset(str, enum.Enum):
    none = "none"  # built-in data, already at size
    imagenet = "imagenet"  # resize 256/224, centre crop, ImageNet mean/std


class ChannelOrder(str, enum.Enum):
    rgb = "rgb"
    bgr = "bgr"


def choice(enum_type: type[enum.Enum], value, option: str):
    """``value`` as a member of ``enum_type`` (members and their string values accepted), or a one-line ConfigError."""
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(str(value).strip().lower())
    except ValueError:
        names = ", ".join(m.value for m in enum_type)
        raise ConfigError(f"unknown {option} {value!r}; choose from {names}") from None


def parse_list(text: str) -> tuple[str, ...]:
    """``"onnx, tflite"`` -> ``("onnx", "tflite")``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_floats(text, option: str) -> tuple[float, ...]:
    """``"0.5,0.25"`` -> ``(0.5, 0.25)`` (a tuple passes through), or a one-line ConfigError naming ``--option``."""
    if isinstance(text, tuple):
        return text
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--{option} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ConfigError(f"--{option} is empty")
    return values
