"""Shared test helpers: paths, the data split the fixtures train on, small models, seeding, training and splitting once."""


import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_FILE = ROOT / "examples" / "models.py"
ORACLE_FILE = ROOT / "tests" / "helpers" / "oracle_models.py"
RESOURCES = ROOT / "tests" / "resources"
# The split commands hold out 20 % of a dataset with data seed 0: fixtures train on the other 80 %.
HOLDOUT, DATA_SEED = 0.2, 0
# The trained fixtures must have learned something: a model at chance agrees with anything.
MIN_ORIGINAL_ACCURACY = 0.90


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def train_on_digits(model: nn.Module, sample_shape: tuple[int, ...], epochs: int, out: Path) -> float:
    """Train ``model`` on the fine-tuning part of digits, save its state_dict, return its held-out accuracy."""
    from datamix_cli.data.datasets import load_dataset
    from examples.train import accuracy, train

    seed_everything(0)
    train_set, held = load_dataset("digits", sample_shape).split(HOLDOUT, DATA_SEED)
    train(model, train_set.x, train_set.y, epochs=epochs, lr=3e-3, batch=64, seed=0)
    torch.save(model.state_dict(), out)
    return accuracy(model, held.x, held.y)


def split_once(tmp_path_factory, name: str, model: str, weights: Path, **config) -> Path:
    """``run_split`` of ``model`` (file.py:factory) on digits into a fresh session folder, seeded first."""
    from datamix_cli.model.loading import ModelSource
    from datamix_cli.pipeline.split import SplitConfig, run_split

    seed_everything(0)
    out = tmp_path_factory.mktemp("shared") / name
    run_split(SplitConfig(source=ModelSource(model, weights=weights), data="digits", out=out, **config))
    return out
