"""``datamix audit``: what an honest-but-curious cloud can recover from a split.

Threat model (worst case for the user): the cloud knows the architecture and
the edge weights (it has ``edge/head.pt``), sees every mixture and, unless
shuffling is on, which group each came from, and holds public data from the
same distribution: the split's training part, disjoint from the held-out
samples audited here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.privacy.attacks import SEARCH_STEPS
from datamix_cli.errors import ConfigError
from datamix_cli.privacy.judging import ATTACKS, Judge, best_attacks, summary, verdict

NOISE_FLOORS = (1.0, 3.0)  # candidate noise floors of non-negative separation, in units of σ·√k
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


MAX_PUBLIC_SAMPLES = 20000  # the attacker's public data is read into memory; a huge folder is capped


class _Scene:
    """The audited samples, what the cloud saw, and the truth to score attacks against."""

    def __init__(self, config: AuditConfig):
        from datamix_cli.data.datasets import split_datasets
        from datamix_cli.artifacts.manifest import load_manifest
        from datamix_cli.protocol.mixing import MixingConfig, coefficient_rng, draw_coefficients
        from exporters import get_exporter

        self.folder = Path(config.folder)
        self.manifest = load_manifest(self.folder, roles=("head", "cloud", "tail", "decoys"))
        p = self.manifest.protocol
        self.k = p["k"]
        self.mixing = MixingConfig.from_protocol(p)
        runner = get_exporter("torchscript").load
        head, cloud, tail = (runner(self._artifact(role)) for role in ("head", "cloud", "tail"))
        k, eye = self.k, np.eye(self.k, dtype=np.float32)
        self.features = lambda x: np.concatenate([head(x[i : i + k], eye) for i in range(0, len(x), k)])
        # The split's own model at C = I, the classifier that judges reconstructions (in groups of the artifacts' k).
        self.scores = lambda x: np.concatenate([tail(cloud(head(x[i : i + k], eye)), eye) for i in range(0, len(x), k)])
        self.artifact_k = k
        shape = tuple(self.manifest.model["input_shape"][1:])
        # The split's own data, preprocessing and holdout (or its --eval-data set); --data replaces the data set.
        public, private = split_datasets(self.manifest, shape, config.data)
        n_pub = min(len(public.y), MAX_PUBLIC_SAMPLES)
        n_pub -= n_pub % self.k
        n_priv = min(config.samples, len(private.y))
        n_priv -= n_priv % self.k
        if n_priv < self.k:
            raise ConfigError(f"need at least k={self.k} held-out samples to audit, have {len(private.y)}")
        self.x_pub, self.y_pub = np.asarray(public.x[:n_pub]), public.y[:n_pub]
        self.x, self.y = np.asarray(private.x[:n_priv]), private.y[:n_priv]
        self.classes = len(self.manifest.model["class_labels"])
        self.h_pub, self.h = self.features(self.x_pub), self.features(self.x)
        rng = coefficient_rng(config.seed)
        self.cs = np.stack([draw_coefficients(rng, self.mixing) for _ in range(n_priv // self.k)])
        self.mixtures = self._mix(self.h, self.cs, rng)
        self.sent_order = rng.permutation(n_priv) if self.mixing.shuffle else np.arange(n_priv)
        self.rng = rng

    def _mix(self, h, cs, rng):
        """Mixtures of ``h`` grouped by ``cs``, in float32 as the edge's head artifact mixes. (The adaptive attacker
        re-mixes all public features every epoch: 0.04 s in float32 against 1.1 s in float64 on the ResNet example.)"""
        from datamix_cli.protocol.mixing import add_noise, mix

        groups = h.reshape(len(cs), self.k, *h.shape[1:]).astype(np.float32, copy=False)
        m = mix(cs.astype(np.float32), groups).reshape(h.shape)
        return add_noise(self.mixing, m, lambda shape: rng.standard_normal(shape, dtype=np.float32))[0]

    def _artifact(self, role: str) -> Path:
        return self.folder / self.manifest.artifact(role, "torchscript")["path"]

    def classify(self, images: np.ndarray) -> np.ndarray:
        """The split's model's labels for ``images`` (any number: padded to whole groups)."""
        pad = -len(images) % self.artifact_k
        padded = np.concatenate([images, np.repeat(images[:1], pad, axis=0)]) if pad else images
        return self.scores(padded.astype(np.float32, copy=False)).argmax(axis=1)[: len(images)]

    def head_module(self):
        """The head as a differentiable torch module, x -> features (the attacker holds its weights)."""
        import warnings

        import torch

        with warnings.catch_warnings():  # torch >= 2.14 warns on every load that TorchScript is deprecated
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated")
            module = torch.jit.load(str(self._artifact("head")), map_location="cpu").eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        return module.head  # HeadWithMix keeps the plain head, which takes any batch (datamix_cli/protocol/edge_modules.py)

    def dominant(self) -> np.ndarray:
        return dominant_sources(self.cs)

    def simulate_public(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Public samples in fresh random groups, mixed exactly as the protocol mixes: (mixtures, order, cs), the
        mixtures of ``h_pub[order]`` grouped by k and mixed by ``cs``."""
        from datamix_cli.protocol.mixing import draw_batch

        order = rng.permutation(len(self.h_pub))
        cs = draw_batch(rng, self.mixing, len(order) // self.k)
        return self._mix(self.h_pub[order], cs, rng), order, cs

    def simulate_public_dominant(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Simulated public mixtures and, for each, the index of its dominant public sample."""
        mixtures, order, cs = self.simulate_public(rng)
        return mixtures, order[dominant_sources(cs)]


def attack_separation(scene: _Scene, seed: int) -> tuple[dict, np.ndarray]:
    """Blind source separation per (apparent) group; returns metrics and the recovered features, paired with their samples.

    Non-negative (successive projections, scale from the protocol) when the public features are non-negative,
    as after a ReLU; FastICA otherwise. Metrics compare features after removing the public mean feature map,
    the structure every sample shares.
    """
    from datamix_cli.privacy.attacks import amari_index, ica_unmix, is_nonnegative, separable_unmix

    k, n = scene.k, len(scene.h)
    nonnegative = is_nonnegative(scene.h_pub)
    # With Dirichlet rows (summing to one) m - mu = C(h - mu): removing the public mean keeps the mixing intact
    # and strips what all samples share, which would break ICA's independence assumption. (For an orthogonal C
    # this is only approximate; FastICA centres each mixture itself anyway.) Non-negative separation needs the
    # raw mixtures: their zeros are what identifies C.
    mu = scene.h_pub.reshape(len(scene.h_pub), -1).mean(axis=0)
    sent = scene.mixtures[scene.sent_order].reshape(n, -1).astype(np.float64)
    floor = noise_floor(scene, mu, seed) if nonnegative else None
    amari, components = [], []
    for g in range(n // k):
        rows = sent[g * k : (g + 1) * k]
        if nonnegative:
            w, recovered = separable_unmix(rows, scene.mixing.distribution == "dirichlet", group_sigma(scene.mixing, rows), floor)
        else:
            w, recovered = ica_unmix(rows - mu, seed)
            recovered = recovered + mu  # back in feature space; sign and scale are fixed against the truth below
        components.append(recovered)
        if not scene.mixing.shuffle:
            amari.append(amari_index(w, scene.cs[g]))
    matched, recovered_features = pair_components(scene, components, mu, align=not nonnegative)
    metrics = {
        "method": "non-negative (successive projections)" if nonnegative else "FastICA",
        "negative_share": float(np.mean(scene.h_pub < 0)),
        "noise_floor": floor,
        "truth_used_for": "pairing components with samples" if nonnegative else "pairing, sign, scale and offset (an upper bound)",
        "amari_index": summary(amari) if amari else None,
        "matched_abs_corr": summary(matched),
        **feature_baselines(scene, mu),
        "grouping_known": not scene.mixing.shuffle,
    }
    return metrics, recovered_features.reshape(scene.h.shape).astype(np.float32)


def feature_baselines(scene: _Scene, mu: np.ndarray) -> dict:
    """What recovered features are set against (after removing the public mean feature map): the |corr| a single
    mixture already has with its strongest source, and the |corr| between unrelated samples (chance)."""
    from datamix_cli.privacy.attacks import abs_correlation

    k, n = scene.k, len(scene.h)
    flat_h = scene.h.reshape(n, -1).astype(np.float64) - mu
    mixture_corr = abs_correlation(scene.mixtures.reshape(n, -1).astype(np.float64) - mu, flat_h)
    single = [mixture_corr[i, (i // k) * k : (i // k + 1) * k].max() for i in range(n)]
    return {"single_mixture_abs_corr": summary(single), "chance_abs_corr": summary(mixture_corr_unrelated(flat_h, k))}


def noise_floor(scene: _Scene, mu: np.ndarray, seed: int, groups: int = 16) -> float:
    """The noise floor of non-negative separation (in units of σ·√k) that recovers simulated public groups best,
    as an attacker who knows the protocol's σ would pick it. Without noise there is nothing to pick."""
    from datamix_cli.privacy.attacks import match_sources, separable_unmix
    from datamix_cli.protocol.mixing import coefficient_rng

    if not scene.mixing.noisy:
        return 1.0
    mixtures, order, _ = scene.simulate_public(coefficient_rng(seed + 3))
    k, dirichlet = scene.k, scene.mixing.distribution == "dirichlet"
    flat, truth = mixtures.reshape(len(mixtures), -1), scene.h_pub[order].reshape(len(order), -1) - mu
    rows = [slice(g * k, (g + 1) * k) for g in range(min(groups, len(order) // k))]

    def recovery(floor):
        recovered = [separable_unmix(flat[r], dirichlet, group_sigma(scene.mixing, flat[r]), floor)[1] - mu for r in rows]
        return np.mean([match_sources(rec, truth[r])[1].mean() for rec, r in zip(recovered, rows)])

    return max(NOISE_FLOORS, key=recovery)


def group_sigma(mixing, rows: np.ndarray) -> float:
    """The noise std of one group as the attacker estimates it from what it receives (relative noise scales with the
    group's RMS, which the noise itself barely changes)."""
    from datamix_cli.protocol.mixing import noise_std

    return float(noise_std(mixing, rows)[0]) if mixing.noisy else 0.0


def pair_components(scene: _Scene, components: list, mu: np.ndarray, align: bool) -> tuple[list, np.ndarray]:
    """Pair each sample with a recovered component (Hungarian matching in its group, or the best anywhere when the
    grouping is unknown); ``align`` also fits sign, scale and offset to the truth (ICA leaves them undetermined)."""
    from datamix_cli.privacy.attacks import abs_correlation, align_scale, match_sources

    k, n = scene.k, len(scene.h)
    flat_h = scene.h.reshape(n, -1).astype(np.float64)
    pool = np.concatenate(components)
    matched, paired = [], np.empty_like(flat_h)
    for g in range(n // k):
        truth = flat_h[g * k : (g + 1) * k]
        if scene.mixing.shuffle:
            corr = abs_correlation(pool - mu, truth - mu)
            best, chosen = corr.max(axis=0), pool[corr.argmax(axis=0)]
        else:
            order, best = match_sources(components[g] - mu, truth - mu)
            chosen = components[g][order]
        matched += list(best)
        for j in range(k):
            paired[g * k + j] = align_scale(chosen[j] - mu, truth[j] - mu) + mu if align else chosen[j]
    return matched, paired


def mixture_corr_unrelated(flat_h: np.ndarray, k: int) -> list[float]:
    """|corr| between each sample's features and those of a sample from another group: the chance level."""
    from datamix_cli.privacy.attacks import abs_correlation

    n = len(flat_h)
    partner = (np.arange(n) + k) % n
    return [float(abs_correlation(flat_h[i : i + 1], flat_h[partner[i] : partner[i] + 1])[0, 0]) for i in range(n)]


def attack_inversion(scene: _Scene, separated, judge: Judge, epochs: int, seed: int) -> tuple[dict, dict, object]:
    """Decoder from features to inputs, trained on unmixed public pairs; each view scored next to chance baselines.
    Returns (metrics, reconstructions by view, the decoder)."""
    from datamix_cli.privacy.attacks import train_decoder

    invert = train_decoder(scene.h_pub, scene.x_pub, epochs=epochs, seed=seed)
    views = {"unmixed_baseline": (invert(scene.h), None, None), "mixtures": (invert(scene.mixtures), scene.dominant(), None)}
    if separated is not None:
        views["separated"] = (invert(separated), None, pairing_pool(scene))
    results = {name: judge(recon, targets, pool) for name, (recon, targets, pool) in views.items()}
    return results, {name: recon for name, (recon, _, _) in views.items()}, invert


def pairing_pool(scene: _Scene) -> int:
    """How many candidates a truth-based pairing picks each sample's from: its group's k, or all N when shuffled."""
    return len(scene.h) if scene.mixing.shuffle else scene.k


def attack_adaptive(scene: _Scene, judge: Judge, epochs: int, seed: int) -> tuple[dict, np.ndarray]:
    """The same decoder trained on what the cloud sees: public groups mixed as the protocol mixes (fresh C, fresh
    groups every epoch), each mixture's target its dominant input; applied to the audited mixtures."""
    from datamix_cli.privacy.attacks import train_decoder
    from datamix_cli.protocol.mixing import coefficient_rng

    rng = coefficient_rng(seed + 1)  # the attacker's own draws, independent of the audited C

    def pairs(_epoch=0):
        mixtures, dominant = scene.simulate_public_dominant(rng)
        return mixtures, scene.x_pub[dominant]

    invert = train_decoder(*pairs(), epochs=epochs, seed=seed, resample=pairs)
    recon = invert(scene.mixtures)
    return {**judge(recon, scene.dominant()), "target": "each mixture's dominant input"}, recon


def attack_group(scene: _Scene, judge: Judge, epochs: int, seed: int) -> tuple[dict, np.ndarray | None]:
    """A decoder from a group's k mixtures (stacked along channels) to k inputs, trained on simulated public groups
    (fresh groups and C every epoch) with the MSE of the best assignment of outputs to inputs; its k outputs are
    paired with the group's k inputs by the truth (Hungarian on MSE), so chance is the best of k guesses.
    Needs the grouping: with shuffling it is skipped."""
    from datamix_cli.privacy.attacks import group_stack, match_outputs, permutation_invariant_mse, train_decoder
    from datamix_cli.protocol.mixing import coefficient_rng

    if scene.mixing.shuffle:
        return {"skipped": "the split shuffles mixtures, so the cloud does not know which k form a group"}, None
    k = scene.k
    rng = coefficient_rng(seed + 4)

    def pairs(_epoch=0):
        mixtures, order, _ = scene.simulate_public(rng)
        return group_stack(mixtures, k), group_stack(scene.x_pub[order], k)

    # Batches of 64 / k groups: as many inputs per step, and steps per epoch, as the other decoders.
    decode = train_decoder(*pairs(), epochs=epochs, seed=seed, batch=max(1, 64 // k), resample=pairs, loss=permutation_invariant_mse(k))
    outputs = decode(group_stack(scene.mixtures, k)).reshape(scene.x.shape)
    recon = np.empty_like(outputs)
    for g in range(len(outputs) // k):
        rows = slice(g * k, (g + 1) * k)
        recon[rows] = outputs[rows][match_outputs(outputs[rows], scene.x[rows])]
    return {**judge(recon, pool=k), "target": "the group's k inputs, paired by the truth"}, recon


def attack_optimisation(scene: _Scene, decoder, judge: Judge, config: AuditConfig) -> tuple[dict, np.ndarray]:
    """Per (apparent) group, the k vectors W·M in the span of its mixtures that are most natural to the attacker:
    fixed points of head∘D (the head's weights, D the unmixed public decoder) and decorrelated
    (attacks.span_search), from three starts. No non-negativity is assumed. The features are paired with samples as separation's are, decoded
    with D and scored with best-of-pool chance."""
    from datamix_cli.privacy.attacks import CONFIDENCE_WEIGHT, amari_index, cycle_naturalness, ica_unmix, label_logits, span_search, train_decoder
    from datamix_cli.protocol.mixing import coefficient_rng, draw_coefficients

    k, n, seed = scene.k, len(scene.h), config.seed
    if decoder is None:  # normally the inversion attack's, trained on the same pairs with the same seed
        decoder = train_decoder(scene.h_pub, scene.x_pub, epochs=config.decoder_epochs, seed=seed)
    mu = scene.h_pub.reshape(len(scene.h_pub), -1).mean(axis=0)
    sent = scene.mixtures[scene.sent_order].reshape(n // k, k, -1)
    rng = coefficient_rng(seed + 5)
    # Starts: the mixtures themselves, FastICA's unmixing, and the inverse of a C drawn as the protocol draws them.
    inits = np.stack([np.stack([np.eye(k), ica_unmix(rows.astype(np.float64) - mu, seed)[0], np.linalg.inv(draw_coefficients(rng, scene.mixing))])
                      for rows in sent])
    classify = label_logits(scene.h_pub, scene.y_pub, seed) if CONFIDENCE_WEIGHT else None
    naturalness = cycle_naturalness(scene.head_module(), decoder, classify)
    w, features, objective = span_search(sent, inits, naturalness, mu, scene.h.shape[1:], steps=config.search_steps)
    matched, paired = pair_components(scene, list(features.astype(np.float64)), mu, align=False)
    recon = decoder(paired.reshape(scene.h.shape).astype(np.float32))
    metrics = {
        "truth_used_for": "pairing features with samples",
        "amari_index": None if scene.mixing.shuffle else summary([amari_index(w[g], scene.cs[g]) for g in range(n // k)]),
        "matched_abs_corr": summary(matched),
        **feature_baselines(scene, mu),
        "objective": summary(objective),
        "restarts": int(inits.shape[1]),
        "steps": config.search_steps,
        **judge(recon, pool=pairing_pool(scene)),
    }
    return metrics, recon


def attack_label(scene: _Scene, separated, seed: int) -> dict:
    from datamix_cli.privacy.attacks import train_label_classifier
    from datamix_cli.protocol.mixing import coefficient_rng

    clean = train_label_classifier(scene.h_pub, scene.y_pub, seed)
    public_mixtures, dominant = scene.simulate_public_dominant(coefficient_rng(seed + 2))
    on_mixtures = train_label_classifier(public_mixtures, scene.y_pub[dominant], seed)
    counts = np.bincount(scene.y, minlength=scene.classes)
    results = {
        "chance": float(counts.max() / counts.sum()),
        "unmixed_baseline": float((clean(scene.h) == scene.y).mean()),
        "mixtures": float((on_mixtures(scene.mixtures) == scene.y[scene.dominant()]).mean()),
    }
    if separated is not None:
        results["separated"] = float((clean(separated) == scene.y).mean())
    return results


def run_audit(config: AuditConfig) -> dict:
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


def build_scene(config: AuditConfig) -> _Scene:
    """The audited samples and what the cloud sees of them under the split's protocol."""
    return _Scene(config)


def audit_scene(scene: _Scene, config: AuditConfig) -> dict:
    """Run the attacks on ``scene`` (tests replace what the cloud sees to build positive and negative controls)."""
    report = {
        "threat_model": __doc__.split("Threat model (worst case for the user): ")[1].split("\n\n")[0].replace("\n", " "),
        "samples": int(len(scene.y)),
        "public_samples": int(len(scene.y_pub)),
        "protocol": {**{k: scene.manifest.protocol[k] for k in ("k", "alpha", "kappa_max", "shuffle", "noise_sigma")},
                     "noise_relative": scene.mixing.noise_relative, "distribution": scene.mixing.distribution},
        "split": {"head_cut": scene.manifest.split["head_cut"], "edge_fraction": scene.manifest.flops["edge_fraction"]},
        "seed": config.seed,
    }
    timing, separated, reconstructions, decoder = {}, None, {}, None

    def timed(name, attack, *args):
        start = time.perf_counter()
        result = attack(*args)
        timing[name] = time.perf_counter() - start
        return result

    judge = Judge(scene, config.seed)
    report["classifier"] = {"accuracy_on_inputs": float((judge.predicted == scene.y).mean()),
                            "chance": float(np.bincount(scene.y).max() / len(scene.y))}
    if "separation" in config.attacks:
        report["separation"], separated = timed("separation", attack_separation, scene, config.seed)
    if "inversion" in config.attacks:
        report["inversion"], reconstructions, decoder = timed("inversion", attack_inversion, scene, separated, judge, config.decoder_epochs, config.seed)
    if "adaptive" in config.attacks:
        report["adaptive"], reconstructions["adaptive"] = timed("adaptive", attack_adaptive, scene, judge, config.decoder_epochs, config.seed)
    if "group" in config.attacks:
        report["group"], reconstructions["group"] = timed("group", attack_group, scene, judge, config.decoder_epochs, config.seed)
    if "optimisation" in config.attacks:
        report["optimisation"], reconstructions["optimisation"] = timed("optimisation", attack_optimisation, scene, decoder, judge, config)
        report["optimisation"]["decoder"] = "the inversion attack's" if decoder is not None else "its own (inversion not run)"
    if "label" in config.attacks:
        report["label"] = timed("label", attack_label, scene, separated, config.seed)
    report["best"] = best_attacks(report)
    report["verdict"] = verdict(report)
    report["timing_s"] = timing
    report["caveat"] = CAVEAT
    if config.report is not None:
        plot_grid(scene, separated, reconstructions, config.report)
    return report


def _show(array: np.ndarray) -> np.ndarray:
    """A 2-D picture of a sample or a feature map (first channel), scaled to [0, 1]."""
    image = array[0] if array.ndim == 3 else array.reshape(1, -1) if array.ndim == 1 else array
    if image.ndim == 1:
        image = image[None]
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo + 1e-12)


def plot_grid(scene: _Scene, separated, reconstructions: dict, path: Path, rows: int = 6) -> None:
    """original | what the cloud receives | separated feature | best reconstruction, for a few samples."""
    from datamix_cli.errors import require
    from datamix_cli.artifacts.staging import save_figure

    require("matplotlib", "plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datamix_cli.privacy.attacks import image_metrics

    rows = min(rows, len(scene.x))
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2 * rows), squeeze=False)
    titles = ("original", "cloud receives (mixture)", "separated feature", "best reconstruction")
    k = scene.k
    for i in range(rows):
        cells = [scene.x[i], scene.mixtures[scene.sent_order[i]], separated[i] if separated is not None else None]
        # Sample i's own reconstruction by the views paired with samples, or that of any mixture of its group.
        candidates = [reconstructions[view][i] for view in ("separated", "group", "optimisation") if reconstructions.get(view) is not None]
        for view in ("mixtures", "adaptive"):
            if view in reconstructions:
                candidates += list(reconstructions[view][(i // k) * k : (i // k + 1) * k])
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
