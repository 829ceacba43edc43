"""Attacks a curious cloud can mount on what DataMix sends it.

Pure functions over NumPy (torch only to train the inversion decoder). Each
attack is tested to succeed where it should (tests/test_attacks.py): an attack
too weak to succeed anywhere would make every split look private.
"""

from __future__ import annotations

import warnings

import numpy as np

from datamix_cli.errors import require

# Decoder channels. 32 rather than 64 trains about 4x faster on CPU, so that the audit's two decoders fit in
# minutes on two cores; on the ResNet example's unmixed features mean SSIM went from 0.995 to 0.989.
DECODER_WIDTH = 32


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


def train_decoder(features: np.ndarray, inputs: np.ndarray, epochs: int = 30, seed: int = 0, batch: int = 64,
                  resample=None, width: int = DECODER_WIDTH):
    """An inverse network from cut features to inputs, trained with MSE on (public) pairs.

    Convolutional when both are images (features upsampled to the input size
    first), a small MLP otherwise. ``resample``, when given, is called as
    ``resample(epoch)`` before every epoch after the first and returns fresh
    (features, inputs) pairs: the adaptive attacker draws new simulated
    mixtures each epoch. Returns a function features -> inputs.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    f_shape, x_shape = features.shape[1:], inputs.shape[1:]
    layout = torch.contiguous_format
    if len(f_shape) == 3 and len(x_shape) == 3:
        layout = torch.channels_last  # measured faster for these CPU convolutions (6.0 s against 7.2 s an epoch)
        decoder = nn.Sequential(
            nn.Upsample(size=tuple(x_shape[1:]), mode="bilinear", align_corners=False),
            nn.Conv2d(f_shape[0], width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width // 2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width // 2, x_shape[0], 3, padding=1), nn.Sigmoid(),
        )
    else:
        d_in, d_out = int(np.prod(f_shape)), int(np.prod(x_shape))
        decoder = nn.Sequential(nn.Flatten(), nn.Linear(d_in, 512), nn.ReLU(), nn.Linear(512, d_out), nn.Sigmoid(), nn.Unflatten(1, x_shape))
    decoder = decoder.to(memory_format=layout)
    # Standardise features with (first-epoch) public statistics so the decoder sees the same scale at attack time.
    mean, std = float(features.mean()), float(features.std() + 1e-8)

    def standardised(f):
        return torch.from_numpy(((f - mean) / std).astype(np.float32)).contiguous(memory_format=layout)

    def tensors(f, x):
        return standardised(f), torch.from_numpy(x.astype(np.float32))

    fs, xs = tensors(features, inputs)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    decoder.train()
    for epoch in range(epochs):
        if resample is not None and epoch > 0:
            fs, xs = tensors(*resample(epoch))
        for idx in torch.randperm(len(xs), generator=generator).split(batch):
            loss = nn.functional.mse_loss(decoder(fs[idx]), xs[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    decoder.eval()

    def invert(f: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return decoder(standardised(f)).numpy()

    return invert


def reidentification(reconstructions: np.ndarray, candidates: np.ndarray, targets: np.ndarray) -> float:
    """Share of reconstructions whose nearest candidate image (Euclidean) is their own target: chance is 1/len(candidates)."""
    r = reconstructions.reshape(len(reconstructions), -1).astype(np.float64)
    c = candidates.reshape(len(candidates), -1).astype(np.float64)
    distances = (r * r).sum(axis=1)[:, None] - 2 * r @ c.T + (c * c).sum(axis=1)[None, :]
    return float((distances.argmin(axis=1) == targets).mean())


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
