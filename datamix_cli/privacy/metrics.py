"""How close a recovery is to the truth: unmixing (Amari index), feature correlation and matching, image
SSIM / PSNR, re-identification, and the mean/max summary every report uses. Pure NumPy (scikit-image, SciPy)."""

from __future__ import annotations

import numpy as np

from datamix_cli.errors import require


def summary(values) -> dict:
    """Mean and max of the finite ``values`` (None when there are none)."""
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    return {"mean": float(values.mean()) if values.size else None, "max": float(values.max()) if values.size else None}


def amari_index(w: np.ndarray, a: np.ndarray) -> float:
    """Amari index of unmixing ``w`` against mixing ``a``: 0 when w·a is a scaled permutation, 1 at worst."""
    p = np.abs(w @ a)
    k = p.shape[0]
    rows = (p.sum(axis=1) / p.max(axis=1) - 1).sum()
    cols = (p.sum(axis=0) / p.max(axis=0) - 1).sum()
    return float((rows + cols) / (2 * k * (k - 1)))


def abs_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Pearson correlation| between every row of ``a`` (n, D) and every row of ``b`` (m, D)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    return np.abs(a @ b.T)


def match_sources(recovered: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best one-to-one matching of recovered components to true sources by |correlation|.

    Returns (order, |corr|): ``recovered[order[j]]`` is matched to ``truth[j]``.
    """
    from scipy.optimize import linear_sum_assignment

    corr = abs_correlation(recovered, truth)
    rows, cols = linear_sum_assignment(-corr)
    order = np.empty(len(truth), dtype=int)
    order[cols] = rows
    return order, corr[order, np.arange(len(truth))]


def align_scale(component: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares sign, scale and offset of ``component`` onto ``target`` (ICA leaves them undetermined)."""
    design = np.stack([component, np.ones_like(component)], axis=1)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return design @ coef


def image_metrics(reconstruction: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(SSIM, PSNR in dB) of one reconstruction against its true input, both in [0, 1], channels first."""
    metrics = require("skimage.metrics", "data")
    rec = np.clip(reconstruction, 0, 1).astype(np.float64)
    true = truth.astype(np.float64)
    if true.ndim == 3 and true.shape[0] == 1:
        rec, true = rec[0], true[0]
        ssim = metrics.structural_similarity(true, rec, data_range=1.0, win_size=min(7, *[d - (1 - d % 2) for d in true.shape]))
    elif true.ndim == 3:
        ssim = metrics.structural_similarity(true, rec, data_range=1.0, channel_axis=0)
    else:
        ssim = float("nan")  # SSIM is defined for images; 1-D signals report PSNR only
    mse = float(np.mean((rec - true) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
    return float(ssim), psnr


def reidentification(reconstructions: np.ndarray, candidates: np.ndarray, targets: np.ndarray) -> float:
    """Share of reconstructions whose nearest candidate image (Euclidean) is their own target: chance is 1/len(candidates)."""
    r = reconstructions.reshape(len(reconstructions), -1).astype(np.float64)
    c = candidates.reshape(len(candidates), -1).astype(np.float64)
    distances = (r * r).sum(axis=1)[:, None] - 2 * r @ c.T + (c * c).sum(axis=1)[None, :]
    return float((distances.argmin(axis=1) == targets).mean())
