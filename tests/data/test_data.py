"""Built-in datasets, .npz arrays and image folders, fitted to a model's input."""

import numpy as np
import pytest

from datamix_cli.data.datasets import load_dataset
from datamix_cli.errors import DatasetError, InputFileError


def test_digits_upsampled_to_the_model_input():
    d = load_dataset("digits", (1, 32, 32))
    assert d.x.shape == (1797, 1, 32, 32) and d.x.dtype == np.float32
    assert 0.0 <= d.x.min() and d.x.max() <= 1.0
    assert set(d.y) == set(range(10)) and len(d.classes) == 10


def test_digits_as_signals_for_1d_models():
    assert load_dataset("digits", (1, 1024)).x.shape == (1797, 1, 1024)


def test_faces_has_two_balanced_classes():
    d = load_dataset("faces", (3, 32, 32))
    assert d.x.shape == (200, 3, 32, 32)
    assert d.classes == ("non-face", "face") and d.y.sum() == 100


def test_npz_round_trip(tmp_path):
    x = np.random.default_rng(0).random((6, 1, 8, 8))
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]), classes=np.array(["a", "b", "c"]))
    d = load_dataset(str(tmp_path / "d.npz"), (1, 8, 8))
    np.testing.assert_allclose(d.x, x.astype(np.float32))
    assert d.classes == ("a", "b", "c")


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((2, 4))}, "must hold arrays 'x' and 'y'"),
        ({"x": np.zeros((2, 4)), "y": np.array([0, 1, 2])}, "need numeric x"),
        ({"x": np.zeros((2, 4)), "y": np.array([0, 5]), "classes": np.array(["a", "b"])}, r"labels must lie in 0\.\.1"),
    ],
)
def test_bad_npz(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DatasetError, match=match):
        load_dataset(str(tmp_path / "d.npz"))


def test_samples_that_cannot_fit_the_model(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 3, 8, 8)), y=np.array([0, 1]))
    with pytest.raises(DatasetError, match="have 3 channels but the model takes 1"):
        load_dataset(str(tmp_path / "d.npz"), (1, 16, 16))
    np.savez(tmp_path / "e.npz", x=np.zeros((2, 5)), y=np.array([0, 1]))
    with pytest.raises(DatasetError, match="cannot be fitted"):
        load_dataset(str(tmp_path / "e.npz"), (1, 16, 16))


def test_image_folder(tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(2):
            Image.fromarray(np.full((10, 12), 40 * i, dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    d = load_dataset(str(tmp_path), (1, 16, 16))
    assert d.x.shape == (4, 1, 16, 16) and list(d.y) == [0, 0, 1, 1] and d.classes == ("cat", "dog")


def test_unknown_dataset():
    with pytest.raises(InputFileError, match="neither built in"):
        load_dataset("imagenet")


def test_split_is_disjoint_and_reproducible():
    from datamix_cli.data.datasets import Dataset

    d = Dataset("ids", np.arange(1797, dtype=np.float32)[:, None], np.arange(1797) % 10, tuple("0123456789"))
    train, held = d.split(0.2, seed=1)
    train_ids, held_ids = set(train.x[:, 0]), set(held.x[:, 0])
    assert len(held_ids) == 359 and train_ids.isdisjoint(held_ids) and train_ids | held_ids == set(range(1797))
    assert all(d.y[int(i)] == label for i, label in zip(held.x[:, 0], held.y))  # labels travel with their samples
    np.testing.assert_array_equal(held.x, d.split(0.2, seed=1)[1].x)
    assert not np.array_equal(held.x, d.split(0.2, seed=2)[1].x)


def test_cloud_only_baselines_are_what_pillow_writes_for_the_same_pixels():
    import io

    from PIL import Image

    from datamix_cli.data.images import encoded_sizes

    rng = np.random.default_rng(0)
    noise, flat = rng.random((5, 3, 16, 16)), np.full((5, 3, 16, 16), 0.5)
    sizes = encoded_sizes(noise)
    assert sizes["raw_uint8"] == 3 * 16 * 16 and sizes["samples"] == 5
    assert sizes["png"] > 0.9 * sizes["raw_uint8"] > encoded_sizes(flat)["png"] * 5  # noise does not compress, flat does
    written = []
    for sample in noise:  # the bytes Pillow writes for each sample's uint8 pixels, computed here directly
        buffer = io.BytesIO()
        Image.fromarray(np.round(sample * 255).astype(np.uint8).transpose(1, 2, 0), "RGB").save(buffer, format="JPEG", quality=90)
        written.append(buffer.tell())
    assert sizes["jpeg_q90"] == float(np.median(written))
    assert encoded_sizes(rng.random((4, 1, 64))) is None  # signals are not images
