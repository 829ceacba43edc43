"""``datamix audit``: run the registered attacks on what an honest-but-curious cloud sees of a split, and judge
them against chance (the threat model is in :mod:`datamix_cli.privacy.scene`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from datamix_cli.errors import ConfigError
from datamix_cli.privacy.attacks import AttackContext, attack_names, get_attack
from datamix_cli.privacy.attacks.search import SEARCH_STEPS
from datamix_cli.privacy.judging import Judge, best_attacks, verdict
from datamix_cli.privacy.scene import Scene

ATTACKS = attack_names()


class Verdict(TypedDict):
    status: str  # "leaks", "inconclusive" or "resists this audit"
    reasons: list[str]


class BestAttack(TypedDict, total=False):
    attack: str
    mean: float
    chance: float
    advantage: float
    accuracy: float
    single_mixture: float


class AuditReport(TypedDict, total=False):
    """What ``run_audit`` returns (``datamix audit --json``). Each attack that ran adds its own section under its
    registered name (separation, inversion, ...), shaped by the attack; docs/audit.md describes them."""

    threat_model: str
    samples: int
    public_samples: int
    protocol: dict
    split: dict
    seed: int
    classifier: dict  # the split's model on the true inputs: accuracy_on_inputs, chance
    best: dict[str, BestAttack]  # per metric, the strongest attack next to its chance
    verdict: Verdict
    timing_s: dict[str, float]
    caveat: str
    certificate: dict  # the Fisher-information bound on unbiased reconstruction (datamix_cli.privacy.certificate)


CAVEAT = (
    "An empirical audit, not a guarantee: instance encodings such as DataMix cannot give indistinguishability "
    "(Carlini et al., 'Is Private Learning Possible with Instance Encoding?'); stronger attacks may recover more."
)


@dataclass(frozen=True)
class AuditConfig:
    folder: Path
    data: str | None = None
    attacks: tuple[str, ...] = ATTACKS
    samples: int = 64
    seed: int = 0
    decoder_epochs: int = 12
    search_steps: int = SEARCH_STEPS
    report: Path | None = None


def run_audit(config: AuditConfig) -> AuditReport:
    check_config(config)
    start = time.perf_counter()
    scene = build_scene(config)
    scene_s = time.perf_counter() - start
    report = audit_scene(scene, config)
    report["timing_s"] = {"scene": scene_s, **report["timing_s"], "total": time.perf_counter() - start}
    return report


def check_config(config: AuditConfig) -> None:
    unknown = [a for a in config.attacks if a not in ATTACKS]
    if unknown or not config.attacks:
        raise ConfigError(f"unknown attacks {', '.join(unknown) or '(none given)'}; choose from {', '.join(ATTACKS)}")
    if config.decoder_epochs < 1:
        raise ConfigError("--decoder-epochs must be >= 1")
    if config.search_steps < 0:
        raise ConfigError("--search-steps must be >= 0")


def build_scene(config: AuditConfig) -> Scene:
    """The audited samples and what the cloud sees of them under the split's protocol."""
    return Scene(config.folder, config.data, config.samples, config.seed)


def certificate(scene: Scene, best: dict) -> dict:
    """The Fisher-information bound for the audited inputs next to the best empirical reconstruction (PSNR), and
    with clipping the μ-GDP bounds on label inference and re-identification next to the best attacks' rates."""
    from datamix_cli.privacy.certificate import certify
    from datamix_cli.privacy.gdp import success_bound

    result = certify(scene)
    psnr = (best.get("psnr_db") or {}).get("mean")
    if result["status"] == "unbiased" and psnr is not None:
        result["best_attack_psnr_db"] = psnr
        # Only an attack with a prior (biased) can beat the bound: shown as such, it is not an error.
        result["best_attack_above_ceiling"] = bool(psnr > result["psnr_ceiling_db"]["max"])
    gdp = result.get("gdp")
    if gdp is not None and "epsilon" in gdp:
        # Each attack's success against Φ(Φ⁻¹(κ) + μ), κ its own chance rate on the same samples.
        for name in ("label_accuracy", "classifier_label", "reidentification"):
            attack = best.get(name)
            if attack is not None:
                gdp.setdefault("attacks", {})[name] = {"attack": attack["attack"], "rate": attack.get("mean", attack.get("accuracy")),
                                                       "prior": attack["chance"], "bound": success_bound(attack["chance"], gdp["mu"]),
                                                       "samples": len(scene.y)}
    return result


def audit_scene(scene: Scene, config: AuditConfig) -> AuditReport:
    """Run the chosen attacks on ``scene`` in registry order (tests replace what the cloud sees to build positive
    and negative controls)."""
    from datamix_cli.privacy import scene as scene_module

    report: AuditReport = {
        "threat_model": scene_module.__doc__.split("Threat model (worst case for the user): ")[1].split("\n\n")[0].replace("\n", " "),
        "samples": int(len(scene.y)),
        "public_samples": int(len(scene.y_pub)),
        "protocol": {**{k: scene.manifest.protocol[k] for k in ("k", "alpha", "kappa_max", "shuffle", "noise_sigma")},
                     "noise_relative": scene.mixing.noise_relative, "distribution": scene.mixing.distribution},
        "split": {"head_cut": scene.manifest.split["head_cut"], "edge_fraction": scene.manifest.flops["edge_fraction"]},
        "seed": config.seed,
    }
    judge = Judge(scene, config.seed)
    report["classifier"] = {"accuracy_on_inputs": float((judge.predicted == scene.y).mean()),
                            "chance": float(np.bincount(scene.y).max() / len(scene.y))}
    context = AttackContext(scene, judge, config.seed, config.decoder_epochs, config.search_steps)
    timing, reconstructions = {}, {}
    for name in ATTACKS:
        if name not in config.attacks:
            continue
        start = time.perf_counter()
        outcome = get_attack(name).run(context)
        timing[name] = time.perf_counter() - start
        report[name] = outcome.report
        reconstructions.update(outcome.reconstructions)
        context.earlier[name] = outcome
    report["best"] = best_attacks(report)
    report["verdict"] = verdict(report, ATTACKS)
    start = time.perf_counter()
    report["certificate"] = certificate(scene, report["best"])
    timing["certificate"] = time.perf_counter() - start
    report["timing_s"] = timing
    report["caveat"] = CAVEAT
    if config.report is not None:
        from datamix_cli.privacy.plots import plot_grid

        plot_grid(scene, context.separated, reconstructions, config.report)
    return report
