"""The protocol against an oracle that shares no code with it: the unsplit model.

The oracle model's cloud part is affine (see ``oracle_models``), so for any
C whose rows sum to one, tail(C⁻¹·cloud(C·head(x))) equals model(x) to float
precision. Every production path is checked against that equality: the
exported head and tail of every registered edge format, the training-time
``mixed_features``, evaluation, ``datamix infer`` against a served split, and
``datamix serve-local``. A transposed C, C in place of C⁻¹ or a mis-grouped
batch anywhere in the chain breaks it.
"""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from datamix_cli.model.loading import ModelSource, load_model
from datamix_cli.main import app
from datamix_cli.artifacts.manifest import load_manifest
from datamix_cli.protocol.mixing import MixingConfig, coefficient_rng, demix, draw_batch, draw_coefficients, mix
from exporters import get_exporter, registered_names

from tests.helpers import DATA_SEED, HOLDOUT, ORACLE_FILE
from tests.helpers.oracle_models import HEAD_CUT, TAIL_CUT

K = 4
ATOL = 1e-4  # fp32 through a head, a cloud and a tail, against float64-free PyTorch


def test_mix_is_c_times_h_over_the_group_and_demix_is_c_inv_times_z():
    rng = np.random.default_rng(0)
    c = rng.random((3, 3))
    h = rng.standard_normal((3, 2, 5))
    want = np.stack([sum(c[i, j] * h[j] for j in range(3)) for i in range(3)])  # m_i = sum_j C_ij h_j
    np.testing.assert_allclose(mix(c, h), want, rtol=1e-12)
    c_inv = np.linalg.inv(c)
    want = np.stack([sum(c_inv[i, j] * h[j] for j in range(3)) for i in range(3)])
    np.testing.assert_allclose(demix(c_inv, h), want, rtol=1e-12)


@pytest.fixture(scope="module")
def oracle(affine_weights):
    return load_model(ModelSource(f"{ORACLE_FILE}:affine_cloud", weights=affine_weights))


@pytest.fixture(scope="module")
def parts(oracle):
    from partitioners.graph import trace_model
    from partitioners.partition import partition
    from partitioners.profile import profile_model

    traced = trace_model(oracle)
    profile = profile_model(traced, (1, 1, 8, 8))
    return partition(traced, profile.cut(HEAD_CUT), profile.cut(TAIL_CUT))


@pytest.fixture(scope="module")
def held_out():
    from datamix_cli.data.datasets import load_dataset

    return load_dataset("digits", (1, 8, 8)).split(HOLDOUT, DATA_SEED)[1]


def model_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_the_oracle_has_power_a_transposed_or_missing_demix_breaks_it(oracle, parts, held_out):
    """Without this, an equality that holds for every matrix would prove nothing."""
    x = torch.from_numpy(held_out.x[:K])
    c = torch.from_numpy(draw_coefficients(coefficient_rng(1), MixingConfig(k=K)))
    with torch.no_grad():
        h = parts.head(x).double()

        def chain(mixing, demixing):
            return parts.tail(mix(demixing, parts.cloud(mix(mixing, h).float()).double()).float()).numpy()

        right, expected = chain(c, torch.linalg.inv(c)), oracle(x).numpy()
        np.testing.assert_allclose(right, expected, atol=ATOL, rtol=0)
        for wrong in (chain(c.T, torch.linalg.inv(c)), chain(c, torch.linalg.inv(c).T), chain(c, c), chain(c, torch.eye(K, dtype=c.dtype))):
            assert np.abs(wrong - expected).max() > 100 * ATOL


def formats_for(manifest, role):
    return {a["format"] for a in manifest.artifacts if a["role"] == role}


def test_the_oracle_split_exports_every_registered_format(affine_split):
    manifest = load_manifest(affine_split)
    for role in ("head", "cloud", "tail"):
        assert formats_for(manifest, role) == set(registered_names(role)), role


EXACT = [name for name in registered_names("head") if getattr(get_exporter(name), "verification", "tolerance") == "tolerance"]  # int8: by agreement


@pytest.mark.parametrize(("name", "cloud_format"), [(edge, cloud) for edge in EXACT for cloud in registered_names("cloud")])
def test_exported_chain_with_fresh_random_c_equals_the_unsplit_model(affine_split, oracle, held_out, name, cloud_format):
    manifest = load_manifest(affine_split)
    exporter = get_exporter(name)
    head = exporter.load(affine_split / manifest.artifact("head", name)["path"])
    tail = exporter.load(affine_split / manifest.artifact("tail", name)["path"])
    cloud = get_exporter(cloud_format).load(affine_split / manifest.artifact("cloud", cloud_format)["path"])
    rng = coefficient_rng()  # fresh: the equality must hold for any C with rows summing to one
    for group in range(5):
        x = held_out.x[group * K : (group + 1) * K]
        c = draw_coefficients(rng, MixingConfig(k=K)).astype(np.float32)
        c_inv = np.linalg.inv(c.astype(np.float64)).astype(np.float32)
        np.testing.assert_allclose(tail(cloud(head(x, c)), c_inv), model_logits(oracle, x), atol=ATOL, rtol=0, err_msg=name)


@pytest.mark.parametrize("shuffle", [False, True])
def test_training_time_mixed_features_commute_with_an_affine_cloud(parts, oracle, held_out, shuffle):
    from datamix_cli.training.mixed import mixed_features, mixed_forward

    config = MixingConfig(k=K, shuffle=shuffle)
    x = torch.from_numpy(held_out.x[: 8 * K])
    c = torch.from_numpy(draw_batch(coefficient_rng(), config, 8)).float()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        np.testing.assert_allclose(mixed_features(parts, x, c, config, generator).numpy(), parts.cloud(parts.head(x)).numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(mixed_forward(parts, x, c, config, generator).numpy(), oracle(x).numpy(), atol=ATOL, rtol=0)


def test_evaluation_under_the_protocol_equals_the_unsplit_model(parts, oracle, held_out):
    from datamix_cli.training.evaluation import predict_mixed

    x = held_out.x[:50]  # 50 = 12 groups of 4 and one group padded with decoys
    decoys = held_out.x[300:310]
    np.testing.assert_allclose(predict_mixed(parts, x, decoys, MixingConfig(k=K), seed=None), model_logits(oracle, x), atol=ATOL, rtol=0)


def test_the_split_accuracy_table_of_the_oracle_is_exact(affine_split):
    acc = load_manifest(affine_split).accuracy
    assert acc["original"] >= 0.9
    # With an affine cloud, mixing changes nothing: naive and mixing-aware equal the original.
    assert acc["split_without_mixing"] == acc["naive_mixing"] == acc["mixing_aware"] == acc["original"]


@pytest.fixture(scope="module")
def served(affine_split):
    from datamix_cli.serving.loopback import ServerProcess, free_port

    with ServerProcess(affine_split, free_port(), ("--token", "t0ken")) as process:
        process.wait_ready(60)
        yield process


@pytest.mark.parametrize("runtime", ["onnx", "tflite", "torchscript"])
def test_infer_cli_scores_equal_the_unsplit_model(affine_split, served, oracle, held_out, tmp_path, runtime):
    x = held_out.x[:7]  # one full group and one padded with decoys
    np.save(tmp_path / "batch.npy", x)
    args = ["infer", str(affine_split), str(tmp_path / "batch.npy"), "--server", served.url, "--token", "t0ken", "--runtime", runtime, "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    expected = model_logits(oracle, x)
    np.testing.assert_allclose(np.array([r["scores"] for r in rows]), expected, atol=ATOL, rtol=0)
    assert [r["class_index"] for r in rows] == list(expected.argmax(1))


def test_infer_cli_without_the_token_is_refused(affine_split, served, held_out, tmp_path):
    np.save(tmp_path / "one.npy", held_out.x[0])
    result = CliRunner().invoke(app, ["infer", str(affine_split), str(tmp_path / "one.npy"), "--server", served.url])
    assert result.exit_code == 2, result.output
    assert "401" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("runtime", ["onnx", "tflite"])
def test_serve_local_equals_the_unsplit_model(affine_split, runtime):
    result = CliRunner().invoke(app, ["serve-local", str(affine_split), "--runtime", runtime, "--samples", "37", "--groups-per-request", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] and report["agreement"] == 1.0 and report["agreement_with_original"] == 1.0
    assert report["max_abs_logit_error_vs_original"] < ATOL and report["max_abs_logit_error"] < ATOL


def test_orthogonal_mixing_commutes_with_a_linear_cloud_and_not_with_a_biased_one(held_out):
    """The condition stated in docs/protocol.md: without unit row sums, only a bias-free cloud commutes."""
    from tests.helpers.oracle_models import affine_cloud
    from partitioners.graph import trace_model
    from partitioners.partition import partition
    from partitioners.profile import profile_model

    from datamix_cli.training.mixed import mixed_forward

    config = MixingConfig(k=8, distribution="orthogonal")
    x = torch.from_numpy(held_out.x[:32])
    c = torch.from_numpy(draw_batch(coefficient_rng(), config, 4)).float()
    errors = {}
    for bias in (False, True):
        model = affine_cloud(cloud_bias=bias).eval()
        traced = trace_model(model)
        profile = profile_model(traced, (1, 1, 8, 8))
        parts = partition(traced, profile.cut(HEAD_CUT), profile.cut(TAIL_CUT))
        with torch.no_grad():
            errors[bias] = float((mixed_forward(parts, x, c, config) - model(x)).abs().max())
    assert errors[False] < ATOL and errors[True] > 100 * ATOL, errors
