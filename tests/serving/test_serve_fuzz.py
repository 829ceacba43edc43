"""Property-based fuzzing of the inference endpoint: 2,000 requests, each answered with the status the protocol says.

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

from datamix_cli.serving.server import build_app, load_cloud


@pytest.fixture(scope="module")
def target(small_split):
    cloud = load_cloud(small_split, max_batch=4)
    return cloud, TestClient(build_app(cloud), raise_server_exceptions=False)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)


VALID_OUTPUTS = "valid"


def expected_status(cloud, body: dict | None, binary: bytes, header: bytes, headers: dict) -> int:
    """What the protocol says the server must answer, decided from the request alone: 200 or 400.

    Written from the Open Inference Protocol and the manifest's tensor
    contract, not from the server's code: one tensor named like the uplink,
    FP32, shape [1..max_batch, *per-sample shape], finite values given either
    as JSON numbers (flat or nested) or as exactly binary_data_size bytes
    after a JSON header whose length the Inference-Header-Content-Length
    header states.
    """
    length = headers.get("Inference-Header-Content-Length")
    if body is None or (binary and length != str(len(header))) or (length is not None and length != str(len(header))):
        return 400
    inputs = body.get("inputs")
    if not (isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict)):
        return 400
    tensor = inputs[0]
    shape = tensor.get("shape")
    if tensor.get("name") != cloud.input_name or tensor.get("datatype") != "FP32":
        return 400
    if not (isinstance(shape, list) and all(type(d) is int for d in shape) and shape[1:] == list(cloud.input_shape)):
        return 400
    if not 1 <= shape[0] <= cloud.max_batch:
        return 400
    count = int(np.prod(shape))
    outputs = body.get("outputs", [])
    if outputs is not None and not (isinstance(outputs, list) and all(isinstance(o, dict) and o.get("name") == cloud.output_name for o in outputs)):
        return 400
    if "parameters" in tensor:
        size = tensor["parameters"].get("binary_data_size") if isinstance(tensor["parameters"], dict) else None
        values = np.frombuffer(binary[: len(binary) - len(binary) % 4], dtype="<f4")
        ok = type(size) is int and size == 4 * count == len(binary) and np.isfinite(values).all()
        return 200 if ok else 400
    if binary or "data" not in tensor:
        return 400
    flat, stack = [], [tensor["data"]]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif type(item) in (int, float) and np.isfinite(item) and abs(item) < 3.4e38:
            flat.append(item)
        else:
            return 400
    return 200 if len(flat) == count else 400


@st.composite
def requests(draw, cloud):
    """(body bytes, headers, expected status, the value every input element has) for one request, usually malformed."""
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
    parsed = body
    if mode == "raw":
        header, parsed = draw(st.binary(max_size=64)), None  # never a whole request: too short for one
    if mode == "junk":
        cut = draw(st.integers(0, len(header)))
        header, parsed = header[:cut], body if cut == len(header) else None
    headers = {}
    if binary or draw(st.booleans()):
        length = draw(st.one_of(st.just(len(header)), st.integers(-3, len(header) + len(binary) + 5), st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=4)))
        headers["Inference-Header-Content-Length"] = str(length)
    return header + binary, headers, expected_status(cloud, parsed, binary, header, headers), 0.0 if mode == "binary" else 0.5


def test_two_thousand_malformed_requests_get_the_status_the_protocol_says(target):
    cloud, client = target
    statuses = []
    reference = {}

    @settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(request=requests(cloud))
    def check(request):
        body, headers, expected, value = request
        response = client.post(f"/v2/models/{cloud.name}/infer", content=body, headers=headers)
        statuses.append(response.status_code)
        assert response.status_code == expected, (response.text, body[:300], headers)
        if expected == 400:
            assert "error" in response.json()
        else:
            n = int(response.headers.get("inference-header-content-length", len(response.content)))
            output = json.loads(response.content[:n])["outputs"][0]
            got = np.frombuffer(response.content[n:], "<f4") if n < len(response.content) else np.asarray(output["data"], np.float32)
            x = np.full(output["shape"][:1] + list(cloud.input_shape), value, np.float32)
            if (x.shape, value) not in reference:
                reference[x.shape, value] = cloud.run(x)
            np.testing.assert_allclose(got.reshape(output["shape"]), reference[x.shape, value], rtol=0, atol=1e-5)

    check()
    assert len(statuses) >= 2000
    assert sum(s == 400 for s in statuses) > 1500 and sum(s == 200 for s in statuses) >= 1  # mostly malformed, some valid
    assert client.get("/v2/health/ready").json() == {"ready": True}
    print(f"fuzz: {len(statuses)} requests, {sum(s == 400 for s in statuses)} rejected with 400, {sum(s == 200 for s in statuses)} answered")
