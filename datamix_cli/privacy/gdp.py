"""The clipped Gaussian mechanism in Gaussian differential privacy (Dong, Roth, Su 2022), and what it bounds.

With every input's features clipped to L2 norm B inside the head artifact, replacing one input of a group moves its
features by at most 2B, and the group's mixtures m = C·h by at most 2B·‖c_i‖ (c_i the input's column of C). Gaussian
noise of std σ on every value of the mixtures then makes the mixtures μ-GDP per input, μ = 2B·‖c_i‖/σ, whatever
the cloud knows of C and of the group's other inputs. Everything computed from the mixtures (the uplink codec, the
cloud part) is post-processing and keeps the guarantee.

Reconstruction robustness (Balle et al. S&P 2022; Hayes et al. NeurIPS 2023): an attacker whose guess from the
prior alone succeeds with probability κ succeeds with at most Φ(Φ⁻¹(κ) + μ) after seeing the mixtures, for any
success criterion and any prior. For labels κ is the largest class prior; for re-identifying one input among n
equally likely candidates κ = 1/n.

The guarantee is per query: n queries of the same input compose to μ·√n.
"""

from __future__ import annotations

import math

DELTA = 1e-5  # the δ the (ε, δ) translation is stated at
MEANINGLESS_MU = 5.0  # above this, Φ(Φ⁻¹(κ) + μ) is ~1 for any κ: "no meaningful guarantee"
COMPOSITION = "per query: n queries of the same input compose to mu * sqrt(n)"


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _phi_inverse(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def mu(clip_norm: float, column_norm: float, sigma: float) -> float:
    """μ of the clipped Gaussian mechanism: 2B·‖c_i‖/σ (inf without noise)."""
    return 2 * clip_norm * column_norm / sigma if sigma > 0 else math.inf


def sigma_for_mu(clip_norm: float, column_norm: float, target_mu: float) -> float:
    """The σ at which the mechanism is exactly ``target_mu``-GDP."""
    return 2 * clip_norm * column_norm / target_mu


def success_bound(kappa: float, mu_value: float) -> float:
    """The largest success probability of any attacker whose prior-only success is ``kappa``, under μ-GDP."""
    if math.isinf(mu_value):
        return 1.0
    return _phi(_phi_inverse(min(max(kappa, 1e-300), 1 - 1e-16)) + mu_value)


def delta_at(epsilon: float, mu_value: float) -> float:
    """δ(ε) of μ-GDP (Dong, Roth, Su, Corollary 2.13)."""
    return _phi(-epsilon / mu_value + mu_value / 2) - math.exp(epsilon) * _phi(-epsilon / mu_value - mu_value / 2)


def epsilon_at(mu_value: float, delta: float = DELTA) -> float:
    """The smallest ε with δ(ε) ≤ ``delta``, by bisection (δ(ε) decreases in ε)."""
    if math.isinf(mu_value):
        return math.inf
    low, high = 0.0, 1.0
    while delta_at(high, mu_value) > delta:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if delta_at(middle, mu_value) > delta else (low, middle)
    return high


def guarantee(mu_value: float, label_prior: float | None = None, candidates: int | None = None) -> dict:
    """μ with what it implies: (ε, δ), and the bounds on label inference and on re-identification among
    ``candidates``; "no meaningful guarantee" above MEANINGLESS_MU."""
    record = {"mu": mu_value, "composition": COMPOSITION}
    if mu_value > MEANINGLESS_MU:
        record["meaning"] = f"no meaningful guarantee (mu > {MEANINGLESS_MU:g})"
        return record
    record["epsilon"], record["delta"] = epsilon_at(mu_value), DELTA
    if label_prior is not None:
        record["label_bound"] = {"prior": label_prior, "bound": success_bound(label_prior, mu_value)}
    if candidates:
        record["reidentification_bound"] = {"prior": 1 / candidates, "bound": success_bound(1 / candidates, mu_value)}
    return record
