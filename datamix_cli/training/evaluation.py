"""Evaluating split parts: plain logits, logits under the protocol (groups of k padded with decoys, fresh C each),
accuracy, and moving parts to a device and back."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from datamix_cli.protocol.groups import decoy_padding
from datamix_cli.protocol.mixing import MixingConfig, coefficient_rng, draw_batch
from datamix_cli.training.devices import move
from datamix_cli.training.mixed import mixed_forward


@torch.no_grad()
def predict_plain(model, x: np.ndarray, batch: int = 256, device: str = "cpu") -> np.ndarray:
    """Logits of a module (or a callable) on ``x`` in batches, as NumPy."""
    return np.concatenate([model(torch.from_numpy(x[i : i + batch]).to(device)).cpu().numpy() for i in range(0, len(x), batch)])


@contextlib.contextmanager
def on_device(parts, model, device: str):
    """Move the parts and the model to ``device`` for training and evaluation, and back to the CPU after."""
    move(torch.device(device), parts, model)
    try:
        yield
    finally:
        move(torch.device("cpu"), parts, model)


@torch.no_grad()
def predict_mixed(
    parts, x, decoys: np.ndarray, mixing: MixingConfig, seed: int | None, groups_per_batch: int = 64, device: str = "cpu"
) -> np.ndarray:
    """Logits of ``x`` under the protocol: groups of k (last one padded with decoys), fresh C each.

    ``x`` may be lazily read samples: it is read one chunk of groups at a time.
    """
    rng = coefficient_rng(seed)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    n = len(x)
    pad = decoy_padding(n, decoys, mixing.k, rng)
    out, step = [], groups_per_batch * mixing.k
    for start in range(0, n, step):
        chunk = np.asarray(x[start : start + step], dtype=np.float32)
        if start + step >= n and len(pad):
            chunk = np.concatenate([chunk, pad.astype(np.float32)])
        c = torch.from_numpy(draw_batch(rng, mixing, len(chunk) // mixing.k)).float().to(device)
        out.append(mixed_forward(parts, torch.from_numpy(chunk).to(device), c, mixing, generator).cpu().numpy())
    return np.concatenate(out)[:n]


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())
