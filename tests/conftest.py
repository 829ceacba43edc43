from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_FILE = ROOT / "examples" / "models.py"
ORACLE_FILE = ROOT / "tests" / "oracle_models.py"
# The split commands hold out 20 % of a dataset with data seed 0: fixtures train on the other 80 %.
HOLDOUT, DATA_SEED = 0.2, 0
# The trained fixtures must have learned something: a model at chance agrees with anything.
MIN_ORIGINAL_ACCURACY = 0.90


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pytest_configure(config):
    # Before any fixture is built, so session fixtures do not depend on which test asked for them first.
    seed_everything(0)


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
    seed_everything(0)


def train_on_digits(model: nn.Module, sample_shape: tuple[int, ...], epochs: int, out: Path) -> float:
    """Train ``model`` on the fine-tuning part of digits, save its state_dict, return its held-out accuracy."""
    from datamix_cli.data import load_dataset
    from examples.train import accuracy, train

    seed_everything(0)
    train_set, held = load_dataset("digits", sample_shape).split(HOLDOUT, DATA_SEED)
    train(model, train_set.x, train_set.y, epochs=epochs, lr=3e-3, batch=64, seed=0)
    torch.save(model.state_dict(), out)
    return accuracy(model, held.x, held.y)


@pytest.fixture(scope="session")
def small_cnn_weights(tmp_path_factory):
    """The small CNN trained on digits at 32x32 (cached for the test session)."""
    from examples.models import small_cnn

    path = tmp_path_factory.mktemp("weights") / "small_cnn_digits.pt"
    acc = train_on_digits(small_cnn(), (1, 32, 32), epochs=8, out=path)
    assert acc >= MIN_ORIGINAL_ACCURACY, f"the fixture model did not learn: held-out accuracy {acc:.3f}"
    return path


@pytest.fixture(scope="session")
def affine_weights(tmp_path_factory):
    """The affine-cloud oracle model trained on 8x8 digits."""
    from oracle_models import affine_cloud

    path = tmp_path_factory.mktemp("weights") / "affine_digits.pt"
    acc = train_on_digits(affine_cloud(), (1, 8, 8), epochs=15, out=path)
    assert acc >= MIN_ORIGINAL_ACCURACY, f"the oracle model did not learn: held-out accuracy {acc:.3f}"
    return path


def split_once(tmp_path_factory, name: str, model: str, weights: Path, **config) -> Path:
    """``run_split`` of ``model`` (file.py:factory) on digits into a fresh session folder, seeded first."""
    from datamix_cli.loading import ModelSource
    from datamix_cli.splitting import SplitConfig, run_split

    seed_everything(0)
    out = tmp_path_factory.mktemp("shared") / name
    run_split(SplitConfig(source=ModelSource(model, weights=weights), data="digits", out=out, **config))
    return out


@pytest.fixture(scope="session")
def small_split(tmp_path_factory, small_cnn_weights):
    """A mixing-aware split of the trained small CNN with every artifact, made once per test session."""
    from datamix_cli.training import FinetuneConfig

    return split_once(
        tmp_path_factory, "small-split", f"{EXAMPLES_FILE}:small_cnn", small_cnn_weights,
        input_shape=(1, 1, 32, 32), training=FinetuneConfig(epochs=4, seed=0),
    )


@pytest.fixture(scope="session")
def affine_split(tmp_path_factory, affine_weights):
    """A split of the affine-cloud oracle model, not fine-tuned, so the source model is the split's model."""
    from oracle_models import HEAD_CUT, TAIL_CUT

    from datamix_cli.training import FinetuneConfig
    from exporters import registered_names

    return split_once(
        tmp_path_factory, "affine-split", f"{ORACLE_FILE}:affine_cloud", affine_weights,
        head_cut=HEAD_CUT, tail_cut=TAIL_CUT, budget=1.0, training=FinetuneConfig(epochs=0),
        formats=tuple(registered_names("head")), cloud_formats=tuple(registered_names("cloud")),  # every format, against the oracle
    )
