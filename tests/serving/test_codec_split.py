"""A split with a bottleneck, the int8 uplink and the fp16 downlink, end to end; the protocol bump; old manifests."""

import json
import shutil

import numpy as np
import pytest
from starlette.testclient import TestClient

from datamix_cli.artifacts.manifest import load_manifest
from datamix_cli.errors import ServerError
from datamix_cli.protocol.codecs import CODECS, decode, encode
from datamix_cli.serving.server import build_app, load_cloud


def test_manifest_describes_the_code_and_the_codecs(codec_split, small_split):
    manifest, plain = load_manifest(codec_split), load_manifest(small_split)
    assert manifest.schema_version == 2 and manifest.protocol["version"] == 2
    assert manifest.protocol["codecs"] == {"uplink": "int8", "downlink": "fp16"}
    up = manifest.split["uplink"]
    assert up["shape"] == [-1, 4, 8, 8] and up["dtype"] == "uint8" and up["bytes_per_sample"] == 4 * 8 * 8 + 8
    assert manifest.split["downlink"]["bytes_per_sample"] == plain.split["downlink"]["bytes_per_sample"] // 2
    bottleneck = manifest.split["bottleneck"]
    assert bottleneck["cut_shape"] == plain.split["uplink"]["shape"][1:] == [16, 16, 16]
    # The same model cut at the same place: the encoder's FLOPs (2·16·16·16·4, one MAC per input value and code
    # channel) on the edge, the decoder's in the cloud, and mixing over the code's 256 values instead of 4096.
    flops = manifest.flops
    assert flops["bottleneck"] == {"encoder": 2 * 16 * 16 * 16 * 4, "decoder": 2 * 16 * 16 * 16 * 4}
    assert flops["head"] == plain.flops["head"] + flops["bottleneck"]["encoder"]
    assert flops["cloud"] == plain.flops["cloud"] + flops["bottleneck"]["decoder"]
    assert flops["mix"] == 2 * 4 * 256 and plain.flops["mix"] == 2 * 4 * 4096
    # It learned: far above chance (10 %) and within reach of the original after 4 epochs at 1/62 of the bytes.
    assert manifest.accuracy["mixing_aware"] >= manifest.accuracy["original"] - 0.12
    # Trained with the int8 rounding in the loop (straight-through): 0.41 -> 0.91 on 2026-12-02.
    assert manifest.accuracy["mixing_aware"] >= manifest.accuracy["bottleneck_before_finetuning"] + 0.3


def test_serve_local_agrees_with_the_reference_and_sends_far_fewer_bytes(codec_split, small_split):
    from datamix_cli.serving.loopback import LoopbackConfig, run_serve_local

    report = run_serve_local(LoopbackConfig(codec_split, samples=96, groups_per_request=4))
    assert report["passed"] and report["agreement"] >= 0.995, report
    assert report["bytes_up_per_sample"] == 264 and report["bytes_down_per_sample"] == 128
    plain = run_serve_local(LoopbackConfig(small_split, samples=96, groups_per_request=4))
    assert report["wire_bytes_up_per_sample"] < plain["wire_bytes_up_per_sample"] / 30
    assert report["accuracy"] >= 0.8


@pytest.fixture(scope="module")
def served(codec_split):
    cloud = load_cloud(codec_split, max_batch=8)
    return cloud, TestClient(build_app(cloud), raise_server_exceptions=False)


def int8_request(cloud, q, params, **changes):
    tensors = [
        {"name": cloud.input_name, "shape": list(q.shape), "datatype": "UINT8", "data": q.ravel().tolist()},
        {"name": cloud.input_name + "_quant", "shape": list(params.shape), "datatype": "FP32", "data": params.ravel().tolist()},
    ]
    for index, key, value in changes.get("edits", []):
        tensors[index][key] = value
    return {"inputs": tensors}


def test_server_decodes_int8_and_answers_fp16(served):
    cloud, client = served
    meta = client.get(f"/v2/models/{cloud.name}").json()
    assert [t["datatype"] for t in meta["inputs"]] == ["UINT8", "FP32"] and meta["outputs"][0]["datatype"] == "FP16"
    assert meta["parameters"]["datamix_protocol"] == 2
    x = np.random.default_rng(1).standard_normal((4, *cloud.input_shape)).astype(np.float32)
    q, params = encode(CODECS["int8"], x)
    response = client.post(f"/v2/models/{cloud.name}/infer", json=int8_request(cloud, q, params))
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert output["datatype"] == "FP16"
    expected = cloud.run(decode(CODECS["int8"], q, params)).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(output["data"], np.float32).reshape(output["shape"]), expected)


@pytest.mark.parametrize(
    "edits, message",
    [
        ([(1, "shape", [3, 2]), (1, "data", [1.0, 3.0] * 3)], "must have shape [4, 2]"),
        ([(1, "data", [1.0, 3.0] * 3 + [0.0, 3.0])], "scales must be finite and > 0"),
        ([(1, "data", [1.0, 3.5] * 4)], "zero points must be integers"),
        ([(1, "data", [1.0, 300] * 4)], "zero points must be integers"),
        ([(0, "data", [256] * 4 * 256)], "outside UINT8's range"),
        ([(0, "data", [0.5] * 4 * 256)], "must be integers"),
        ([(0, "datatype", "FP32")], "datatype must be UINT8"),
        ([(1, "name", "scale")], "unknown or repeated input"),
    ],
)
def test_bad_int8_fields_get_400(served, edits, message):
    cloud, client = served
    q, params = encode(CODECS["int8"], np.ones((4, *cloud.input_shape), dtype=np.float32))
    response = client.post(f"/v2/models/{cloud.name}/infer", json=int8_request(cloud, q, params, edits=edits))
    assert response.status_code == 400 and message in response.json()["error"], response.text
    missing = {"inputs": int8_request(cloud, q, params)["inputs"][:1]}
    assert client.post(f"/v2/models/{cloud.name}/infer", json=missing).status_code == 400


class FakeServer:
    """Model metadata as a protocol-1 server (or a Triton repository exported before codecs) answers it."""

    def __init__(self, manifest):
        up, down = manifest.split["uplink"], manifest.split["downlink"]
        self.meta = {"inputs": [{"name": up["name"], "datatype": "FP32", "shape": up["shape"]}],
                     "outputs": [{"name": down["name"], "datatype": "FP32", "shape": down["shape"]}]}

    def metadata(self, model):
        return self.meta


def test_client_names_the_protocol_a_server_without_the_codec_lacks(codec_split):
    from datamix_cli.serving.client import EdgeClient

    client = EdgeClient(codec_split)
    with pytest.raises(ServerError, match=r"takes FP32 and returns FP32; this split needs datamix protocol 2 with the int8 uplink \(UINT8 \+ FP32\)"):
        client._check_server(FakeServer(client.manifest), client.manifest.model["name"])


def as_version_1(folder, out):
    """A copy of a plain fp32 split whose manifest is written as datamix 0.1 wrote it (schema 1, protocol 1)."""
    shutil.copytree(folder, out)
    data = json.loads((out / "manifest.json").read_text())
    data["schema_version"], data["protocol"]["version"] = 1, 1
    del data["protocol"]["codecs"], data["split"]["bottleneck"], data["flops"]["bottleneck"]
    for spec in (data["split"]["uplink"], data["split"]["downlink"]):
        for key in ("codec", "values_per_sample", "params"):
            spec.pop(key, None)
    (out / "manifest.json").write_text(json.dumps(data))
    return out


def test_version_1_manifests_still_load_and_serve(small_split, tmp_path):
    from datamix_cli.protocol.mixing import MixingConfig
    from datamix_cli.serving.loopback import LoopbackConfig, run_serve_local

    old = as_version_1(small_split, tmp_path / "old")
    manifest = load_manifest(old)
    assert manifest.schema_version == 1 and MixingConfig.from_protocol(manifest.protocol).uplink == "fp32"
    report = run_serve_local(LoopbackConfig(old, samples=24))
    assert report["passed"] and report["bytes_up_per_sample"] == 16 * 16 * 16 * 4


def test_unknown_schema_versions_are_refused(small_split, tmp_path):
    from datamix_cli.errors import ManifestError

    shutil.copytree(small_split, tmp_path / "future")
    data = json.loads((tmp_path / "future/manifest.json").read_text())
    data["schema_version"] = 3
    (tmp_path / "future/manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="reads versions 1 and 2"):
        load_manifest(tmp_path / "future")
