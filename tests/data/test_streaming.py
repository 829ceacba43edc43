"""Data at scale: folders and .npz stream, training on streamed data equals training on the array,
--eval-data, unreadable images, and fine-tuning under torchrun (gloo, 2 processes)."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from datamix_cli.data.datasets import Samples, load_dataset
from datamix_cli.errors import ConfigError, DatasetError
from datamix_cli.main import app

from tests.helpers import EXAMPLES_FILE, ROOT


def digits_folder(root, n=None):
    """The digits data set as a folder of PNGs (one sub-folder per class)."""
    data = load_dataset("digits", (1, 8, 8))
    count = n or len(data.y)
    for i in range(count):
        folder = root / str(data.y[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.asarray(data.x[i, 0]) * 255).round().astype(np.uint8), "L").save(folder / f"{i:05d}.png")
    return root


def test_a_folder_is_read_on_demand(tmp_path, monkeypatch):
    import datamix_cli.data.images as data_module  # where decoding happens (the read counted here)

    digits_folder(tmp_path / "d", n=60)
    calls = []
    real = data_module.read_image
    monkeypatch.setattr(data_module, "read_image", lambda path, pil: calls.append(path) or real(path, pil))
    d = load_dataset(str(tmp_path / "d"), (1, 16, 16))
    assert isinstance(d.x, Samples) and d.x.shape == (60, 1, 16, 16) and not calls  # nothing decoded yet
    train, held = d.split(0.2, 0)
    assert isinstance(held.x, Samples) and not calls
    assert held.x[:3].shape == (3, 1, 16, 16) and len(calls) == 3  # just what was asked for
    np.testing.assert_array_equal(held.x[[1, 0]], held.x[:2][::-1])


def test_uncompressed_npz_is_memory_mapped_and_compressed_is_read(tmp_path):
    x = np.random.default_rng(0).random((50, 1, 8, 8)).astype(np.float32)
    y = np.arange(50) % 10
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "packed.npz", x=x, y=y)
    plain = load_dataset(str(tmp_path / "plain.npz"), (1, 8, 8))
    assert isinstance(plain.x, np.memmap)
    np.testing.assert_array_equal(plain.x, x)
    resized = load_dataset(str(tmp_path / "plain.npz"), (1, 16, 16))
    assert isinstance(resized.x, Samples) and isinstance(resized.x.base if hasattr(resized.x, "base") else resized.x.raw, np.memmap)
    packed = load_dataset(str(tmp_path / "packed.npz"), (1, 16, 16))
    np.testing.assert_allclose(np.asarray(resized.x), packed.x, atol=1e-6)  # same samples either way


def test_training_on_streamed_samples_equals_training_on_the_array(tmp_path, small_cnn_weights):
    """Same seed, same batches, same C: the DataLoader with a worker gives the weights the array gives."""
    from datamix_cli.model.loading import ModelSource, load_model
    from datamix_cli.protocol.mixing import MixingConfig
    from datamix_cli.training.finetune import FinetuneConfig, finetune
    from partitioners.graph import trace_model
    from partitioners.partition import partition
    from partitioners.profile import profile_model
    from partitioners.select import choose_split

    digits_folder(tmp_path / "d", n=256)
    streamed = load_dataset(str(tmp_path / "d"), (1, 32, 32))
    results = []
    for x, workers in ((streamed.x, 1), (np.asarray(streamed.x), 0)):
        traced = trace_model(load_model(ModelSource(f"{EXAMPLES_FILE}:small_cnn", weights=small_cnn_weights)))
        decision = choose_split(profile_model(traced, (1, 1, 32, 32)), 0.2, 4)
        parts = partition(traced, decision.head_cut, decision.tail_cut)
        history = finetune(parts, x, streamed.y, MixingConfig(k=4), FinetuneConfig(epochs=2, batch_size=32, seed=3, workers=workers)).history
        results.append((history, [p.detach().clone() for p in parts.tail.parameters()]))
    (h1, w1), (h2, w2) = results
    assert h1 == h2 and h1[-1]["train_accuracy"] > 0.5
    for a, b in zip(w1, w2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_eval_data_is_used_instead_of_a_holdout(tmp_path, small_cnn_weights):
    data = load_dataset("digits", (1, 8, 8))
    np.savez(tmp_path / "train.npz", x=np.asarray(data.x[:1200]), y=data.y[:1200])
    np.savez(tmp_path / "eval.npz", x=np.asarray(data.x[1200:1500]), y=data.y[1200:1500])
    out = tmp_path / "split"
    result = CliRunner().invoke(app, [
        "split", f"{EXAMPLES_FILE}:small_cnn", "--weights", str(small_cnn_weights), "--data", str(tmp_path / "train.npz"),
        "--eval-data", str(tmp_path / "eval.npz"), "--input-shape", "1,1,32,32", "--out", str(out), "--epochs", "1",
        "--formats", "onnx", "--cloud-formats", "torchscript", "--seed", "0", "--json",
    ])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["accuracy"]["n"] == 300 and manifest["accuracy"]["dataset"] == str(tmp_path / "eval.npz")
    assert manifest["training"]["holdout"] is None and manifest["training"]["eval_data"] == str(tmp_path / "eval.npz")
    assert manifest["accuracy"]["original"] >= 0.9
    local = CliRunner().invoke(app, ["serve-local", str(out), "--runtime", "onnx", "--samples", "40", "--json"])
    assert local.exit_code == 0 and json.loads(local.stdout)["passed"], local.output


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_image_is_named_or_skipped(tmp_path, small_cnn_weights):
    folder = digits_folder(tmp_path / "d", n=400)
    bad = sorted((folder / "3").iterdir())[0]
    truncate(bad)
    (folder / "5" / "not-an-image.png").write_text("hello")
    args = ["split", f"{EXAMPLES_FILE}:small_cnn", "--weights", str(small_cnn_weights), "--data", str(folder),
            "--input-shape", "1,1,32,32", "--epochs", "1", "--formats", "onnx", "--cloud-formats", "torchscript", "--seed", "0"]
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "s1")])
    assert refused.exit_code == 2 and "not-an-image.png" in refused.output and "--skip-bad-images" in refused.output, refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not (tmp_path / "s1").exists()
    (folder / "5" / "not-an-image.png").unlink()
    truncated = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "s2")])
    assert truncated.exit_code == 2 and bad.name in truncated.output, truncated.output  # found when decoded
    assert not (tmp_path / "s2").exists() and not list(tmp_path.glob(".s2.partial-*"))
    skipped = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "s3"), "--skip-bad-images", "--json"])
    assert skipped.exit_code == 0, skipped.output
    assert json.loads(skipped.stdout)["training"]["skipped_images"] == 1 and "skipped 1 unreadable image" in skipped.stderr


def test_world_size_that_does_not_divide_the_batch_is_refused():
    from datamix_cli.training.distributed import World, check_batches

    with pytest.raises(ConfigError, match="cannot be shared by 3 processes in whole groups of k=4; use a multiple of 12"):
        check_batches(World(0, 3, 0), 64, 4, 1000)
    with pytest.raises(ConfigError, match="too few for 2 processes"):
        check_batches(World(0, 2, 0), 64, 4, 40)
    assert check_batches(World(1, 2, 1), 64, 4, 1000) == 32


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="torchrun not installed")
def test_torchrun_gloo_two_processes_train_and_rank_zero_writes_one_split(tmp_path, small_cnn_weights):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone", "--nproc-per-node", "2",
        os.path.join(os.path.dirname(sys.executable), "datamix"), "split", f"{EXAMPLES_FILE}:small_cnn",
        "--weights", str(small_cnn_weights), "--data", "digits", "--input-shape", "1,1,32,32", "--epochs", "2",
        "--device", "cpu", "--formats", "onnx", "--cloud-formats", "torchscript", "--out", str(out), "--json",
    ]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads(run.stdout)  # rank 0 alone prints the manifest
    assert manifest["training"]["processes"] == 2 and manifest["accuracy"]["mixing_aware"] >= 0.85, manifest["accuracy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # one folder, no leftovers
    assert json.loads((out / "manifest.json").read_text())["training"]["processes"] == 2
