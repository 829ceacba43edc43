from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_FILE = ROOT / "examples" / "models.py"


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x) + x)


class TinyResNet(nn.Module):
    """stem -> residual block -> pool -> fc: the skip connection forbids cuts inside ``block``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = Residual(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.pool(self.block(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def mlp() -> nn.Sequential:
    """Three 16x16 layers and a 16->4 classifier: 3 x 512 + 128 = 1664 FLOPs per sample."""
    return nn.Sequential(
        nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
    )


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def small_split(tmp_path_factory):
    """A split of the (untrained) small CNN with every artifact, made once per test session."""
    from datamix_cli.loading import ModelSource
    from datamix_cli.splitting import SplitConfig, run_split
    from datamix_cli.training import FinetuneConfig

    out = tmp_path_factory.mktemp("shared") / "small-split"
    config = SplitConfig(
        source=ModelSource(f"{EXAMPLES_FILE}:small_cnn"), data="digits", out=out, input_shape=(1, 1, 32, 32),
        training=FinetuneConfig(epochs=1, seed=0),
    )
    run_split(config)
    return out
