"""Named protocol configurations for ``datamix split --preset``; options given explicitly win over a preset.

``private`` is the point of ``benchmarks/bench_frontier.py``'s privacy frontier (cut depth × bottleneck × noise
calibrated to a Fisher-information bound × k, on digits and faces) closest to the target on both data sets: the
best attack within 0.05 SSIM and 10 label points of chance at most 3 points of accuracy below the original
model (the largest excess over any of the three, the worse data set counting). It meets the target on faces and
not on digits, where it costs 14 points; the README's privacy section and docs/audit.md give the numbers.
"""

from __future__ import annotations

from datamix_cli.errors import ConfigError

# The values an option takes when neither the command line nor the preset sets it.
DEFAULTS = {
    "k": 4,
    "mixing": "dirichlet",
    "alpha": 1.0,
    "kappa_max": 20.0,
    "noise": 0.0,
    "noise_relative": 0.0,
    "shuffle": False,
    "cut_features": "any",
    "adversarial": 0.0,
    "target_mse": None,
    "bottleneck": None,
}

PRESETS = {
    "default": {},
    # bench_frontier.py, 2026-12-02: k 8, noise calibrated to MSE 1e-3 (the head frozen); was relative noise 0.3,
    # which cost 0.9 points and certified only MSE 0.000225 (a 36.5 dB PSNR ceiling).
    "private": {"k": 8, "target_mse": 1e-3},
}


def resolve(preset: str, given: dict) -> dict:
    """Every option in DEFAULTS: the explicitly ``given`` value (not None), else the preset's, else the default."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    chosen = {**DEFAULTS, **PRESETS[preset]}
    return {name: chosen[name] if given.get(name) is None else given[name] for name in DEFAULTS}
