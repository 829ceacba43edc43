"""Numeric verification of artifacts against the PyTorch parts they came from.

Every output is compared, the max abs error recorded, and every failure is
collected so one error names all the artifacts that missed their tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from datamix_cli.errors import VerificationError


@dataclass(frozen=True)
class Check:
    artifact: str
    max_abs_error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_error)) and self.max_abs_error <= self.tolerance


def max_abs_error(run: Callable[..., np.ndarray], reference: Callable[..., np.ndarray], cases: Sequence[tuple],
                  allowance: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
    """Largest |artifact - reference| over every element of every case, less ``allowance(reference)`` element by
    element where given (an error the comparison itself brings, such as a codec's rounding step; never below 0)."""
    worst = 0.0
    for inputs in cases:
        got, want = np.asarray(run(*inputs)).astype(np.float64), np.asarray(reference(*inputs)).astype(np.float64)
        if got.shape != want.shape:
            return float("inf")
        error = np.abs(got - want) - (allowance(want) if allowance is not None else 0.0)
        worst = max(worst, float(np.max(np.maximum(error, 0.0))))
    return worst


def raise_on_failures(checks: Sequence[Check]) -> None:
    failed = [c for c in checks if not c.passed]
    if failed:
        listed = "; ".join(f"{c.artifact}: max abs error {c.max_abs_error:.3g} > {c.tolerance:g}" for c in failed)
        raise VerificationError(f"artifacts differ from PyTorch beyond tolerance ({listed}); --allow-mismatch writes them anyway")
