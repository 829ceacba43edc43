"""Noise calibrated to a target Fisher-information bound (``datamix split --target-mse M``).

The bound of input i mixed by C is σ²·d / (‖c_i‖²·‖J_i‖_F²) (datamix_cli.privacy.certificate). For it to reach M on
a share ``COVERAGE`` of inputs and mixing draws, σ² must be at least M/d times that quantile of ‖c_i‖²·‖J_i‖_F²
over inputs and the protocol's C. It is measured on calibration inputs (training data, never the held-out data)
with many C draws, using each ‖J_i‖_F² estimate plus Z standard errors, at a quantile raised above COVERAGE by
2.33 binomial standard errors for the number of calibration inputs: the held-out inputs are other samples of the
same distribution, and at that margin a calibration that just met 95 % would fall short on them about 1 % of the
time.

The σ found holds for the head it was measured on: fine-tuning that changes the head could raise ‖J‖ and undo it,
so with a target the head is frozen while the cloud part and the tail train (datamix_cli.training.finetune).
"""

from __future__ import annotations

import math

import numpy as np

COVERAGE = 0.95
MARGIN_Z = 2.326  # one-sided 99 %
CALIBRATION_INPUTS = 256
C_DRAWS = 256  # groups of C drawn for the distribution of ‖c_i‖²


def quantile_level(n: int) -> float:
    """The calibration quantile for ``n`` calibration inputs: COVERAGE plus MARGIN_Z binomial standard errors."""
    return min(0.999, COVERAGE + MARGIN_Z * math.sqrt(COVERAGE * (1 - COVERAGE) / n))


def calibrate_mse(head, x: np.ndarray, mixing, target: float, seed: int = 0) -> tuple[float, dict]:
    """(σ, record): the absolute noise std at which the Fisher-information bound reaches ``target`` for a share
    COVERAGE of inputs like ``x`` and of the protocol's C."""
    from datamix_cli.privacy.certificate import PROBES, Z, jacobian_frobenius
    from datamix_cli.protocol.mixing import coefficient_rng, draw_batch

    x = np.ascontiguousarray(x[:CALIBRATION_INPUTS], dtype=np.float32)
    estimate, stderr = jacobian_frobenius(head, x, PROBES, seed)
    upper = estimate + Z * stderr
    cs = draw_batch(coefficient_rng(seed), mixing, C_DRAWS)
    column_norm_sq = (cs**2).sum(1).reshape(-1)
    level = quantile_level(len(x))
    information = float(np.quantile(np.outer(upper, column_norm_sq), level))
    d = int(np.prod(x.shape[1:]))
    sigma = math.sqrt(target * information / d)
    return sigma, {"target_mse": target, "coverage": COVERAGE, "quantile": level, "inputs": len(x), "c_draws": C_DRAWS,
                   "data": "training inputs (never the held-out data)", "sigma": sigma}

