"""Per-input L2 clipping of what is mixed, inside the head artifact: the sensitivity the clipped Gaussian mechanism
(datamix_cli.privacy.gdp) is stated for.

The head ends with h ← h·min(1, B/‖h‖), per input, after the bottleneck's encoder when there is one, so that the
exported ONNX/TFLite head clips on the device and the mixing, the noise and the codec are unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

CLIP_SAMPLES = 256  # training inputs the default clip norm (their median feature norm) is measured on
EPS = 1e-12


def clip(h: torch.Tensor, norm: float) -> torch.Tensor:
    """Each input's features (the first dimension indexes inputs) scaled down to L2 norm at most ``norm``."""
    # No len(h) or h.shape[0]: a traced artifact would bake the batch size in.
    scale = torch.clamp(norm / (h.flatten(1).norm(dim=1) + EPS), max=1.0)
    return h * scale.reshape((-1,) + (1,) * (h.dim() - 1))


class ClippedHead(nn.Module):
    """The head followed by per-input clipping to ``norm``."""

    def __init__(self, head: nn.Module, norm: float):
        super().__init__()
        self.head, self.norm = head, float(norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clip(self.head(x), self.norm)


def column_norm_max(mixing) -> float:
    """The largest ‖c_i‖ the protocol's C can have: 1 for orthogonal C; √k for Dirichlet rows (each entry in [0, 1],
    so ‖c_i‖² = Σ_j C_ji² ≤ Σ_j C_ji ≤ k), the worst case over every draw."""
    return 1.0 if mixing.distribution == "orthogonal" else math.sqrt(mixing.k)


@torch.no_grad()
def median_norm(head: nn.Module, x: np.ndarray) -> float:
    """The median L2 norm of the head's features over ``x`` (the default clip norm: half the inputs are clipped)."""
    h = head(torch.from_numpy(np.ascontiguousarray(x[:CLIP_SAMPLES], dtype=np.float32)))
    return float(h.reshape(len(h), -1).norm(dim=1).median())


def insert(parts, norm: float):
    """The parts with the head ending in clipping to ``norm``."""
    from dataclasses import replace

    return replace(parts, head=ClippedHead(parts.head, norm))
