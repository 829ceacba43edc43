"""How ``datamix audit`` judges what its attacks recovered: every figure next to uninformed guesses scored on the
same samples (chance), the strongest attack per metric, and the verdict, decided on advantages over chance
(thresholds justified in docs/audit.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from datamix_cli.privacy.metrics import image_metrics, reidentification, summary

if TYPE_CHECKING:
    from datamix_cli.privacy.scene import Scene

# Verdict thresholds, all on advantages over chance baselines scored on the same samples (docs/audit.md).
SSIM_ADVANTAGE_LEAK, SSIM_ADVANTAGE_WORRY = 0.10, 0.05  # mean SSIM above the best uninformed guess
PSNR_ADVANTAGE_LEAK = 2.0  # dB above the best uninformed guess
P_VALUE = 0.01  # one-sided binomial tests: label accuracies against their chance rates, re-identification against 1/N
SEPARATION_MARGIN = 0.05  # recovered features must beat a single mixture's |corr| by this much to count
# Reconstructions of what DataMix sends, each decided on its own: (report section, view) -> what the report calls it.
RECONSTRUCTIONS = {("inversion", "mixtures"): "decoder on raw mixtures", ("inversion", "separated"): "decoder on separated features",
                   ("adaptive", None): "adaptive decoder on raw mixtures", ("group", None): "group decoder on a group's mixtures",
                   ("optimisation", None): "decoder on span-search features"}
# Feature recoveries, each set against what a single mixture already gives: report section -> what it is called.
FEATURE_RECOVERIES = {"separation": "separation", "optimisation": "span search"}
LABELS = {"mixtures": "raw mixtures", "separated": "separated features"}


MAX_CHANCE_POOL = 64  # best-of-pool guesses scored per sample at most (a shuffled split pairs among all N)


class Judge:
    """Scores reconstructions of audited inputs next to uninformed guesses on the same samples and against the
    same truth: the public mean image, a random public image and, for views whose pairing with samples used the
    truth (picking, per sample, one of ``pool`` candidates), the best of ``pool`` random public images (at most
    MAX_CHANCE_POOL of them: a smaller pool lowers that chance, so errs towards "leaks")."""

    def __init__(self, scene: Scene, seed: int):
        self.images, self.labels, self.public = scene.x, scene.y, scene.x_pub
        self.classify = scene.classify
        self.predicted = scene.classify(scene.x)  # the classifier on the true inputs: the ceiling of label accuracy
        self.rng = np.random.default_rng(seed)
        n = len(self.images)
        # Guesses as indices into the public images, (N, j) per audited sample: j candidates, the best one counts.
        self.guesses = {"random_public_image": self.rng.choice(len(self.public), size=(n, 1))}
        self.mean_image = self.public.mean(axis=0)
        self._pools = {}

    def pool(self, size: int) -> tuple[str, np.ndarray]:
        """The best-of-``size`` guess: its name and (N, size) public indices, drawn once per size."""
        size = min(size, MAX_CHANCE_POOL, len(self.public))
        if size not in self._pools:
            self._pools[size] = self.rng.choice(len(self.public), size=(len(self.images), size))
        return f"best_of_{size}_public_images", self._pools[size]

    def __call__(self, recon: np.ndarray, targets: np.ndarray | None = None, pool: int | None = None) -> dict:
        """SSIM / PSNR of ``recon`` against ``images[targets]`` (default: each its own sample), each chance guess's,
        the advantage over the best guess, re-identification (chance 1/N) and the label the split's own model
        gives the reconstruction against the target's true label."""
        targets = np.arange(len(self.images)) if targets is None else targets
        truth = self.images[targets]

        def both(candidates):  # per sample the best of its candidates, SSIM and PSNR apart
            scores = [np.array([image_metrics(c, t) for c in candidates(i)]).max(axis=0) for i, t in enumerate(truth)]
            return summary([s for s, _ in scores]), summary([p for _, p in scores])

        guesses = {name: indices[targets] for name, indices in self.guesses.items()}
        pool_guess = None
        if pool:
            pool_name, indices = self.pool(pool)
            pool_guess = guesses[pool_name] = indices[targets]
        ssim, psnr = both(lambda i: recon[i : i + 1])
        chance = {"mean_public_image": dict(zip(("ssim", "psnr_db"), both(lambda i: self.mean_image[None]))),
                  **{name: dict(zip(("ssim", "psnr_db"), both(lambda i, g=g: self.public[g[i]]))) for name, g in guesses.items()}}
        best_ssim = max((c["ssim"]["mean"] for c in chance.values() if c["ssim"]["mean"] is not None), default=None)
        best_psnr = max(c["psnr_db"]["mean"] for c in chance.values())
        return {
            "ssim": ssim,
            "psnr_db": psnr,
            "chance": chance,
            "paired_by_truth": pool,
            "chance_pool": None if pool_guess is None else pool_guess.shape[1],  # the best-of size scored (capped)
            "ssim_advantage": None if ssim["mean"] is None or best_ssim is None else ssim["mean"] - best_ssim,
            "psnr_advantage_db": psnr["mean"] - best_psnr,
            "reidentification": {"accuracy": reidentification(recon, self.images, targets), "chance": 1.0 / len(self.images)},
            "classifier_label": self.label_accuracy(recon, targets, pool_guess),
        }

    def label_accuracy(self, recon: np.ndarray, targets: np.ndarray, pool: np.ndarray | None) -> dict:
        """The split's model's label for each reconstruction against its target's true label. Chance: the majority
        class rate of the targets, or for views paired by the truth, the label of the best (least MSE) of the
        pool's random public images (indices, (N, j)), which that pairing would also have favoured."""
        labels = self.labels[targets]
        counts = np.bincount(labels)
        chance = float(counts.max() / counts.sum())
        if pool is not None:
            truth = self.images[targets].reshape(len(targets), -1)
            nearest = [g[((self.public[g].reshape(len(g), -1) - t) ** 2).mean(axis=1).argmin()] for g, t in zip(pool, truth)]
            chance = max(chance, float((self.classify(self.public[nearest]) == labels).mean()))
        return {"accuracy": float((self.classify(recon) == labels).mean()), "chance": chance}


def binomial_p_value(rate: float, n: int, chance: float) -> float:
    """One-sided binomial p-value of a success ``rate`` on ``n`` trials if the attacker only guessed at rate ``chance``."""
    from scipy.stats import binomtest

    return float(binomtest(int(round(rate * n)), n, min(max(chance, 1e-9), 1 - 1e-9), alternative="greater").pvalue)


def reconstruction_views(report: dict) -> dict:
    """The scored reconstructions of what DataMix sends that ``report`` holds, by what the report calls them."""
    views = {}
    for (section, view), name in RECONSTRUCTIONS.items():
        node = report.get(section) or {}
        node = node.get(view) if view is not None else node
        if node and "ssim" in node:
            views[name] = node
    return views


def feature_recoveries(report: dict) -> dict:
    """The attacks that recover features, by what the report calls them: (name, metrics)."""
    found = {}
    for section, text in FEATURE_RECOVERIES.items():
        node = report.get(section)
        if node and "matched_abs_corr" in node:
            found[f"{node['method']} separation" if section == "separation" else text] = node
    return found


def best_attacks(report: dict) -> dict:
    """Per metric, the strongest attack on what DataMix sends, next to its chance baseline."""
    best = {}
    views = reconstruction_views(report)
    for metric, advantage in (("ssim", "ssim_advantage"), ("psnr_db", "psnr_advantage_db")):
        scored_views = [(name, r) for name, r in views.items() if r[metric]["mean"] is not None]
        if scored_views:
            name, r = max(scored_views, key=lambda item: item[1][metric]["mean"])
            best[metric] = {"attack": name, "mean": r[metric]["mean"], "chance": r[metric]["mean"] - r[advantage], "advantage": r[advantage]}
    if views:
        name, r = max(views.items(), key=lambda item: item[1]["reidentification"]["accuracy"])
        best["reidentification"] = {"attack": name, **r["reidentification"]}
        name, r = max(views.items(), key=lambda item: item[1]["classifier_label"]["accuracy"] - item[1]["classifier_label"]["chance"])
        best["classifier_label"] = {"attack": name, "mean": r["classifier_label"]["accuracy"], "chance": r["classifier_label"]["chance"]}
    label = report.get("label")
    if label and any(view in label for view in LABELS):
        view = max((v for v in LABELS if v in label), key=lambda v: label[v])
        best["label_accuracy"] = {"attack": f"classifier on {LABELS[view]}", "mean": label[view], "chance": label["chance"]}
    recoveries = feature_recoveries(report)
    if recoveries:
        name, r = max(recoveries.items(), key=lambda item: item[1]["matched_abs_corr"]["mean"])
        best["feature_abs_corr"] = {
            "attack": name,
            "mean": r["matched_abs_corr"]["mean"],
            "single_mixture": r["single_mixture_abs_corr"]["mean"],
            "chance": r["chance_abs_corr"]["mean"],
        }
    return best


def verdict(report: dict, attacks: tuple[str, ...]) -> dict:
    """Leak when any attack on what DataMix sends beats chance on the same samples (never the unmixed baseline);
    inconclusive when nothing leaks but one of ``attacks`` (every registered attack) did not run."""
    reasons, worries = [], []
    n = report.get("samples", 0)

    def significant(rate, chance):
        return n and binomial_p_value(rate, n, chance) < P_VALUE

    for name, r in reconstruction_views(report).items():
        ssim_adv, psnr_adv = r["ssim_advantage"], r["psnr_advantage_db"]
        if (ssim_adv is not None and ssim_adv >= SSIM_ADVANTAGE_LEAK) or psnr_adv >= PSNR_ADVANTAGE_LEAK:
            shown = "n/a" if ssim_adv is None else f"{ssim_adv:+.2f}"
            reasons.append(f"{name} beats chance (SSIM advantage {shown}, PSNR advantage {psnr_adv:+.1f} dB)")
        elif ssim_adv is not None and ssim_adv >= SSIM_ADVANTAGE_WORRY:
            worries.append(f"{name} slightly above chance (SSIM advantage {ssim_adv:+.2f})")
        reid = r.get("reidentification")
        if reid and significant(reid["accuracy"], reid["chance"]):
            reasons.append(f"{name} re-identifies {reid['accuracy']:.0%} of the audited inputs (chance {reid['chance']:.0%}, p < {P_VALUE:g})")
        labelled = r.get("classifier_label")
        if labelled and significant(labelled["accuracy"], labelled["chance"]):
            reasons.append(f"the split's model labels {name} correctly at {labelled['accuracy']:.0%} "
                           f"(chance {labelled['chance']:.0%}, p < {P_VALUE:g})")
    label = report.get("label") or {}
    for view, text in LABELS.items():
        if view in label and significant(label[view], label["chance"]):
            reasons.append(f"labels inferred from {text} at {label[view]:.0%} (chance {label['chance']:.0%}, p < {P_VALUE:g})")
    for name, r in feature_recoveries(report).items():
        if r["matched_abs_corr"]["mean"] > r["single_mixture_abs_corr"]["mean"] + SEPARATION_MARGIN:
            reasons.append(
                f"{name} recovers features better than a single mixture gives "
                f"(|corr| {r['matched_abs_corr']['mean']:.2f} vs {r['single_mixture_abs_corr']['mean']:.2f})"
            )
    missing = [a for a in attacks if a not in report]
    if reasons:
        status = "leaks"
    elif worries or missing:
        status = "inconclusive"
        worries += [f"attack {a} not run" for a in missing]
    else:
        status = "resists this audit"
    skipped = [f"attack {a} skipped: {report[a]['skipped']}" for a in attacks if isinstance(report.get(a), dict) and "skipped" in report[a]]
    return {"status": status, "reasons": reasons + worries + skipped}
