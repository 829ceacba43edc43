"""``datamix audit``: what an honest-but-curious cloud can recover from a split.

Threat model (worst case for the user): the cloud knows the architecture and
the edge weights (it has ``edge/head.pt``), sees every mixture and, unless
shuffling is on, which group each came from, and holds public data from the
same distribution: the split's training part, disjoint from the held-out
samples audited here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.errors import ConfigError

ATTACKS = ("ica", "inversion", "label")
# Verdict thresholds, all on advantages over chance baselines scored on the same samples (docs/audit.md).
SSIM_ADVANTAGE_LEAK, SSIM_ADVANTAGE_WORRY = 0.10, 0.05  # mean SSIM above the best uninformed guess
PSNR_ADVANTAGE_LEAK = 2.0  # dB above the best uninformed guess
LABEL_P_VALUE = 0.01  # one-sided binomial test of label accuracy against the majority-class rate
ICA_MARGIN = 0.05  # ICA must beat a single mixture's |corr| by this much to count as separation
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
    report: Path | None = None


def _summary(values) -> dict:
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    return {"mean": float(values.mean()) if values.size else None, "max": float(values.max()) if values.size else None}


class _Scene:
    """The audited samples, what the cloud saw, and the truth to score attacks against."""

    def __init__(self, config: AuditConfig):
        from datamix_cli.data import load_dataset
        from datamix_cli.manifest import load_manifest
        from datamix_cli.mixing import MixingConfig, coefficient_rng, draw_coefficients
        from exporters import get_exporter

        self.manifest = load_manifest(config.folder, roles=("head", "decoys"))
        p = self.manifest.protocol
        self.k = p["k"]
        self.mixing = MixingConfig.from_protocol(p)
        head = get_exporter("torchscript").load(Path(config.folder) / self.manifest.artifact("head", "torchscript")["path"])
        eye = np.eye(self.k, dtype=np.float32)
        self.features = lambda x: np.concatenate([head(x[i : i + self.k], eye) for i in range(0, len(x), self.k)])
        shape = tuple(self.manifest.model["input_shape"][1:])
        dataset = load_dataset(config.data or self.manifest.accuracy["dataset"], shape)
        training = self.manifest.training
        public, private = dataset.split(training.get("holdout", 0.2), training.get("data_seed", 0))
        n_pub = len(public.y) - len(public.y) % self.k
        n_priv = min(config.samples, len(private.y))
        n_priv -= n_priv % self.k
        if n_priv < self.k:
            raise ConfigError(f"need at least k={self.k} held-out samples to audit, have {len(private.y)}")
        self.x_pub, self.y_pub = public.x[:n_pub], public.y[:n_pub]
        self.x, self.y = private.x[:n_priv], private.y[:n_priv]
        self.classes = len(self.manifest.model["class_labels"])
        self.h_pub, self.h = self.features(self.x_pub), self.features(self.x)
        rng = coefficient_rng(config.seed)
        self.cs = np.stack([draw_coefficients(rng, self.mixing) for _ in range(n_priv // self.k)])
        self.mixtures = self._mix(self.h, self.cs, rng)
        self.sent_order = rng.permutation(n_priv) if self.mixing.shuffle else np.arange(n_priv)
        self.rng = rng

    def _mix(self, h, cs, rng):
        from datamix_cli.mixing import mix

        groups = h.reshape(len(cs), self.k, *h.shape[1:]).astype(np.float64)
        m = mix(cs, groups).reshape(h.shape)
        if self.mixing.noise_sigma:
            m = m + self.mixing.noise_sigma * rng.standard_normal(m.shape)
        return m.astype(np.float32)

    def dominant(self) -> np.ndarray:
        return dominant_sources(self.cs)


def dominant_sources(cs: np.ndarray) -> np.ndarray:
    """For each mixture of groups mixed by ``cs`` (G, k, k), the index of the sample with the largest |coefficient|."""
    groups, k = cs.shape[0], cs.shape[1]
    return (np.arange(groups)[:, None] * k + np.abs(cs).argmax(axis=2)).ravel()


def attack_ica(scene: _Scene, seed: int) -> tuple[dict, np.ndarray]:
    """Blind source separation per (apparent) group; returns metrics and aligned recovered features."""
    from datamix_cli.attacks import abs_correlation, align_scale, amari_index, ica_unmix, match_sources

    k, flat_h = scene.k, scene.h.reshape(len(scene.h), -1).astype(np.float64)
    # With Dirichlet rows (summing to one) m - mu = C(h - mu): removing the public mean feature map keeps the
    # mixing intact and strips the structure all samples share, which would break ICA's independence
    # assumption. For an orthogonal C this is only approximate; FastICA centres each mixture itself anyway.
    mu = scene.h_pub.reshape(len(scene.h_pub), -1).mean(axis=0)
    sent = scene.mixtures[scene.sent_order].reshape(len(scene.h), -1).astype(np.float64) - mu
    amari, matched, components = [], [], []
    for g in range(len(scene.h) // k):
        rows = slice(g * k, (g + 1) * k)
        w, recovered = ica_unmix(sent[rows], seed)
        components.append(recovered)
        if not scene.mixing.shuffle:
            amari.append(amari_index(w, scene.cs[g]))
    pool = np.concatenate(components)
    recovered_features = np.empty_like(flat_h)
    for g in range(len(scene.h) // k):
        truth = flat_h[g * k : (g + 1) * k] - mu
        if scene.mixing.shuffle:  # the grouping is unknown: best component anywhere
            corr = abs_correlation(pool, truth)
            picks, best = corr.argmax(axis=0), corr.max(axis=0)
            chosen = pool[picks]
        else:
            order, best = match_sources(components[g], truth)
            chosen = components[g][order]
        matched += list(best)
        for j in range(k):
            recovered_features[g * k + j] = align_scale(chosen[j], truth[j]) + mu
    mixture_corr = abs_correlation(scene.mixtures.reshape(len(scene.h), -1).astype(np.float64) - mu, flat_h - mu)
    single = [mixture_corr[i, (i // k) * k : (i // k + 1) * k].max() for i in range(len(scene.h))]
    unrelated = mixture_corr_unrelated(flat_h - mu, k)
    metrics = {
        "amari_index": _summary(amari) if amari else None,
        "matched_abs_corr": _summary(matched),
        "single_mixture_abs_corr": _summary(single),
        "chance_abs_corr": _summary(unrelated),
        "grouping_known": not scene.mixing.shuffle,
    }
    return metrics, recovered_features.reshape(scene.h.shape).astype(np.float32)


def mixture_corr_unrelated(flat_h: np.ndarray, k: int) -> list[float]:
    """|corr| between each sample's features and those of a sample from another group: the chance level."""
    from datamix_cli.attacks import abs_correlation

    n = len(flat_h)
    partner = (np.arange(n) + k) % n
    return [float(abs_correlation(flat_h[i : i + 1], flat_h[partner[i] : partner[i] + 1])[0, 0]) for i in range(n)]


def attack_inversion(scene: _Scene, ica_features, epochs: int, seed: int) -> tuple[dict, dict]:
    """Decoder from features to inputs, trained on public data; each view scored next to chance baselines."""
    from datamix_cli.attacks import train_decoder

    invert = train_decoder(scene.h_pub, scene.x_pub, epochs=epochs, seed=seed)
    views = {"unmixed_baseline": (invert(scene.h), scene.x)}
    views["mixtures"] = (invert(scene.mixtures), scene.x[scene.dominant()])
    if ica_features is not None:
        views["ica_recovered"] = (invert(ica_features), scene.x)
    guesses = chance_guesses(scene.x_pub, len(scene.x), np.random.default_rng(seed))
    results, reconstructions = {}, {}
    for name, (recon, truth) in views.items():
        results[name] = scored(recon, truth, guesses)
        reconstructions[name] = recon
    return results, reconstructions


def chance_guesses(public: np.ndarray, n: int, rng: np.random.Generator) -> dict:
    """What an attacker who learned nothing from the cloud's view can output: the public mean, a random public sample."""
    return {
        "mean_public_image": np.repeat(public.mean(axis=0, keepdims=True), n, axis=0),
        "random_public_image": public[rng.choice(len(public), size=n)],
    }


def scored(recon: np.ndarray, truth: np.ndarray, guesses: dict) -> dict:
    """SSIM / PSNR of reconstructions, of each chance guess, and the advantage over the best guess."""
    from datamix_cli.attacks import image_metrics

    def both(images):
        scores = [image_metrics(r, t) for r, t in zip(images, truth)]
        return _summary([s for s, _ in scores]), _summary([p for _, p in scores])

    ssim, psnr = both(recon)
    chance = {name: dict(zip(("ssim", "psnr_db"), both(images))) for name, images in guesses.items()}
    best_ssim = max((c["ssim"]["mean"] for c in chance.values() if c["ssim"]["mean"] is not None), default=None)
    best_psnr = max(c["psnr_db"]["mean"] for c in chance.values())
    return {
        "ssim": ssim,
        "psnr_db": psnr,
        "chance": chance,
        "ssim_advantage": None if ssim["mean"] is None or best_ssim is None else ssim["mean"] - best_ssim,
        "psnr_advantage_db": psnr["mean"] - best_psnr,
    }


def attack_label(scene: _Scene, ica_features, seed: int) -> dict:
    from datamix_cli.attacks import train_label_classifier
    from datamix_cli.mixing import draw_coefficients

    clean = train_label_classifier(scene.h_pub, scene.y_pub, seed)
    public_cs = np.stack([draw_coefficients(scene.rng, scene.mixing) for _ in range(len(scene.h_pub) // scene.k)])
    public_mixtures = scene._mix(scene.h_pub, public_cs, scene.rng)
    on_mixtures = train_label_classifier(public_mixtures, scene.y_pub[dominant_sources(public_cs)], seed)
    counts = np.bincount(scene.y, minlength=scene.classes)
    results = {
        "chance": float(counts.max() / counts.sum()),
        "unmixed_baseline": float((clean(scene.h) == scene.y).mean()),
        "mixtures": float((on_mixtures(scene.mixtures) == scene.y[scene.dominant()]).mean()),
    }
    if ica_features is not None:
        results["ica_recovered"] = float((clean(ica_features) == scene.y).mean())
    return results


def label_p_value(accuracy: float, n: int, chance: float) -> float:
    """One-sided binomial p-value of ``accuracy`` on ``n`` samples if the attacker only guessed at rate ``chance``."""
    from scipy.stats import binomtest

    return float(binomtest(int(round(accuracy * n)), n, min(max(chance, 1e-9), 1 - 1e-9), alternative="greater").pvalue)


def verdict(report: dict) -> dict:
    """Leak when an attack on what DataMix sends beats chance on the same samples (never the unmixed baseline)."""
    reasons, worries = [], []
    inversion = report.get("inversion") or {}
    for view in ("mixtures", "ica_recovered"):
        if view not in inversion:
            continue
        r = inversion[view]
        ssim_adv, psnr_adv = r["ssim_advantage"], r["psnr_advantage_db"]
        if (ssim_adv is not None and ssim_adv >= SSIM_ADVANTAGE_LEAK) or psnr_adv >= PSNR_ADVANTAGE_LEAK:
            shown = "n/a" if ssim_adv is None else f"{ssim_adv:+.2f}"
            reasons.append(f"reconstructions from {view} beat chance (SSIM advantage {shown}, PSNR advantage {psnr_adv:+.1f} dB)")
        elif ssim_adv is not None and ssim_adv >= SSIM_ADVANTAGE_WORRY:
            worries.append(f"{view} reconstructions slightly above chance (SSIM advantage {ssim_adv:+.2f})")
    label = report.get("label") or {}
    n = report.get("samples", 0)
    for view in ("mixtures", "ica_recovered"):
        if view in label and n and label_p_value(label[view], n, label["chance"]) < LABEL_P_VALUE:
            reasons.append(f"labels inferred from {view} at {label[view]:.0%} (chance {label['chance']:.0%}, p < {LABEL_P_VALUE:g})")
    ica = report.get("ica")
    if ica and ica["matched_abs_corr"]["mean"] > ica["single_mixture_abs_corr"]["mean"] + ICA_MARGIN:
        reasons.append(
            f"ICA recovers features better than a single mixture gives (|corr| {ica['matched_abs_corr']['mean']:.2f} "
            f"vs {ica['single_mixture_abs_corr']['mean']:.2f})"
        )
    missing = [a for a in ATTACKS if a not in report]
    if reasons:
        status = "leaks"
    elif worries or missing:
        status = "inconclusive"
        worries += [f"attack {a} not run" for a in missing]
    else:
        status = "resists this audit"
    return {"status": status, "reasons": reasons + worries}


def run_audit(config: AuditConfig) -> dict:
    check_config(config)
    return audit_scene(build_scene(config), config)


def check_config(config: AuditConfig) -> None:
    unknown = [a for a in config.attacks if a not in ATTACKS]
    if unknown or not config.attacks:
        raise ConfigError(f"unknown attacks {', '.join(unknown) or '(none given)'}; choose from {', '.join(ATTACKS)}")
    if config.decoder_epochs < 1:
        raise ConfigError("--decoder-epochs must be >= 1")


def build_scene(config: AuditConfig) -> _Scene:
    """The audited samples and what the cloud sees of them under the split's protocol."""
    return _Scene(config)


def audit_scene(scene: _Scene, config: AuditConfig) -> dict:
    """Run the attacks on ``scene`` (tests replace what the cloud sees to build positive and negative controls)."""
    report = {
        "threat_model": __doc__.split("Threat model")[1].split("\n\n")[0].strip(" ()").replace("\n", " "),
        "samples": int(len(scene.y)),
        "public_samples": int(len(scene.y_pub)),
        "protocol": {**{k: scene.manifest.protocol[k] for k in ("k", "alpha", "kappa_max", "shuffle", "noise_sigma")}, "distribution": scene.mixing.distribution},
        "split": {"head_cut": scene.manifest.split["head_cut"], "edge_fraction": scene.manifest.flops["edge_fraction"]},
        "seed": config.seed,
    }
    ica_features, reconstructions = None, {}
    if "ica" in config.attacks:
        report["ica"], ica_features = attack_ica(scene, config.seed)
    if "inversion" in config.attacks:
        report["inversion"], reconstructions = attack_inversion(scene, ica_features, config.decoder_epochs, config.seed)
    if "label" in config.attacks:
        report["label"] = attack_label(scene, ica_features, config.seed)
    report["verdict"] = verdict(report)
    report["caveat"] = CAVEAT
    if config.report is not None:
        plot_grid(scene, ica_features, reconstructions, config.report)
    return report


def _show(array: np.ndarray) -> np.ndarray:
    """A 2-D picture of a sample or a feature map (first channel), scaled to [0, 1]."""
    image = array[0] if array.ndim == 3 else array.reshape(1, -1) if array.ndim == 1 else array
    if image.ndim == 1:
        image = image[None]
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo + 1e-12)


def plot_grid(scene: _Scene, ica_features, reconstructions: dict, path: Path, rows: int = 6) -> None:
    """original | what the cloud receives | ICA-separated | best reconstruction, for a few samples."""
    from datamix_cli.errors import require
    from datamix_cli.output import save_figure

    require("matplotlib", "plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datamix_cli.attacks import image_metrics

    rows = min(rows, len(scene.x))
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2 * rows), squeeze=False)
    titles = ("original", "cloud receives (mixture)", "ICA-separated feature", "best reconstruction")
    k = scene.k
    for i in range(rows):
        cells = [scene.x[i], scene.mixtures[scene.sent_order[i]], ica_features[i] if ica_features is not None else None]
        # Sample i's own ICA reconstruction, or the reconstruction of any mixture of its group.
        candidates = [reconstructions["ica_recovered"][i]] if "ica_recovered" in reconstructions else []
        if "mixtures" in reconstructions:
            candidates += list(reconstructions["mixtures"][(i // k) * k : (i // k + 1) * k])
        best = max(candidates, key=lambda rec: image_metrics(rec, scene.x[i])[0], default=None)
        cells.append(best)
        for j, cell in enumerate(cells):
            ax = axes[i][j]
            ax.axis("off")
            if cell is not None:
                ax.imshow(_show(cell), cmap="gray", vmin=0, vmax=1, aspect="auto" if cell.ndim < 3 else "equal")
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
