"""Property-based fuzzing of the inference endpoint: 2,000 malformed requests, zero 5xx.

Requests are built from a valid one and broken in one or more ways: wrong
shapes, datatypes, names, truncated or oversized binary sections, lying
header lengths, bad JSON, NaN/Inf, wrong types everywhere.
"""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from datamix_cli.server import build_app, load_cloud


@pytest.fixture(scope="module")
def target(small_split):
    cloud = load_cloud(small_split, max_batch=4)
    return cloud, TestClient(build_app(cloud), raise_server_exceptions=False)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)


@st.composite
def requests(draw, cloud):
    """(body bytes, headers) for one request, usually malformed."""
    per_sample = int(np.prod(cloud.input_shape))
    batch = draw(st.integers(-1, 6))
    shape = draw(st.one_of(st.just([batch, *cloud.input_shape]), st.lists(st.integers(-3, 40), max_size=5), json_values))
    tensor = {
        "name": draw(st.one_of(st.just(cloud.input_name), st.text(max_size=10), json_values)),
        "shape": shape,
        "datatype": draw(st.one_of(st.just("FP32"), st.sampled_from(["FP16", "INT64", "BYTES", "BOOL", "fp32"]), json_values)),
    }
    mode = draw(st.sampled_from(["json", "binary", "junk", "raw"]))
    binary = b""
    n = max(batch, 0) * per_sample
    if mode == "json":
        values = draw(st.sampled_from(["exact", "short", "nan", "strings", "nested"]))
        data = {
            "exact": [0.5] * n,
            "short": [0.5] * max(0, n - 1),
            "nan": [float("nan")] * n,
            "strings": ["a"] * min(n, 4),
            "nested": [[0.5] * per_sample for _ in range(max(batch, 0))],
        }[values]
        tensor["data"] = data
    elif mode == "binary":
        declared = draw(st.one_of(st.just(n * 4), st.integers(-5, n * 4 + 9), json_values))
        tensor["parameters"] = {"binary_data_size": declared}
        actual = draw(st.one_of(st.just(n * 4), st.integers(0, n * 4 + 9)))
        fill = draw(st.sampled_from([b"\x00\x00\x00\x00", b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f"]))  # 0, NaN, Inf
        binary = (fill * (actual // 4 + 1))[:actual]
    body = {"inputs": draw(st.one_of(st.just([tensor]), st.just([tensor, tensor]), json_values))}
    if draw(st.booleans()):
        body["outputs"] = draw(st.one_of(st.just([{"name": cloud.output_name, "parameters": {"binary_data": True}}]), json_values))
    if draw(st.booleans()):
        body["id"] = draw(json_values)
    header = json.dumps(body, allow_nan=True).encode()
    if mode == "raw":
        header = draw(st.binary(max_size=64))
    if mode == "junk":
        header = header[: draw(st.integers(0, len(header)))]
    headers = {}
    if binary or draw(st.booleans()):
        length = draw(st.one_of(st.just(len(header)), st.integers(-3, len(header) + len(binary) + 5), st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=4)))
        headers["Inference-Header-Content-Length"] = str(length)
    return header + binary, headers


def test_two_thousand_malformed_requests_get_no_5xx(target):
    cloud, client = target
    statuses = []

    @settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(request=requests(cloud))
    def check(request):
        body, headers = request
        response = client.post(f"/v2/models/{cloud.name}/infer", content=body, headers=headers)
        statuses.append(response.status_code)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert "error" in response.json()

    check()
    assert len(statuses) >= 2000
    assert sum(s >= 400 for s in statuses) > 1500  # the generator mostly produces bad requests
    assert client.get("/v2/health/ready").json() == {"ready": True}
    print(f"fuzz: {len(statuses)} requests, {sum(s >= 400 for s in statuses)} rejected with 4xx, 0 5xx")
