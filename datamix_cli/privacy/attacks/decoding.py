"""Decoders from what the cloud receives to inputs (attacks ``inversion``, ``adaptive`` and ``group``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from datamix_cli.privacy.attacks.registry import AttackContext, AttackOutcome, register
from datamix_cli.privacy.decoders import group_stack, match_outputs, permutation_invariant_mse, train_decoder
from datamix_cli.protocol.mixing import coefficient_rng

if TYPE_CHECKING:
    from datamix_cli.privacy.judging import Judge
    from datamix_cli.privacy.scene import Scene


def attack_inversion(scene: Scene, separated, judge: Judge, epochs: int, seed: int) -> tuple[dict, dict, object]:
    """Decoder from features to inputs, trained on unmixed public pairs; each view scored next to chance baselines.
    Returns (metrics, reconstructions by view, the decoder)."""
    invert = train_decoder(scene.h_pub, scene.x_pub, epochs=epochs, seed=seed)
    views = {"unmixed_baseline": (invert(scene.h), None, None), "mixtures": (invert(scene.mixtures), scene.dominant(), None)}
    if separated is not None:
        views["separated"] = (invert(separated), None, pairing_pool(scene))
    results = {name: judge(recon, targets, pool) for name, (recon, targets, pool) in views.items()}
    return results, {name: recon for name, (recon, _, _) in views.items()}, invert


def pairing_pool(scene: Scene) -> int:
    """How many candidates a truth-based pairing picks each sample's from: its group's k, or all N when shuffled."""
    return len(scene.h) if scene.mixing.shuffle else scene.k


def attack_adaptive(scene: Scene, judge: Judge, epochs: int, seed: int) -> tuple[dict, np.ndarray]:
    """The same decoder trained on what the cloud sees: public groups mixed as the protocol mixes (fresh C, fresh
    groups every epoch), each mixture's target its dominant input; applied to the audited mixtures."""
    rng = coefficient_rng(seed + 1)  # the attacker's own draws, independent of the audited C

    def pairs(_epoch=0):
        mixtures, dominant = scene.simulate_public_dominant(rng)
        return mixtures, scene.x_pub[dominant]

    invert = train_decoder(*pairs(), epochs=epochs, seed=seed, resample=pairs)
    recon = invert(scene.mixtures)
    return {**judge(recon, scene.dominant()), "target": "each mixture's dominant input"}, recon


def attack_group(scene: Scene, judge: Judge, epochs: int, seed: int) -> tuple[dict, np.ndarray | None]:
    """A decoder from a group's k mixtures (stacked along channels) to k inputs, trained on simulated public groups
    (fresh groups and C every epoch) with the MSE of the best assignment of outputs to inputs; its k outputs are
    paired with the group's k inputs by the truth (Hungarian on MSE), so chance is the best of k guesses.
    Needs the grouping: with shuffling it is skipped."""
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


@register("inversion", "a decoder trained on unmixed public features, applied to mixtures and separated features", order=20)
def run_inversion(ctx: AttackContext) -> AttackOutcome:
    metrics, reconstructions, decoder = attack_inversion(ctx.scene, ctx.separated, ctx.judge, ctx.decoder_epochs, ctx.seed)
    return AttackOutcome(metrics, reconstructions=reconstructions, decoder=decoder)


@register("adaptive", "the same decoder trained on public groups mixed as the protocol mixes (fresh C every epoch)", order=30)
def run_adaptive(ctx: AttackContext) -> AttackOutcome:
    metrics, reconstruction = attack_adaptive(ctx.scene, ctx.judge, ctx.decoder_epochs, ctx.seed)
    return AttackOutcome(metrics, reconstructions={"adaptive": reconstruction})


@register("group", "a whole-group decoder with a permutation-invariant loss (needs the grouping)", order=40)
def run_group(ctx: AttackContext) -> AttackOutcome:
    metrics, reconstruction = attack_group(ctx.scene, ctx.judge, ctx.decoder_epochs, ctx.seed)
    return AttackOutcome(metrics, reconstructions={"group": reconstruction})
