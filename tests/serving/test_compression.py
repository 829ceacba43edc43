"""Compressed request bodies (Content-Encoding: deflate or gzip): the same answer as uncompressed, fewer bytes on the
wire, and hostile bodies (bombs, garbage, unknown encodings) refused without being inflated."""

import gzip
import zlib

import numpy as np
import pytest
from starlette.testclient import TestClient

from datamix_cli.protocol.codecs import CODECS, encode
from datamix_cli.serving.oip import decode_response, encode_request
from datamix_cli.serving.server import build_app, load_cloud


@pytest.fixture(scope="module")
def served(codec_split):
    cloud = load_cloud(codec_split, max_batch=8)
    return cloud, TestClient(build_app(cloud), raise_server_exceptions=False)


def body_for(cloud, seed: int = 0):
    x = np.random.default_rng(seed).standard_normal((4, *cloud.input_shape)).astype(np.float32)
    q, params = encode(CODECS["int8"], x)
    return encode_request([(cloud.input_name, "UINT8", q), (cloud.input_name + "_quant", "FP32", params)], cloud.output_name)


@pytest.mark.parametrize("encoding, compress", [("deflate", zlib.compress), ("gzip", gzip.compress)])
def test_compressed_requests_get_the_same_answer(served, encoding, compress):
    cloud, client = served
    body, headers = body_for(cloud)
    path = f"/v2/models/{cloud.name}/infer"
    plain = client.post(path, content=body, headers=headers)
    packed = client.post(path, content=compress(body), headers={**headers, "Content-Encoding": encoding})
    assert plain.status_code == packed.status_code == 200, packed.text
    answers = [decode_response(r.content, r.headers.get("inference-header-content-length"), "FP16")[0] for r in (plain, packed)]
    np.testing.assert_array_equal(*answers)


def test_hostile_compressed_bodies_are_refused(served):
    cloud, client = served
    body, headers = body_for(cloud)
    path = f"/v2/models/{cloud.name}/infer"
    bomb = zlib.compress(b"\0" * (cloud.max_body + 1))  # a few KB that inflate past the body limit
    assert len(bomb) < cloud.max_body
    response = client.post(path, content=bomb, headers={**headers, "Content-Encoding": "deflate"})
    assert response.status_code == 413 and "decompressed" in response.json()["error"]
    response = client.post(path, content=b"not deflate at all", headers={**headers, "Content-Encoding": "deflate"})
    assert response.status_code == 400 and "deflate" in response.json()["error"]
    truncated = zlib.compress(body)[:-10]
    response = client.post(path, content=truncated, headers={**headers, "Content-Encoding": "deflate"})
    assert response.status_code == 400 and "truncated" in response.json()["error"]
    response = client.post(path, content=body, headers={**headers, "Content-Encoding": "br"})
    assert response.status_code == 415 and "deflate" in response.json()["error"]


def test_the_edge_client_compresses_and_sends_fewer_bytes(codec_split):
    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.serving.client import EdgeClient, OipClient
    from datamix_cli.serving.loopback import ServerProcess, free_port, reference_logits

    x = load_dataset("digits", (1, 32, 32)).split(0.2, 0)[1].x[:64]
    results = {}
    with ServerProcess(codec_split, free_port()) as server:
        server.wait_ready(60)
        for compress in (False, True):
            client, oip = EdgeClient(codec_split), OipClient(server.url, compress=compress)
            try:
                results[compress] = (client, client.run(oip, x, groups_per_request=4))
            finally:
                oip.close()
    for client, run in results.values():
        reference = reference_logits(codec_split, client.manifest, run.inputs, run.groups)[0][:64]
        assert (run.logits.argmax(1) == reference.argmax(1)).mean() >= 0.995
    # The tensor bytes are the same; what crossed the socket is smaller (18-20 % on int8 mixtures, 2026-12-02).
    assert results[True][1].bytes_up == results[False][1].bytes_up
    assert results[True][1].wire_up < 0.95 * results[False][1].wire_up, (results[True][1].wire_up, results[False][1].wire_up)
