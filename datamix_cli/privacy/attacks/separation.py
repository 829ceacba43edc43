"""Blind source separation of each group's mixtures (attack ``separation``).

After a ReLU the features are non-negative and successive projections recover C exactly from one group's
mixtures; otherwise FastICA. Also the helpers span search shares: pairing recovered components with samples and
the baselines recovered features are set against."""

from __future__ import annotations

import warnings

from typing import TYPE_CHECKING

import numpy as np

from datamix_cli.errors import require
from datamix_cli.privacy.attacks.registry import AttackContext, AttackOutcome, register
from datamix_cli.privacy.metrics import abs_correlation, align_scale, amari_index, match_sources, summary
from datamix_cli.protocol.mixing import coefficient_rng, noise_std

if TYPE_CHECKING:
    from datamix_cli.privacy.scene import Scene


def ica_unmix(mixtures: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """FastICA on one group: mixtures (k, D) with the D feature positions as observations.

    Returns (W, sources): the estimated k×k unmixing and the recovered sources (k, D).
    """
    decomposition = require("sklearn.decomposition", "data")
    k = mixtures.shape[0]
    ica = decomposition.FastICA(n_components=k, whiten="unit-variance", max_iter=400, tol=1e-4, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: a non-converged ICA is simply a weaker attack
        sources = ica.fit_transform(mixtures.T.astype(np.float64))
    return ica.components_, sources.T


def is_nonnegative(features: np.ndarray, tolerance: float = 1e-3) -> bool:
    """Whether (public) features are non-negative, as after a ReLU: at most ``tolerance`` of the entries below zero."""
    return bool(np.mean(features < 0) <= tolerance)


def successive_projections(points: np.ndarray, k: int) -> list[int]:
    """Successive projection algorithm (Araújo et al. 2001; Gillis & Vavasis 2014): indices of k extreme columns.

    For columns that are convex combinations of k linearly independent vertices, where each vertex occurs
    among the columns, the picks are exactly those vertices: the largest-norm column is a vertex, and so is
    the largest-norm column after projecting out the vertices already found.
    """
    residual = points.copy()
    picks = []
    for _ in range(k):
        j = int(np.argmax(np.einsum("ij,ij->j", residual, residual)))
        picks.append(j)
        direction = residual[:, j] / (np.linalg.norm(residual[:, j]) + 1e-300)
        residual -= np.outer(direction, direction @ residual)
    return picks


def separable_unmix(mixtures: np.ndarray, rows_sum_to_one: bool, noise_sigma: float = 0.0, floor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative blind separation of one group: mixtures M (k, D) = C·H with H >= 0, C unknown.

    Where the sources have exact zeros (ReLU features: about a third of the entries), some feature positions
    carry one source alone; their columns of M point along a column of C, the extreme rays of the cone of
    M's columns. Scaled onto a hyperplane those rays are vertices of a simplex, which successive projections
    find exactly. The scale of each column of C is fixed by what the protocol guarantees: rows summing to
    one (Dirichlet) or unit columns (orthogonal). Returns (W, sources): W ≈ C⁻¹ up to the order of the
    sources, and max(W·M, 0), since the sources are known to be non-negative. No ground truth is used.

    Columns whose projection on the mean direction is below ``floor``·σ·√k (σ the protocol's noise) are
    left out: scaled onto the hyperplane, they are mostly noise.
    """
    k = mixtures.shape[0]
    m = mixtures.astype(np.float64)
    # The mean column lies inside the cone when CᵀC >= 0 (true for both protocol distributions), so every
    # non-zero column has a positive projection on it.
    u = m.mean(axis=1)
    u /= np.linalg.norm(u) + 1e-300
    weight = u @ m
    keep = weight > max(1e-9 * max(weight.max(), 0.0), floor * noise_sigma * np.sqrt(k))
    if keep.sum() < k:
        return np.eye(k), np.maximum(m, 0)
    points = m[:, keep] / weight[keep]
    rays = points[:, successive_projections(points, k)]
    if np.linalg.matrix_rank(rays) < k:
        return np.eye(k), np.maximum(m, 0)
    if rows_sum_to_one:  # C = rays·diag(d) with C·1 = 1
        c = rays * np.linalg.solve(rays, np.ones(k))
    else:
        c = rays / np.linalg.norm(rays, axis=0)
    w = np.linalg.inv(c)
    return w, np.maximum(w @ m, 0)


NOISE_FLOORS = (1.0, 3.0)  # candidate noise floors of non-negative separation, in units of σ·√k


def attack_separation(scene: Scene, seed: int) -> tuple[dict, np.ndarray]:
    """Blind source separation per (apparent) group; returns metrics and the recovered features, paired with their samples.

    Non-negative (successive projections, scale from the protocol) when the public features are non-negative,
    as after a ReLU; FastICA otherwise. Metrics compare features after removing the public mean feature map,
    the structure every sample shares.
    """
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


def feature_baselines(scene: Scene, mu: np.ndarray) -> dict:
    """What recovered features are set against (after removing the public mean feature map): the |corr| a single
    mixture already has with its strongest source, and the |corr| between unrelated samples (chance)."""
    k, n = scene.k, len(scene.h)
    flat_h = scene.h.reshape(n, -1).astype(np.float64) - mu
    mixture_corr = abs_correlation(scene.mixtures.reshape(n, -1).astype(np.float64) - mu, flat_h)
    single = [mixture_corr[i, (i // k) * k : (i // k + 1) * k].max() for i in range(n)]
    return {"single_mixture_abs_corr": summary(single), "chance_abs_corr": summary(mixture_corr_unrelated(flat_h, k))}


def noise_floor(scene: Scene, mu: np.ndarray, seed: int, groups: int = 16) -> float:
    """The noise floor of non-negative separation (in units of σ·√k) that recovers simulated public groups best,
    as an attacker who knows the protocol's σ would pick it. Without noise there is nothing to pick."""
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
    return float(noise_std(mixing, rows)[0]) if mixing.noisy else 0.0


def pair_components(scene: Scene, components: list, mu: np.ndarray, align: bool) -> tuple[list, np.ndarray]:
    """Pair each sample with a recovered component (Hungarian matching in its group, or the best anywhere when the
    grouping is unknown); ``align`` also fits sign, scale and offset to the truth (ICA leaves them undetermined)."""
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
    n = len(flat_h)
    partner = (np.arange(n) + k) % n
    return [float(abs_correlation(flat_h[i : i + 1], flat_h[partner[i] : partner[i] + 1])[0, 0]) for i in range(n)]


@register("separation", "per group, non-negative successive projections (post-ReLU) or FastICA; recovers C", order=10)
def run(ctx: AttackContext) -> AttackOutcome:
    metrics, separated = attack_separation(ctx.scene, ctx.seed)
    return AttackOutcome(metrics, separated=separated)
