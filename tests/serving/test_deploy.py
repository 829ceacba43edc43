"""`datamix export triton` and `datamix export kserve`: the repository in a real Triton server, the
InferenceService against KServe's published CRD schema."""

import gzip
import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from datamix_cli.serving.deploy.triton import preferred_batch_sizes
from datamix_cli.main import app

from tests.helpers import DATA_SEED, HOLDOUT, RESOURCES
from tests.helpers.triton_server import TritonServer, unavailable_reason

SCHEMA = RESOURCES / "kserve_inferenceservice_v1beta1.schema.json.gz"


def test_preferred_batch_sizes_are_whole_groups_within_the_max():
    assert preferred_batch_sizes(4, 256) == (4, 16, 64, 256)
    assert preferred_batch_sizes(3, 100) == (3, 12, 48)
    assert all(size % 8 == 0 and size <= 64 for size in preferred_batch_sizes(8, 64))


@pytest.fixture(scope="module")
def repositories(small_split, tmp_path_factory):
    """One repository per backend, written through the CLI."""
    out = {}
    for backend in ("onnx", "torchscript"):
        repo = tmp_path_factory.mktemp("repos") / backend
        result = CliRunner().invoke(app, ["export", "triton", str(small_split), "--out", str(repo), "--backend", backend, "--max-batch", "64", "--json"])
        assert result.exit_code == 0, result.output
        out[backend] = (repo, json.loads(result.output))
    return out


def test_repository_layout_and_config_follow_the_manifest_and_backend_rules(repositories, small_split):
    from datamix_cli.artifacts.manifest import load_manifest

    manifest = load_manifest(small_split)
    name, k = manifest.model["name"], manifest.protocol["k"]
    for backend, (repo, result) in repositories.items():
        files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
        model_file = {"onnx": "model.onnx", "torchscript": "model.pt"}[backend]
        assert files == [f"{name}/1/{model_file}", f"{name}/config.pbtxt", f"{name}/datamix.json"]
        config = (repo / name / "config.pbtxt").read_text()
        platform = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}[backend]
        names = {"onnx": ("mixtures", "cloud_out"), "torchscript": ("INPUT__0", "OUTPUT__0")}[backend]
        assert f'platform: "{platform}"' in config and f'name: "{name}"' in config and "max_batch_size: 64" in config
        dims = ", ".join(map(str, manifest.split["uplink"]["shape"][1:]))
        assert f'{{ name: "{names[0]}" data_type: TYPE_FP32 dims: [ {dims} ] }}' in config
        assert f'name: "{names[1]}"' in config
        assert f"preferred_batch_size: [ {', '.join(str(s) for s in preferred_batch_sizes(k, 64))} ]" in config
        assert result["max_abs_error"] <= 1e-4 and result["model_name"] == name


@pytest.mark.parametrize(("args", "message"), [(["--max-batch", "30"], "multiple of the group size k=4"), (["--instances", "0"], "--instances")])
def test_triton_export_bad_options_fail_before_writing(small_split, tmp_path, args, message):
    result = CliRunner().invoke(app, ["export", "triton", str(small_split), "--out", str(tmp_path / "repo"), *args])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "repo").exists()


def require_triton() -> None:
    """Skip (saying so in the output) where this machine has no Triton server."""
    reason = unavailable_reason()
    if reason:
        print(f"SKIPPED Triton tests: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def triton_servers(repositories):
    require_triton()
    from datamix_cli.serving.loopback import free_port

    servers = {}
    try:
        for backend, (repo, _) in repositories.items():
            server = TritonServer(repo, free_port(), free_port(), free_port())
            servers[backend] = server
            server.wait_ready()
        yield servers
    finally:
        codes = {backend: server.stop() for backend, server in servers.items()}
        assert codes == {backend: 0 for backend in servers}, codes  # SIGTERM is a clean shutdown


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_edge_client_through_real_triton_agrees_with_the_pytorch_reference(small_split, triton_servers, backend):
    from datamix_cli.serving.client import EdgeClient, OipClient
    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.serving.loopback import reference_logits

    held = load_dataset("digits", (1, 32, 32)).split(HOLDOUT, DATA_SEED)[1]
    x, y = held.x[:101], held.y[:101]
    client = EdgeClient(small_split, "onnx")
    oip = OipClient(triton_servers[backend].url)
    try:
        result = client.run(oip, x, groups_per_request=3)
    finally:
        oip.close()
    reference, unmixed = (a[: len(x)] for a in reference_logits(small_split, client.manifest, result.inputs, result.groups))
    predictions = result.logits.argmax(1)
    assert (predictions == reference.argmax(1)).mean() >= 0.995
    assert np.abs(result.logits - reference).max() < 1e-3
    assert (predictions == unmixed.argmax(1)).mean() >= 0.9 and (predictions == y).mean() >= 0.85


def test_infer_cli_against_triton(small_split, triton_servers, tmp_path):
    from datamix_cli.data.datasets import load_dataset

    np.save(tmp_path / "x.npy", load_dataset("digits", (1, 32, 32)).split(HOLDOUT, DATA_SEED)[1].x[:9])
    for backend, server in triton_servers.items():
        result = CliRunner().invoke(app, ["infer", str(small_split), str(tmp_path / "x.npy"), "--server", server.url, "--json"])
        assert result.exit_code == 0, (backend, result.output)
        assert len(json.loads(result.output)) == 9


def test_official_tritonclient_binary_and_json_match_the_pytorch_cloud(small_split, repositories, triton_servers):
    import tritonclient.http as httpclient

    from exporters import get_exporter

    reference = get_exporter("torchscript").load(small_split / "cloud/cloud.pt")
    x = np.random.default_rng(5).standard_normal((8, *json.loads((small_split / "manifest.json").read_text())["split"]["uplink"]["shape"][1:])).astype(np.float32)
    for backend, server in triton_servers.items():
        _, result = repositories[backend]
        triton = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        assert triton.is_model_ready(result["model_name"])
        for binary in (True, False):
            tensor = httpclient.InferInput(result["input_name"], list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            wanted = [httpclient.InferRequestedOutput(result["output_name"], binary_data=binary)]
            out = triton.infer(result["model_name"], [tensor], outputs=wanted).as_numpy(result["output_name"])
            np.testing.assert_allclose(out, reference(x), rtol=0, atol=1e-4, err_msg=f"{backend} binary={binary}")
        triton.close()


def strict(schema):
    """Kubernetes prunes unknown fields silently; reject them instead, as `kubectl apply --validate=strict` does."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def isvc_schema():
    import jsonschema

    return jsonschema.Draft7Validator(strict(json.loads(gzip.decompress(SCHEMA.read_bytes()))))


def test_kserve_manifest_validates_against_the_published_crd_schema(repositories, tmp_path, isvc_schema):
    import jsonschema

    repo, result = repositories["onnx"]
    out = tmp_path / "isvc.yaml"
    args = ["export", "kserve", str(repo), "--storage-uri", "s3://models/datamix/small-cnn", "--out", str(out), "--gpus", "1", "--namespace", "edge"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    isvc = yaml.safe_load(out.read_text())
    isvc_schema.validate(isvc)
    model = isvc["spec"]["predictor"]["model"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert model["protocolVersion"] == "v2" and model["runtime"] == "kserve-tritonserver" and model["modelFormat"] == {"name": "onnx"}
    assert model["storageUri"] == "s3://models/datamix/small-cnn" and model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert isvc["metadata"]["name"] == "small-cnn" and isvc["metadata"]["namespace"] == "edge"
    # The schema has power: a misspelt field or a wrong type is refused.
    for broken in ({"storageURI": "s3://x"}, {"protocolVersion": 2}):
        bad = json.loads(json.dumps(isvc))
        bad["spec"]["predictor"]["model"].update(broken)
        with pytest.raises(jsonschema.ValidationError):
            isvc_schema.validate(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--storage-uri", "models/here"], "must be a URI"), (["--name", "Not_A_Name"], "DNS-1035"), (["--gpus", "-1"], "--gpus")],
)
def test_kserve_bad_options(repositories, tmp_path, args, message):
    repo, _ = repositories["onnx"]
    base = ["export", "kserve", str(repo), "--out", str(tmp_path / "isvc.yaml"), "--storage-uri", "s3://b/p"]
    result = CliRunner().invoke(app, base + args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "isvc.yaml").exists()


def test_kserve_refuses_a_folder_that_is_not_a_repository(small_split, tmp_path):
    result = CliRunner().invoke(app, ["export", "kserve", str(small_split), "--out", str(tmp_path / "x.yaml"), "--storage-uri", "s3://b/p"])
    assert result.exit_code == 2 and "not a repository written by" in result.output


@pytest.fixture(scope="module")
def codec_triton(codec_split, tmp_path_factory):
    """Real Triton serving the int8/fp16 split, one server per backend, from repositories the CLI wrote."""
    require_triton()
    from datamix_cli.serving.loopback import free_port

    servers = {}
    try:
        for backend in ("onnx", "torchscript"):
            repo = tmp_path_factory.mktemp("codec-repos") / backend
            result = CliRunner().invoke(app, ["export", "triton", str(codec_split), "--out", str(repo), "--backend", backend, "--max-batch", "64", "--json"])
            assert result.exit_code == 0, result.output
            config = next(repo.glob("*/config.pbtxt")).read_text()
            assert "TYPE_UINT8" in config and "TYPE_FP16" in config
            servers[backend] = (TritonServer(repo, free_port(), free_port(), free_port()), json.loads(result.output))
            servers[backend][0].wait_ready()
        yield servers
    finally:
        for server, _ in servers.values():
            server.stop()


def test_int8_split_through_real_triton_and_tritonclient(codec_split, codec_triton):
    import tritonclient.http as httpclient

    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.protocol.codecs import CODECS, encode
    from datamix_cli.serving.client import EdgeClient, OipClient
    from datamix_cli.serving.loopback import reference_logits
    from exporters import get_exporter

    held = load_dataset("digits", (1, 32, 32)).split(HOLDOUT, DATA_SEED)[1]
    cloud = get_exporter("torchscript").load(codec_split / "cloud/cloud.pt")
    for backend, (server, result) in codec_triton.items():
        for compress in (False, True):  # Triton inflates deflate request bodies itself
            client, oip = EdgeClient(codec_split, "onnx"), OipClient(server.url, compress=compress)
            try:
                run = client.run(oip, held.x[:41], groups_per_request=3)
            finally:
                oip.close()
            reference = reference_logits(codec_split, client.manifest, run.inputs, run.groups)[0][:41]
            assert (run.logits.argmax(1) == reference.argmax(1)).mean() >= 0.995, (backend, compress)
        # The official client sends the two wire tensors; Triton's model decodes them and answers in fp16.
        x = np.random.default_rng(3).standard_normal((8, 4, 8, 8)).astype(np.float32)
        q, params = encode(CODECS["int8"], x)
        triton = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        names = [t["name"] for t in triton.get_model_metadata(result["model_name"])["inputs"]]
        tensors = [httpclient.InferInput(names[0], list(q.shape), "UINT8"), httpclient.InferInput(names[1], list(params.shape), "FP32")]
        tensors[0].set_data_from_numpy(q)
        tensors[1].set_data_from_numpy(params)
        out = triton.infer(result["model_name"], tensors).as_numpy(result["output_name"])
        triton.close()
        assert out.dtype == np.float16
        expected = cloud((q.astype(np.float32) - params[:, 1, None, None, None]) * params[:, 0, None, None, None])
        np.testing.assert_allclose(out.astype(np.float32), expected, rtol=1e-3, atol=1e-3, err_msg=backend)


class _Vectors:
    def __init__(self, mixtures):
        self.mixtures = mixtures

    def test_vectors(self):
        return {"mixtures": self.mixtures}


@pytest.mark.parametrize("slip, caught", [(3e-7, False), (2e-3, True)])
def test_the_triton_check_forgives_the_fp16_downlink_its_own_rounding_only(slip, caught):
    """Values near 1 (fp16 step 2^-10): a relative fp32 slip of 3e-7 moves some across a rounding boundary, one
    step (9.8e-4, far over the 1e-4 tolerance) apart on the wire; a slip of 2e-3 is two steps and more, a real
    error. A cloud part of squares keeps every value in [0.8, 1.9]."""
    from datamix_cli.protocol.codecs import CODECS, decode, encode
    from datamix_cli.serving.deploy.triton import ATOL, _verify

    up, down = CODECS["fp32"], CODECS["fp16"]
    mixtures = np.random.default_rng(0).uniform(0.9, 1.35, (8, 3, 4, 4)).astype(np.float32)
    cloud = lambda x: np.clip(x, 0.9, 1.35) ** 2  # the check also sends random normal batches: clip them in range
    wire = lambda y: decode(down, *encode(down, y.astype(np.float32)))
    flips = np.mean(wire(cloud(mixtures)) != wire(cloud(mixtures) * (1 + slip)))
    error = _verify(lambda x: wire(cloud(x) * (1 + slip)), lambda x: wire(cloud(x)), _Vectors(mixtures), (3, 4, 4), 4, up, down)
    assert (error > ATOL) == caught, (error, flips)
    assert flips > 0  # the slip does cross boundaries: without the step allowance, both would fail
