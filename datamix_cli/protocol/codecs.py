"""Codecs for the tensors on the wire: the uplink's mixtures (after mixing and noise) and the downlink's cloud outputs.

* ``fp32``: the values as they are (4 bytes each).
* ``fp16``: IEEE half precision (2 bytes); values beyond ±65504 are refused, not sent as Inf.
* ``int8``: asymmetric 8-bit quantization with one scale and zero point per mixture (Jacob et al. 2018):
  q = clip(round(x / scale) + zero_point, 0, 255) as UINT8, decoded x̂ = (q − zero_point) · scale. The
  (scale, zero_point) pairs travel as a second FP32 tensor of shape [n, 2] named ``<tensor>_quant``. One pair per
  mixture, not per group: with shuffling the cloud must not learn which mixtures share a group, and a pair shared by
  a group would say so; per channel would cost 8 bytes per channel for the same 8-bit values.

Encoding happens on the edge after mixing and noise; the server decodes to float32 before the cloud part, and
de-mixing stays float32 on the edge. Fine-tuning runs :func:`simulate` in the loop (straight-through), so the model
learns with the rounding it will meet. Pure NumPy, except :func:`simulate` (torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datamix_cli.errors import ProtocolError

LEVELS = 255  # uint8: 0..255
FP16_MAX = float(np.finfo(np.float16).max)
PARAMS_SUFFIX = "_quant"


@dataclass(frozen=True)
class Codec:
    name: str
    datatype: str  # the Open Inference Protocol datatype on the wire
    dtype: str  # the NumPy dtype of the payload
    value_bytes: int
    params: int  # float32 parameters per sample sent beside the payload

    def bytes_per_sample(self, values: int) -> int:
        """Tensor bytes one sample of ``values`` numbers takes on the wire, its parameters included."""
        return values * self.value_bytes + self.params * 4

    def params_name(self, tensor: str) -> str:
        return tensor + PARAMS_SUFFIX


CODECS = {
    "fp32": Codec("fp32", "FP32", "<f4", 4, 0),
    "fp16": Codec("fp16", "FP16", "<f2", 2, 0),
    "int8": Codec("int8", "UINT8", "u1", 1, 2),
}


def get_codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except (KeyError, TypeError):
        raise ProtocolError(f"unknown codec {name!r}; choose {', '.join(CODECS)}") from None


def quant_params(x: np.ndarray) -> np.ndarray:
    """(scale, zero_point) per sample of ``x`` (n, ...), float32 (n, 2): the sample's [min, max] range, widened to
    include 0, spread over 256 levels; a constant sample gets scale 1."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    lo = np.minimum(flat.min(1), 0.0) if flat.shape[1] else np.zeros(len(x))
    hi = np.maximum(flat.max(1), 0.0) if flat.shape[1] else np.zeros(len(x))
    scale = (hi - lo) / LEVELS
    scale = np.where(scale > 0, scale, 1.0)
    zero_point = np.clip(np.round(-lo / scale), 0, LEVELS)
    return np.stack([scale, zero_point], 1).astype(np.float32)


def encode(codec: Codec, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (n, ...) float32 → (payload in the codec's dtype, parameters (n, 2) or None)."""
    x = np.asarray(x, dtype=np.float32)
    if codec.name == "fp32":
        return x, None
    if codec.name == "fp16":
        if x.size and float(np.abs(x).max()) > FP16_MAX:
            raise ProtocolError(f"values up to {float(np.abs(x).max()):.3g} exceed fp16's range (±{FP16_MAX:g}); use --uplink fp32 or int8")
        return x.astype(np.float16), None
    params = quant_params(x)
    shape = (len(x),) + (1,) * (x.ndim - 1)
    scale, zero_point = params[:, 0].reshape(shape), params[:, 1].reshape(shape)
    q = np.clip(np.round(x / scale) + zero_point, 0, LEVELS).astype(np.uint8)
    return q, params


def decode(codec: Codec, payload: np.ndarray, params: np.ndarray | None = None) -> np.ndarray:
    """The float32 values a payload (and its parameters) stand for."""
    if codec.name != "int8":
        return np.array(payload, dtype=np.float32)  # a copy: the payload may be a read-only view of a request body
    shape = (len(payload),) + (1,) * (payload.ndim - 1)
    scale, zero_point = params[:, 0].reshape(shape), params[:, 1].reshape(shape)
    return ((payload.astype(np.float32) - zero_point) * scale).astype(np.float32)


def check_params(params: np.ndarray, n: int) -> str | None:
    """Why int8 parameters for n samples are unusable (None when they are fine): shape [n, 2], scale finite and > 0,
    zero point an integer in 0..255, and every decoded value finite."""
    if params.shape != (n, 2):
        return f"quantization parameters must have shape [{n}, 2], got {list(params.shape)}"
    scale, zero_point = params[:, 0].astype(np.float64), params[:, 1].astype(np.float64)
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        return "quantization scales must be finite and > 0"
    if not (np.isfinite(zero_point).all() and (zero_point == np.round(zero_point)).all() and ((0 <= zero_point) & (zero_point <= LEVELS)).all()):
        return f"quantization zero points must be integers in 0..{LEVELS}"
    if not (scale * LEVELS < np.finfo(np.float32).max).all():
        return "quantization scales are too large: decoded values would overflow float32"
    return None


def simulate(codec: Codec, x):
    """What the cloud decodes for torch mixtures ``x`` (n, ...), with a straight-through gradient: training and
    evaluation see the codec's rounding, the backward pass sees the identity. Same arithmetic as :func:`encode`."""
    import torch

    if codec.name == "fp32":
        return x
    if codec.name == "fp16":
        return x + (x.detach().to(torch.float16).to(x.dtype) - x.detach())
    flat = x.detach().reshape(len(x), -1).double()
    lo, hi = flat.min(1).values.clamp_max(0.0), flat.max(1).values.clamp_min(0.0)
    scale64 = (hi - lo) / LEVELS
    scale64 = torch.where(scale64 > 0, scale64, torch.ones_like(scale64))
    scale, zero_point = scale64.float(), torch.clamp(torch.round(-lo / scale64), 0, LEVELS).float()
    shape = (len(x),) + (1,) * (x.dim() - 1)
    scale, zero_point = scale.reshape(shape).to(x.device), zero_point.reshape(shape).to(x.device)
    q = torch.clamp(torch.round(x.detach().float() / scale) + zero_point, 0, LEVELS)
    decoded = ((q - zero_point) * scale).to(x.dtype)
    return x + (decoded - x.detach())


def wire_spec(codec: Codec, name: str, shape) -> dict:
    """The manifest's description of a tensor on the wire: shape, payload dtype, codec, bytes per sample."""
    values = int(np.prod([int(d) for d in shape[1:]], dtype=np.int64))
    spec = {"name": name, "shape": [int(d) for d in shape], "dtype": np.dtype(codec.dtype).name, "codec": codec.name,
            "values_per_sample": values, "bytes_per_sample": codec.bytes_per_sample(values)}
    if codec.params:
        spec["params"] = {"name": codec.params_name(name), "shape": [-1, codec.params], "dtype": "float32"}
    return spec


def spec_codec(spec: dict) -> Codec:
    """The codec of a manifest tensor spec (schema 1 specs have none: fp32)."""
    return get_codec(spec.get("codec", "fp32"))
