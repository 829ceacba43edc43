"""torchvision models, first-class: FLOPs against torchvision's published figures, readable ViT cut names, and a
trained torchvision model split end to end and served.

torchvision's PyPI build does not import next to the CPU torch 2.13.0 of .venv, so these tests run in their own
venv: ``make test-torchvision`` builds .tv-venv (torch 2.14.1, torchvision 0.29.1) and runs ``pytest -m torchvision``.
In .venv (``make test``) the whole module skips. Nothing is downloaded: models are built with random weights, and
the published figures come from the weight enums' metadata, which ships inside torchvision.
"""

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

torchvision = pytest.importorskip(
    "torchvision", reason="torchvision is not installed in this venv; run `make test-torchvision` (builds .tv-venv)"
)

from datamix_cli.data.datasets import load_dataset  # noqa: E402
from datamix_cli.main import app  # noqa: E402
from datamix_cli.artifacts.manifest import load_manifest  # noqa: E402
from exporters import get_exporter  # noqa: E402
from partitioners.flops import FLOPS_PER_MAC  # noqa: E402
from partitioners.graph import trace_model  # noqa: E402
from partitioners.partition import partition  # noqa: E402
from partitioners.profile import profile_model  # noqa: E402

from tests.helpers import DATA_SEED, HOLDOUT, seed_everything  # noqa: E402

pytestmark = pytest.mark.torchvision

# torchvision's "GFLOPS" (weights.meta["_ops"]) count one multiply-accumulate as one operation, so they are GMACs;
# datamix's FLOPs are 2 x MACs (torch.utils.flop_counter's convention), so the comparison is made in MACs.
ZOO = ["vit_b_16", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "swin_t", "regnet_y_400mf"]
FLOPS_TOLERANCE = 0.03


def invoke(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


@pytest.mark.parametrize("name", ZOO)
def test_profile_flops_match_torchvision_published_figures(name):
    published_macs = torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"] * 1e9
    report = invoke("profile", f"torchvision.models:{name}", "--input-shape", "1,3,224,224")
    assert report["total_flops"] == FLOPS_PER_MAC * report["total_macs"]
    ratio = report["total_macs"] / published_macs
    assert abs(ratio - 1) <= FLOPS_TOLERANCE, f"{name}: {report['total_macs']:,} MACs against {published_macs:,.0f} published ({ratio:.4f})"
    # Attention is counted, never listed as missing: the fused kernels are in partitioners/flops.py.
    assert not {"_native_multi_head_attention", "_scaled_dot_product_flash_attention_for_cpu"} & set(report["uncounted_ops"])


def tiny_vit():
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    ).eval()


def test_vit_cut_names_are_module_paths_and_every_cut_splits_exactly():
    model = tiny_vit()
    traced = trace_model(model)
    p = profile_model(traced, (1, 3, 32, 32))
    names = [c.name for c in p.cut_points]
    assert names == [
        "input", "reshape", "permute", "cat", "encoder.add", "encoder.dropout",
        "encoder.layers.encoder_layer_0.add_1", "encoder.layers.encoder_layer_0",
        "encoder.layers.encoder_layer_1.add_3", "encoder.layers", "encoder",
        "encoder[:,0]",  # the class token, fx's getitem_N
    ]
    assert p.classifier_name == "heads.head"
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        for head in p.cut_points[:-1]:
            parts = partition(traced, head, p.cut_points[-1])
            torch.testing.assert_close(parts.tail(parts.cloud(parts.head(x))), expected, rtol=0, atol=0, msg=head.name)


def test_vit_b_16_names_its_class_token_cut():
    p = profile_model(trace_model(torchvision.models.vit_b_16().eval()), (1, 3, 224, 224))
    assert p.cut_points[-1].name == "encoder[:,0]" and p.cut_points[-1].activation_shape == (768,)
    assert "encoder.layers.encoder_layer_11.add_23" in [c.name for c in p.cut_points]
    assert not any(c.name.startswith("getitem") for c in p.cut_points)


# A tiny RGB task: a brighter 12x12 patch in the red channel (class 0) or the blue one (class 1) over noise.
N_IMAGES, IMAGE = 240, (3, 32, 32)
MODEL = "torchvision.models:mobilenet_v3_small"
MODEL_KWARGS = '{"num_classes": 2}'
MIN_ACCURACY = 0.85


@pytest.fixture(scope="module")
def rgb_data(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    y = np.arange(N_IMAGES) % 2
    x = rng.uniform(0, 0.6, size=(N_IMAGES, *IMAGE)).astype(np.float32)
    for i, label in enumerate(y):
        r, c = rng.integers(0, IMAGE[1] - 12, size=2)
        x[i, 0 if label == 0 else 2, r : r + 12, c : c + 12] += 0.4
    path = tmp_path_factory.mktemp("data") / "rgb.npz"
    np.savez(path, x=x, y=y.astype(np.int64), classes=np.array(["red", "blue"]))
    return str(path)


def recalibrate_batchnorm(model: nn.Module, x: np.ndarray) -> None:
    """Running statistics as the exact mean/var of ``x`` (a few training steps leave them far from the weights';
    mobilenet_v3's BatchNorm momentum is 0.01)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(np.asarray(x)))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


@pytest.fixture(scope="module")
def trained_weights(rgb_data, tmp_path_factory):
    """mobilenet_v3_small (2 classes) trained a few steps on the 80 % of the data the split fine-tunes on."""
    from examples.train import accuracy, train

    seed_everything(0)
    train_set, held = load_dataset(rgb_data, IMAGE).split(HOLDOUT, DATA_SEED)
    model = torchvision.models.mobilenet_v3_small(num_classes=2)
    train(model, train_set.x, train_set.y, epochs=3, lr=3e-3, batch=32, seed=0)
    recalibrate_batchnorm(model, train_set.x)
    acc = accuracy(model, held.x, held.y)
    assert acc >= MIN_ACCURACY, f"the torchvision model did not learn: held-out accuracy {acc:.3f}"
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v3_small_rgb.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tv_split(rgb_data, trained_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("split") / "mobilenet-split"
    manifest = invoke(
        "split", MODEL, "--model-kwargs", MODEL_KWARGS, "--weights", str(trained_weights), "--data", rgb_data,
        "--input-shape", "1,3,32,32", "--formats", "onnx", "--epochs", "2", "--seed", "0", "--out", str(out),
    )
    return out, manifest


def test_split_of_a_trained_torchvision_model_verifies_against_pytorch(tv_split):
    out, manifest = tv_split
    assert manifest["accuracy"]["original"] >= MIN_ACCURACY
    assert manifest["accuracy"]["split_without_mixing"] == manifest["accuracy"]["original"]
    assert manifest["flops"]["edge_fraction"] <= 0.2
    assert {a["path"] for a in manifest["artifacts"]} >= {"edge/head.onnx", "edge/tail.onnx", "cloud/cloud.pt"}
    assert all(a["max_abs_error"] <= a["tolerance"] for a in manifest["artifacts"]), manifest["artifacts"]
    # Replay the test vectors through every artifact read back from disk.
    loaded = load_manifest(out)
    tv = np.load(out / "test_vectors.npz")
    for a in loaded.artifacts:
        run = get_exporter(a["format"]).load(out / a["path"])
        inputs = {"head": (tv["x"], tv["C"]), "cloud": (tv["mixtures"],), "tail": (tv["cloud_out"], tv["C_inv"])}[a["role"]]
        expected = {"head": tv["mixtures"], "cloud": tv["cloud_out"], "tail": tv["scores"]}[a["role"]]
        np.testing.assert_allclose(run(*inputs), expected, atol=a["tolerance"], rtol=0, err_msg=a["path"])


def test_serve_local_passes_on_the_torchvision_split(tv_split):
    out, _ = tv_split
    report = invoke("serve-local", str(out), "--runtime", "onnx", "--samples", "48")
    assert report["passed"] and report["agreement"] >= 0.995, report
    assert report["max_abs_logit_error"] < 1e-3
