"""The example training script produces a loadable state_dict."""

import subprocess
import sys

import torch

from datamix_cli.model.loading import ModelSource, load_model

from tests.helpers import EXAMPLES_FILE, ROOT


def test_train_script_saves_weights_the_cli_can_load(tmp_path):
    out = tmp_path / "audio.pt"
    cmd = [sys.executable, "examples/train.py", "--model", "audio_cnn", "--epochs", "1", "--out", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    assert "held-out accuracy" in result.stdout
    model = load_model(ModelSource(f"{EXAMPLES_FILE}:audio_cnn", weights=out))
    assert model(torch.zeros(2, 1, 1024)).shape == (2, 10)


def test_the_shipped_demo_checkpoint_loads_and_has_learned_digits():
    """`make demo` uses examples/checkpoints/resnet_digits.pt as shipped (it trains only when the file is missing):
    it must still fit examples/models.py:resnet and score as examples/train.py left it on the held-out digits."""
    from datamix_cli.data.datasets import load_dataset
    from examples.train import accuracy
    from tests.helpers import DATA_SEED, HOLDOUT

    model = load_model(ModelSource(f"{EXAMPLES_FILE}:resnet", weights=ROOT / "examples" / "checkpoints" / "resnet_digits.pt"))
    _, held = load_dataset("digits", (1, 32, 32)).split(HOLDOUT, DATA_SEED)
    assert accuracy(model, held.x, held.y) >= 0.98
