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
    max_abs_error: float  # or, for an agreement check, the share of inputs whose top-1 differs
    tolerance: float
    agreement_inputs: int | None = None  # set for an agreement check: the held-out inputs it counted
    note: str = ""  # said after the figures when the check fails

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_error)) and self.max_abs_error <= self.tolerance

    def describe(self) -> str:
        if self.agreement_inputs is None:
            return f"{self.artifact}: max abs error {self.max_abs_error:.3g} > {self.tolerance:g}"
        return (f"{self.artifact}: top-1 agreement with PyTorch {1 - self.max_abs_error:.1%} < {1 - self.tolerance:.0%} on "
                f"{self.agreement_inputs} held-out inputs" + (f", {self.note}" if self.note else ""))


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
        listed = "; ".join(c.describe() for c in failed)
        hint = (" (de-mixing amplifies the int8 parts' rounding: try --edge-precision fp16, or another --head-cut)"
                if any(c.agreement_inputs is not None and ".int8." in c.artifact for c in failed) else "")
        raise VerificationError(f"artifacts differ from PyTorch beyond tolerance ({listed}){hint}; --allow-mismatch writes them anyway")
