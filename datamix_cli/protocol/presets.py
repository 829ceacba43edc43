"""Named protocol configurations for ``datamix split --preset``; options given explicitly win over a preset.

``private`` is the configuration of ``benchmarks/bench_audit.py``'s sweep with the best privacy (the strongest
audit attack's advantage over chance) at most 3 points of accuracy below the original model, on digits and on
faces. What it resists and what it does not is in the README's privacy section, with the numbers.
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
}

PRESETS = {
    "default": {},
    "private": {"noise_relative": 0.3},  # bench_audit.py, 2026-11-28: the only setting both data sets allowed that lowered leakage
}


def resolve(preset: str, given: dict) -> dict:
    """Every option in DEFAULTS: the explicitly ``given`` value (not None), else the preset's, else the default."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    chosen = {**DEFAULTS, **PRESETS[preset]}
    return {name: chosen[name] if given.get(name) is None else given[name] for name in DEFAULTS}
