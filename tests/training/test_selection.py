"""Which epoch ships: the best on a validation part of the fine-tuning data, restored, and training stops once
the validation score stops improving."""

import numpy as np
import pytest
import torch
from torch import nn

from datamix_cli.training.selection import Selection, validation_score


def test_validation_score_is_accuracy_and_torchs_cross_entropy():
    rng = np.random.default_rng(0)
    logits, y = rng.standard_normal((50, 7)) * 3, rng.integers(0, 7, 50)
    accuracy, loss = validation_score(logits, y)
    assert accuracy == pytest.approx(float((logits.argmax(1) == y).mean()))
    assert loss == pytest.approx(float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y))), rel=1e-12)


def test_the_best_epoch_is_kept_ties_go_to_the_lower_loss_and_patience_stops():
    selection, snapshots = Selection(patience=2), iter(range(100))
    scores = [(0.80, 0.9), (0.90, 0.5), (0.90, 0.4), (0.85, 0.3), (0.89, 0.2)]
    for epoch, (accuracy, loss) in enumerate(scores, start=1):
        selection.update(epoch, accuracy, loss, lambda: next(snapshots))
        if selection.converged:
            break
    assert (selection.best_epoch, selection.best, selection.state) == (3, (0.90, 0.4), 2)
    assert epoch == 5 and selection.converged
    assert "epoch 3 shipped" in selection.reason(5, 12) and "2 epochs without improvement" in selection.reason(5, 12)


def test_patience_zero_never_stops_early():
    selection = Selection(patience=0)
    for epoch in range(1, 20):
        selection.update(epoch, 0.5, 1.0, dict)
    assert not selection.converged and selection.best_epoch == 1


def test_finetune_ships_the_best_validation_epoch_not_the_last(tmp_path):
    """A model without BatchNorm (so nothing is recalibrated after the restore), at a learning rate high enough
    that the validation score moves: the parts end up with the best epoch's weights, scored exactly as then."""
    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.protocol.mixing import MixingConfig
    from datamix_cli.training.finetune import FinetuneConfig, _validate, finetune
    from partitioners.graph import trace_model
    from partitioners.partition import partition
    from partitioners.profile import profile_model
    from partitioners.select import choose_split

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    traced = trace_model(model)
    decision = choose_split(profile_model(traced, (1, 1, 8, 8)), 0.5, 4)
    parts = partition(traced, decision.head_cut, decision.tail_cut)
    digits = load_dataset("digits", (1, 8, 8))
    x, y = np.asarray(digits.x), digits.y
    validation = (x[1400:1600], y[1400:1600])
    mixing = MixingConfig(k=4)
    done = finetune(parts, x[:1400], y[:1400], mixing, FinetuneConfig(epochs=8, lr=3e-2, seed=0, patience=0, feature_match=0.0), validation=validation)
    scores = [(h["validation_accuracy"], -h["validation_loss"]) for h in done.history]
    assert len(done.history) == 8  # patience 0: every epoch ran
    best = 1 + max(range(len(scores)), key=lambda i: (scores[i], -i))  # first of the best, as Selection keeps it
    assert done.shipped_epoch == best != len(done.history), scores  # the point: not simply the last epoch
    accuracy, loss = _validate(parts, validation, mixing, torch.device("cpu"))
    assert accuracy == done.history[best - 1]["validation_accuracy"] and loss == pytest.approx(done.history[best - 1]["validation_loss"], rel=1e-6)
