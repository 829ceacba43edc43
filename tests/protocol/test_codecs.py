"""The wire codecs against an independent implementation of the arithmetic they promise, and the training-time
simulation against the codecs themselves."""

import math

import numpy as np
import pytest
import torch

from datamix_cli.errors import ProtocolError
from datamix_cli.protocol.codecs import CODECS, check_params, decode, encode, get_codec, simulate, wire_spec


def reference_int8(row: list[float]) -> tuple[list[int], float, int]:
    """Asymmetric uint8 quantization of one sample, element by element in Python floats (Jacob et al. 2018, eq. 1-2):
    the range [min, max] widened to hold 0, 256 levels, the zero point the level that stands for 0."""
    lo, hi = min(min(row), 0.0), max(max(row), 0.0)
    scale = (hi - lo) / 255 if hi > lo else 1.0
    zero_point = min(max(round(-lo / scale), 0), 255)
    scale32 = float(np.float32(scale))
    return [min(max(round(v / scale32) + zero_point, 0), 255) for v in row], scale32, zero_point


@pytest.fixture
def mixtures():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((6, 3, 4, 4)) * rng.uniform(0.1, 50, (6, 1, 1, 1))).astype(np.float32)
    x[1] = np.abs(x[1])  # post-ReLU-like: all >= 0
    x[2] = -np.abs(x[2])
    x[3] = 0.0  # a constant sample
    return x


def test_int8_matches_an_independent_implementation(mixtures):
    q, params = encode(CODECS["int8"], mixtures)
    assert q.dtype == np.uint8 and params.shape == (6, 2) and params.dtype == np.float32
    for i, row in enumerate(mixtures.reshape(6, -1)):
        levels, scale, zero_point = reference_int8([float(v) for v in row])
        # x / scale in float32 (as the codec divides) may round a tie differently from float64 in at most a few places
        assert np.mean(q[i].ravel() != np.asarray(levels)) <= 0.02
        assert np.abs(q[i].ravel().astype(int) - np.asarray(levels)).max() <= 1
        assert params[i, 0] == pytest.approx(scale, rel=1e-6) and params[i, 1] == zero_point


def test_int8_round_trip_is_within_half_a_step_and_keeps_zero_exact(mixtures):
    codec = CODECS["int8"]
    q, params = encode(codec, mixtures)
    decoded = decode(codec, q, params)
    step = params[:, 0].reshape(-1, 1, 1, 1)
    assert (np.abs(decoded - mixtures) <= step / 2 * (1 + 1e-4)).all()
    assert (decoded[mixtures == 0] == 0).all()  # the zero point stands for 0 exactly (zero padding, ReLU zeros)


def test_fp16_round_trip_and_range(mixtures):
    codec = CODECS["fp16"]
    payload, params = encode(codec, mixtures)
    assert payload.dtype == np.float16 and params is None
    np.testing.assert_array_equal(decode(codec, payload), mixtures.astype(np.float16).astype(np.float32))
    with pytest.raises(ProtocolError, match="fp16"):
        encode(codec, np.array([[7e4]], dtype=np.float32))


def test_simulate_is_the_codec_forward_and_the_identity_backward(mixtures):
    for name in ("fp16", "int8"):
        codec = CODECS[name]
        x = torch.from_numpy(mixtures).requires_grad_(True)
        out = simulate(codec, x)
        np.testing.assert_array_equal(out.detach().numpy(), decode(codec, *encode(codec, mixtures)))
        out.sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), np.ones_like(mixtures))  # straight-through


def test_bad_parameters_are_refused():
    good = np.array([[0.1, 3.0], [2.0, 0.0]], dtype=np.float32)
    assert check_params(good, 2) is None
    for bad in ([[0.1, 3.0]], [[0.0, 3.0], [1, 1]], [[-1, 3], [1, 1]], [[np.nan, 3], [1, 1]], [[0.1, 3.5], [1, 1]], [[0.1, 256], [1, 1]],
                [[0.1, -1], [1, 1]], [[3e38, 1], [1, 1]]):
        assert check_params(np.asarray(bad, dtype=np.float32), 2) is not None, bad


def test_unknown_codec_and_wire_sizes():
    with pytest.raises(ProtocolError, match="unknown codec 'int4'"):
        get_codec("int4")
    spec = wire_spec(CODECS["int8"], "mixtures", (-1, 4, 8, 8))
    assert spec["bytes_per_sample"] == 4 * 8 * 8 + 8 and spec["dtype"] == "uint8" and spec["params"]["name"] == "mixtures_quant"
    assert wire_spec(CODECS["fp16"], "m", (-1, 10))["bytes_per_sample"] == 20
    assert math.prod([4, 8, 8]) * 4 == wire_spec(CODECS["fp32"], "m", (-1, 4, 8, 8))["bytes_per_sample"]
