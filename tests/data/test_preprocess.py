"""Preprocessing: the geometry is what the spec says, and training, the edge artifacts and infer agree.

Oracles: an image whose centre alone survives a centre crop (geometry), the
user's model run on inputs normalised in NumPy (the head artifact), and the
folder loader against ``infer``'s reader on the same files.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from datamix_cli.errors import ConfigError
from datamix_cli.main import app
from datamix_cli.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

from tests.helpers import EXAMPLES_FILE
from tests.helpers.images import hue_folder

MEAN, STD = np.array(IMAGENET_MEAN, dtype=np.float32), np.array(IMAGENET_STD, dtype=np.float32)


def stripes(height=16, width=48):
    """Red left quarter, green middle half, blue right quarter."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 4, 0] = 255
    pixels[:, width // 4 : 3 * width // 4, 1] = 255
    pixels[:, 3 * width // 4 :, 2] = 255
    return pixels


def test_resize_and_centre_crop_keep_the_aspect_and_the_centre():
    raw = stripes().transpose(2, 0, 1)[None] / 255.0  # (1, 3, 16, 48)
    cropped = Preprocessing.build((3, 8, 8), "imagenet", resize=8).fit(raw, (3, 8, 8), "stripes")
    # The shorter side goes to 8 (8x24, aspect kept: green is columns 6..18), the centre 8x8 (8..16) is all green.
    assert cropped.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(cropped[0, 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(cropped[0, [0, 2]], 0.0, atol=1e-6)
    stretched = Preprocessing.build((3, 8, 8), "none").fit(raw, (3, 8, 8), "stripes")
    assert stretched[0, 0, :, 0].min() > 0.9 and stretched[0, 2, :, -1].min() > 0.9  # stretching keeps every stripe


def test_imagenet_preset_resizes_by_256_over_224():
    p = Preprocessing.build((3, 224, 224), "imagenet")
    assert p.resize == 256 and p.mean == IMAGENET_MEAN and p.std == IMAGENET_STD and p.in_head
    assert Preprocessing.build((3, 32, 32), "imagenet").resize == 37
    assert not Preprocessing.build((1, 8, 8), "none").in_head


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"preset": "caffe"}, "unknown preprocessing preset 'caffe'"),
        ({"mean": "0.5,0.5"}, "--mean has 2 values but the model input has 3 channels"),
        ({"mean": "0.5,0.5,0.5", "std": "1,0,1"}, "--std values must be > 0"),
        ({"mean": "a,b,c"}, "--mean must be comma-separated numbers"),
        ({"channel_order": "gbr"}, "unknown channel order"),
        ({"resize": 20}, "--resize 20 is smaller than the 32x32 centre crop"),
    ],
)
def test_bad_specs_are_refused_in_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Preprocessing.build((3, 32, 32), **kwargs)


def test_bgr_needs_three_channels():
    with pytest.raises(ConfigError, match="bgr needs a 3-channel"):
        Preprocessing.build((1, 8, 8), channel_order="bgr")


@pytest.fixture(scope="module")
def normalised_split(tmp_path_factory):
    """A small CNN trained on ImageNet-normalised hue images, split with --preprocess imagenet and BGR."""
    from datamix_cli.data.datasets import load_dataset
    from examples.models import small_cnn
    from examples.train import train

    root = tmp_path_factory.mktemp("pre")
    folder = hue_folder(root / "hue", n=40, size=20)
    spec = Preprocessing.build((3, 16, 16), "imagenet", channel_order="bgr")
    train_set, _ = load_dataset(str(folder), (3, 16, 16), spec).split(0.2, 0)
    model = small_cnn(num_classes=2, in_channels=3)
    x = ((np.asarray(train_set.x) - MEAN[:, None, None]) / STD[:, None, None])[:, ::-1]  # normalised in NumPy, then BGR
    torch.manual_seed(0)
    train(model, np.ascontiguousarray(x, dtype=np.float32), train_set.y, epochs=4, lr=3e-3, batch=16, seed=0)
    torch.save(model.state_dict(), root / "w.pt")
    out = root / "split"
    result = CliRunner().invoke(app, [
        "split", f"{EXAMPLES_FILE}:small_cnn", "--weights", str(root / "w.pt"), "--model-kwargs", '{"num_classes": 2, "in_channels": 3}',
        "--data", str(folder), "--input-shape", "1,3,16,16", "--preprocess", "imagenet", "--channel-order", "bgr",
        "--formats", "onnx", "--cloud-formats", "torchscript", "--epochs", "0", "--k", "2", "--batch-size", "16", "--seed", "0",
        "--out", str(out), "--json",
    ])
    assert result.exit_code == 0, result.output
    return folder, out, model, json.loads(result.stdout)


def test_manifest_records_the_spec(normalised_split):
    _, out, _, manifest = normalised_split
    pre = manifest["model"]["preprocessing"]
    assert pre["preset"] == "imagenet" and pre["resize"] == 18 and pre["crop"] == [16, 16] and pre["channel_order"] == "bgr"
    np.testing.assert_allclose(pre["mean"], IMAGENET_MEAN)
    assert pre["normalisation_in_head"] and manifest["accuracy"]["original"] >= 0.95  # chance is 0.5


def test_head_artifact_takes_pixels_and_matches_the_model_on_numpy_normalised_inputs(normalised_split):
    from datamix_cli.serving.client import EdgeClient
    from datamix_cli.data.inputs import read_inputs
    from exporters import get_exporter

    folder, out, model, manifest = normalised_split
    files = sorted((folder / "red").iterdir())[:2]
    spec = Preprocessing.from_manifest(manifest["model"])
    pixels, _ = read_inputs(files, (3, 16, 16), spec)  # what infer feeds the head: [0, 1] RGB, resized and cropped
    assert pixels.min() >= 0 and pixels.max() <= 1
    client = EdgeClient(out, "onnx")
    eye = np.eye(2, dtype=np.float32)
    cloud_file = next(a["path"] for a in manifest["artifacts"] if a["role"] == "cloud" and a["format"] == "torchscript")
    cloud = get_exporter("torchscript").load(out / cloud_file)
    logits = client.tail(cloud(client.head(pixels, eye)), eye)
    normalised = ((pixels - MEAN[:, None, None]) / STD[:, None, None])[:, ::-1]
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(np.ascontiguousarray(normalised, dtype=np.float32))).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    assert (logits.argmax(1) == 1).all()  # red


def test_training_data_and_infer_read_the_same_pixels(normalised_split):
    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.data.inputs import read_inputs

    folder, _, _, manifest = normalised_split
    spec = Preprocessing.from_manifest(manifest["model"])
    data = load_dataset(str(folder), (3, 16, 16), spec)
    files = sorted((folder / "green").iterdir())[:3] + sorted((folder / "red").iterdir())[:1]
    pixels, _ = read_inputs(files, (3, 16, 16), spec)
    np.testing.assert_array_equal(np.asarray(data.x[[0, 1, 2, 40]]), pixels)
    stretched, _ = read_inputs(files, (3, 16, 16))
    assert np.abs(stretched - pixels).max() > 0  # the spec changes what infer reads (20x20 → 18 → crop 16)


def test_serve_local_passes_with_preprocessing(normalised_split):
    _, out, _, _ = normalised_split
    result = CliRunner().invoke(app, ["serve-local", str(out), "--runtime", "onnx", "--samples", "16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["accuracy"] >= 0.9 and report["agreement_with_original"] == 1.0


def test_split_refuses_a_bad_spec_with_exit_2(tmp_path, small_cnn_weights):
    for args, message in ((["--preprocess", "caffe"], "'caffe' is not one of 'none', 'imagenet'"), (["--mean", "0.1,0.2"], "--mean has 2 values")):
        result = CliRunner().invoke(app, [
            "split", f"{EXAMPLES_FILE}:small_cnn", "--weights", str(small_cnn_weights), "--data", "digits",
            "--input-shape", "1,1,32,32", "--out", str(tmp_path / "s"), *args,
        ])
        assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1, result.output
        assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.partial-*"))
