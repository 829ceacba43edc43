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
