"""Which epoch of fine-tuning ships: model selection on a validation part of the fine-tuning data (never the
evaluation holdout), and stopping once it stops improving.

Each epoch is scored on the validation samples under the protocol with one fixed set of C (the same every epoch,
so scores compare): accuracy first, the cross-entropy breaking ties. The best epoch's weights are kept and
restored at the end; training stops after ``patience`` epochs without a better score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VALIDATION_SEED = 1  # the C the validation samples are mixed with: evaluation only, never used on user data


def validation_score(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, cross-entropy) of ``logits`` for labels ``y``."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float((logits.argmax(1) == y).mean()), float(-log_p[np.arange(len(y)), y].mean())


@dataclass
class Selection:
    """Keeps the best epoch (highest accuracy, then lowest loss) and says when to stop."""

    patience: int
    best: tuple[float, float] | None = None  # (accuracy, loss)
    best_epoch: int = 0
    since_best: int = 0
    state: dict | None = field(default=None, repr=False)

    def update(self, epoch: int, accuracy: float, loss: float, snapshot) -> bool:
        """Record epoch ``epoch``'s score; ``snapshot()`` is called for the weights only when it is the best so far."""
        better = self.best is None or (accuracy, -loss) > (self.best[0], -self.best[1])
        if better:
            self.best, self.best_epoch, self.since_best, self.state = (accuracy, loss), epoch, 0, snapshot()
        else:
            self.since_best += 1
        return better

    @property
    def converged(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def reason(self, epochs_run: int, max_epochs: int) -> str:
        shipped = f"epoch {self.best_epoch} shipped: the best validation accuracy ({self.best[0]:.4f}, loss {self.best[1]:.4f})"
        if self.converged:
            return f"{shipped}; stopped after epoch {epochs_run}, {self.patience} epochs without improvement"
        return f"{shipped} of {epochs_run} epochs (--epochs {max_epochs} reached)"
