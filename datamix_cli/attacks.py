"""Attacks a curious cloud can mount on what DataMix sends it.

Pure functions over NumPy (torch only to train the inversion decoder). Each
attack is tested to succeed where it should (tests/test_attacks.py): an attack
too weak to succeed anywhere would make every split look private.
"""

from __future__ import annotations

import warnings

import numpy as np

from datamix_cli.errors import require


def amari_index(w: np.ndarray, a: np.ndarray) -> float:
    """Amari index of unmixing ``w`` against mixing ``a``: 0 when w·a is a scaled permutation, 1 at worst."""
    p = np.abs(w @ a)
    k = p.shape[0]
    rows = (p.sum(axis=1) / p.max(axis=1) - 1).sum()
    cols = (p.sum(axis=0) / p.max(axis=0) - 1).sum()
    return float((rows + cols) / (2 * k * (k - 1)))


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


def train_decoder(features: np.ndarray, inputs: np.ndarray, epochs: int = 30, seed: int = 0, batch: int = 64):
    """An inverse network from cut features to inputs, trained with MSE on (public) pairs.

    Convolutional when both are images (features upsampled to the input size
    first), a small MLP otherwise. Returns a function features -> inputs.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    f_shape, x_shape = features.shape[1:], inputs.shape[1:]
    if len(f_shape) == 3 and len(x_shape) == 3:
        decoder = nn.Sequential(
            nn.Upsample(size=tuple(x_shape[1:]), mode="bilinear", align_corners=False),
            nn.Conv2d(f_shape[0], 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, x_shape[0], 3, padding=1), nn.Sigmoid(),
        )
    else:
        d_in, d_out = int(np.prod(f_shape)), int(np.prod(x_shape))
        decoder = nn.Sequential(nn.Flatten(), nn.Linear(d_in, 512), nn.ReLU(), nn.Linear(512, d_out), nn.Sigmoid(), nn.Unflatten(1, x_shape))
    # Standardise features with public statistics so the decoder sees the same scale at attack time.
    mean, std = float(features.mean()), float(features.std() + 1e-8)
    fs = torch.from_numpy(((features - mean) / std).astype(np.float32))
    xs = torch.from_numpy(inputs.astype(np.float32))
    optimizer = torch.optim.Adam(decoder.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    decoder.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=generator).split(batch):
            loss = nn.functional.mse_loss(decoder(fs[idx]), xs[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    decoder.eval()

    def invert(f: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return decoder(torch.from_numpy(((f - mean) / std).astype(np.float32))).numpy()

    return invert


def pooled(features: np.ndarray, grid: int = 4) -> np.ndarray:
    """A compact descriptor for the label attack: channel-wise average pooling to grid×grid (or the raw vector)."""
    if features.ndim == 4:
        n, c, h, w = features.shape
        gh, gw = min(grid, h), min(grid, w)
        trimmed = features[:, :, : h - h % gh, : w - w % gw]
        return trimmed.reshape(n, c, gh, trimmed.shape[2] // gh, gw, trimmed.shape[3] // gw).mean(axis=(3, 5)).reshape(n, -1)
    if features.ndim == 3:
        n, c, length = features.shape
        g = min(grid * grid, length)
        return features[:, :, : length - length % g].reshape(n, c, g, -1).mean(axis=3).reshape(n, -1)
    return features.reshape(len(features), -1)


def train_label_classifier(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Logistic regression on pooled features; returns a function features -> predicted labels."""
    linear_model = require("sklearn.linear_model", "data")
    preprocessing = require("sklearn.preprocessing", "data")
    pipeline = require("sklearn.pipeline", "data")
    model = pipeline.make_pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(pooled(features), labels)
    return lambda f: model.predict(pooled(f))
