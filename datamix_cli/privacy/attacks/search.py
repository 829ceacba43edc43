"""Span search (attack ``optimisation``): the most natural vectors in the span of each group's mixtures,
fixed points of head∘decoder kept decorrelated; it does not rely on non-negativity."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from datamix_cli.privacy.attacks.decoding import pairing_pool
from datamix_cli.privacy.attacks.label import label_logits
from datamix_cli.privacy.attacks.registry import AttackContext, AttackOutcome, register
from datamix_cli.privacy.attacks.separation import feature_baselines, ica_unmix, pair_components
from datamix_cli.privacy.decoders import train_decoder
from datamix_cli.privacy.metrics import amari_index, summary
from datamix_cli.protocol.mixing import coefficient_rng, draw_coefficients

if TYPE_CHECKING:
    from datamix_cli.privacy.decoders import Decoder
    from datamix_cli.privacy.judging import Judge
    from datamix_cli.privacy.scene import Scene


# The span search (attack ``optimisation``): Adam steps and rate in whitened coordinates, the weight of the
# decorrelation term and of a public classifier's confidence. Measured (docs/audit.md): without the decorrelation
# term rows collapse onto one easy source; the confidence of the split's own model (weight 0.1 to 0.3) pulled the
# search towards confidently classified blends and doubled its cost; that of the pooled logistic regression
# (weight 0.05) changed nothing on the ResNet example and cost 0.04 |corr| on the synthetic tests: off by default.
SEARCH_STEPS, SEARCH_LR, DECORRELATION, CONFIDENCE_WEIGHT = 40, 0.1, 0.5, 0.0


def cycle_naturalness(head, decoder: Decoder, classify=None, confidence_weight: float = CONFIDENCE_WEIGHT):
    """How unnatural candidate features f are to an attacker who holds the head (torch, differentiable) and a public
    decoder: ‖head(D(f)) − f‖² / ‖f‖², plus ``confidence_weight`` × the entropy of ``classify(head(D(f)))`` (logits)
    when a classifier is given. Natural features are fixed points of head∘D; returns f -> per-vector loss."""
    import torch

    def loss(f):
        again = head(decoder.torch(f))
        value = ((again - f) ** 2).flatten(1).sum(1) / (f * f).flatten(1).sum(1).clamp_min(1e-12)
        if classify is not None:
            p = torch.softmax(classify(again), dim=1)
            value = value - confidence_weight * (p * torch.log(p.clamp_min(1e-12))).sum(1)
        return value

    return loss


def span_search(groups: np.ndarray, inits: np.ndarray, naturalness, centre: np.ndarray, shape: tuple,
                steps: int = SEARCH_STEPS, lr: float = SEARCH_LR, decorrelation: float = DECORRELATION):
    """Per group, k vectors W·M in the span of its mixtures M (k, D) that ``naturalness`` finds most natural.

    Objective per group: the mean naturalness loss of the k vectors, minus ``decorrelation`` × log det of the
    correlation matrix of the vectors less ``centre`` (the public mean feature map), over 2k: rows of W that
    collapse onto one source, or on the mean, are penalised; no sign or non-negativity is assumed. W is searched
    in whitened coordinates (f = s·A·Vᵀ with M = U·S·Vᵀ), where a step moves f by the same amount whatever the
    conditioning of M, with Adam, from the R starting points ``inits`` (G, R, k, k), each row's sign first set to
    the more natural one; after a quarter of the steps only each group's restart with the lowest objective goes on
    (chosen by the objective, never by the truth).

    Returns (W (G, k, k), features W·M (G, k, D), objective (G,)).
    """
    import torch

    g, r, k = inits.shape[:3]
    m = groups.astype(np.float64)
    u, sv, vt = np.linalg.svd(m, full_matrices=False)
    sv = np.maximum(sv, sv[:, :1] * 1e-9)
    scale = float(np.sqrt((m * m).sum(axis=2).mean()))
    basis = torch.from_numpy((vt * scale).astype(np.float32))[:, None]  # (G, 1, k, D)
    a0 = inits @ (u * sv[:, None, :])[:, None] / scale
    a0 /= np.linalg.norm(a0, axis=3, keepdims=True) + 1e-12
    centre_t = torch.from_numpy(centre.reshape(1, 1, 1, -1).astype(np.float32))

    def losses(a):
        f = a @ basis
        natural = naturalness(f.reshape(-1, *shape)).reshape(g, -1, k)
        centred = f - centre_t
        centred = centred / centred.norm(dim=3, keepdim=True).clamp_min(1e-12)
        gram = centred @ centred.transpose(2, 3) + 1e-6 * torch.eye(k)
        return natural.mean(dim=2) - decorrelation * torch.logdet(gram) / (2 * k), natural, f

    with torch.no_grad():  # a source and its negative are not equally natural: start from the better sign
        both = torch.from_numpy(np.stack([a0, -a0]).astype(np.float32))
        natural = naturalness((both @ basis).reshape(-1, *shape))
        flip = natural.reshape(2, g, r, k).argmin(dim=0).numpy()
    a = np.where(flip[..., None] == 1, -a0, a0)
    # Successive halving: all restarts for the first quarter of the steps, then only each group's best one.
    for phase_steps in (steps // 4, steps - steps // 4):
        a = torch.tensor(a, dtype=torch.float32, requires_grad=True)
        optimizer = torch.optim.Adam([a], lr=lr)
        for _ in range(phase_steps):
            objective = losses(a)[0]
            optimizer.zero_grad()
            objective.sum().backward()
            optimizer.step()
        with torch.no_grad():
            objective, _, f = losses(a)
        best = objective.argmin(dim=1).numpy()
        a = a.detach().numpy()[np.arange(g), best][:, None]
    a_best = a[:, 0].astype(np.float64)
    w = a_best @ (np.transpose(u, (0, 2, 1)) / sv[:, :, None]) * scale
    return w, f.numpy()[np.arange(g), best], objective.numpy()[np.arange(g), best]


def attack_optimisation(scene: Scene, decoder: Decoder | None, judge: Judge, seed: int, decoder_epochs: int,
                        search_steps: int = SEARCH_STEPS) -> tuple[dict, np.ndarray]:
    """Per (apparent) group, the k vectors W·M in the span of its mixtures that are most natural to the attacker:
    fixed points of head∘D (the head's weights, D the unmixed public decoder) and decorrelated
    (attacks.span_search), from three starts. No non-negativity is assumed. The features are paired with samples as separation's are, decoded
    with D and scored with best-of-pool chance."""
    k, n = scene.k, len(scene.h)
    if decoder is None:  # normally the inversion attack's, trained on the same pairs with the same seed
        decoder = train_decoder(scene.h_pub, scene.x_pub, epochs=decoder_epochs, seed=seed)
    mu = scene.h_pub.reshape(len(scene.h_pub), -1).mean(axis=0)
    sent = scene.mixtures[scene.sent_order].reshape(n // k, k, -1)
    rng = coefficient_rng(seed + 5)
    # Starts: the mixtures themselves, FastICA's unmixing, and the inverse of a C drawn as the protocol draws them.
    inits = np.stack([np.stack([np.eye(k), ica_unmix(rows.astype(np.float64) - mu, seed)[0], np.linalg.inv(draw_coefficients(rng, scene.mixing))])
                      for rows in sent])
    classify = label_logits(scene.h_pub, scene.y_pub, seed) if CONFIDENCE_WEIGHT else None
    naturalness = cycle_naturalness(scene.head_module(), decoder, classify)
    w, features, objective = span_search(sent, inits, naturalness, mu, scene.h.shape[1:], steps=search_steps)
    matched, paired = pair_components(scene, list(features.astype(np.float64)), mu, align=False)
    recon = decoder(paired.reshape(scene.h.shape).astype(np.float32))
    metrics = {
        "truth_used_for": "pairing features with samples",
        "amari_index": None if scene.mixing.shuffle else summary([amari_index(w[g], scene.cs[g]) for g in range(n // k)]),
        "matched_abs_corr": summary(matched),
        **feature_baselines(scene, mu),
        "objective": summary(objective),
        "restarts": int(inits.shape[1]),
        "steps": search_steps,
        **judge(recon, pool=pairing_pool(scene)),
    }
    return metrics, recon


@register("optimisation", "span search: fixed points of head∘decoder in each group's span, decorrelated", order=50)
def run(ctx: AttackContext) -> AttackOutcome:
    metrics, reconstruction = attack_optimisation(ctx.scene, ctx.decoder, ctx.judge, ctx.seed, ctx.decoder_epochs, ctx.search_steps)
    metrics["decoder"] = "the inversion attack's" if ctx.decoder is not None else "its own (inversion not run)"
    return AttackOutcome(metrics, reconstructions={"optimisation": reconstruction})
