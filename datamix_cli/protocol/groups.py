"""Groups on the wire: decoys that pad a partial group, shuffling mixtures across groups, and which input
dominates each mixture. Pure NumPy (``dominant_sources`` takes torch too)."""

from __future__ import annotations

import numpy as np

from datamix_cli.errors import ProtocolError


def shuffle_permutation(rng: np.random.Generator, n: int) -> np.ndarray:
    """A permutation of the n mixtures of a batch, hiding which mixtures share a group."""
    return rng.permutation(n)


def unshuffle(values, permutation: np.ndarray):
    """Undo ``values[permutation]``."""
    inverse = np.empty_like(permutation)
    inverse[permutation] = np.arange(len(permutation))
    return values[inverse]


def pad_with_decoys(x: np.ndarray, decoys: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Fill the last group of ``x`` up to a multiple of k with random decoys; returns (padded, n_real)."""
    n = len(x)
    chosen = decoy_padding(n, decoys, k, rng)
    if not len(chosen):
        return x, n
    return np.concatenate([x, chosen.astype(x.dtype)]), n


def decoy_padding(n: int, decoys: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The random decoys that fill n samples up to a multiple of k (none when n already is one)."""
    missing = (-n) % k
    if missing == 0:
        return decoys[:0]
    if len(decoys) == 0:
        raise ProtocolError("no decoys available to pad a partial group")
    return decoys[rng.choice(len(decoys), size=missing, replace=len(decoys) < missing)]


def dominant_sources(cs):
    """For each mixture of the groups mixed by ``cs`` (G, k, k), the batch index of the input with the largest
    |coefficient|: shape (G·k,). NumPy or torch; the audit pairs mixtures with inputs by it, the adversary trains on it."""
    groups, k = cs.shape[0], cs.shape[1]
    within = abs(cs).argmax(-1)
    if isinstance(within, np.ndarray):
        offsets = np.arange(groups)[:, None] * k
    else:  # torch
        import torch

        offsets = torch.arange(groups, device=within.device)[:, None] * k
    return (offsets + within).reshape(-1)
