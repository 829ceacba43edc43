"""Colour survives from image files to the split: a task that only hue can solve stays solved."""

import numpy as np
import pytest
from PIL import Image

from datamix_cli.data.datasets import load_dataset
from datamix_cli.pipeline.export import ExportConfig
from datamix_cli.errors import DatasetError

from tests.helpers import EXAMPLES_FILE
from tests.helpers.images import RED, hue_folder

def test_rgb_folder_keeps_its_channels_and_its_hue(tmp_path):
    d = load_dataset(str(hue_folder(tmp_path / "hue")), (3, 16, 16))
    assert d.x.shape == (48, 3, 16, 16) and d.classes == ("green", "red")
    red, green = d.x[d.y == 1].mean(axis=(0, 2, 3)), d.x[d.y == 0].mean(axis=(0, 2, 3))
    assert red[0] > 0.7 and green[0] < 0.05 and green[1] > 0.35 and red[1] < 0.05
    gray = lambda x: 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # noqa: E731
    assert abs(gray(d.x[d.y == 1]).mean() - gray(d.x[d.y == 0]).mean()) < 0.02  # in grayscale the classes look alike


def test_alpha_is_dropped_and_grayscale_joins_an_rgb_folder_replicated(tmp_path):
    (tmp_path / "a").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    Image.fromarray(np.full((8, 8, 4), (200, 0, 0, 0), dtype=np.uint8), "RGBA").save(tmp_path / "a" / "transparent-red.png")
    Image.fromarray(np.full((8, 8), 51, dtype=np.uint8), "L").save(tmp_path / "b" / "gray.png")
    d = load_dataset(str(tmp_path), (3, 8, 8))
    np.testing.assert_allclose(d.x[0, :, 0, 0], [200 / 255, 0, 0], atol=1e-6)  # alpha 0 is dropped, not composited
    np.testing.assert_allclose(d.x[1, :, 0, 0], [0.2, 0.2, 0.2], atol=1e-6)


def test_rgb_data_for_a_one_channel_model_is_refused_in_one_line(tmp_path):
    with pytest.raises(DatasetError, match="have 3 channels but the model takes 1"):
        load_dataset(str(hue_folder(tmp_path / "hue")), (1, 16, 16))


def test_hue_only_task_keeps_its_accuracy_through_split_and_infer(tmp_path):
    import torch

    from datamix_cli.serving.client import EdgeClient
    from datamix_cli.data.inputs import read_inputs
    from datamix_cli.model.loading import ModelSource
    from datamix_cli.pipeline.split import SplitConfig, run_split
    from datamix_cli.training.finetune import FinetuneConfig
    from examples.models import small_cnn
    from examples.train import train

    folder = hue_folder(tmp_path / "hue", n=40)
    data = load_dataset(str(folder), (3, 16, 16))
    train_set, _ = data.split(0.2, 0)
    model = small_cnn(num_classes=2, in_channels=3)
    train(model, train_set.x, train_set.y, epochs=4, lr=3e-3, batch=16, seed=0)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    source = ModelSource(f"{EXAMPLES_FILE}:small_cnn", weights=tmp_path / "w.pt", factory_kwargs={"num_classes": 2, "in_channels": 3})
    out = tmp_path / "split"
    result = run_split(SplitConfig(source=source, data=str(folder), out=out, input_shape=(1, 3, 16, 16), export=ExportConfig(formats=("onnx",)), training=FinetuneConfig(epochs=8, batch_size=16, seed=0)))
    acc = result.manifest.accuracy
    assert acc["original"] >= 0.95 and acc["mixing_aware"] >= 0.9, acc  # chance is 0.5
    Image.fromarray(np.full((12, 12, 3), RED, dtype=np.uint8), "RGB").save(tmp_path / "red.png")
    x, _ = read_inputs([tmp_path / "red.png"], (3, 16, 16))
    assert x.shape == (1, 3, 16, 16) and x[0, 0].mean() > 0.7 and x[0, 1].mean() < 0.01
    with torch.no_grad():
        assert model.eval()(torch.from_numpy(x)).argmax(1).item() == 1  # the model the split came from calls it red
    assert EdgeClient(out, "onnx").check_inputs(x).shape == (1, 3, 16, 16)
