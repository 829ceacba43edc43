"""Attacks a curious cloud can mount on what DataMix sends it.

Pure functions over NumPy; torch, imported lazily, to train the decoders and
for the span search's gradients. Each attack is tested to succeed where it
should and to fail on noise (tests/test_attacks.py): an attack too weak to
succeed anywhere would make every split look private.
"""

from __future__ import annotations

import warnings

import numpy as np

from datamix_cli.errors import require

# Decoder channels. 32 rather than 64 trains about 4x faster on CPU, so that the audit's two decoders fit in
# minutes on two cores; on the ResNet example's unmixed features mean SSIM went from 0.995 to 0.989.
DECODER_WIDTH = 32
# The span search (attack ``optimisation``): Adam steps and rate in whitened coordinates, the weight of the
# decorrelation term and of a public classifier's confidence. Measured (docs/audit.md): without the decorrelation
# term rows collapse onto one easy source; the confidence of the split's own model (weight 0.1 to 0.3) pulled the
# search towards confidently classified blends and doubled its cost; that of the pooled logistic regression
# (weight 0.05) changed nothing on the ResNet example and cost 0.04 |corr| on the synthetic tests: off by default.
SEARCH_STEPS, SEARCH_LR, DECORRELATION, CONFIDENCE_WEIGHT = 40, 0.1, 0.5, 0.0


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


def decoder_network(f_shape: tuple, x_shape: tuple, width: int = DECODER_WIDTH):
    """The inversion network from features of shape ``f_shape`` to inputs of shape ``x_shape``: convolutional when
    both are images (features upsampled to the input size first), a small MLP otherwise."""
    from torch import nn

    if len(f_shape) == 3 and len(x_shape) == 3:
        return nn.Sequential(
            nn.Upsample(size=tuple(x_shape[1:]), mode="bilinear", align_corners=False),
            nn.Conv2d(f_shape[0], width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width // 2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width // 2, x_shape[0], 3, padding=1), nn.Sigmoid(),
        )
    d_in, d_out = int(np.prod(f_shape)), int(np.prod(x_shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, 512), nn.ReLU(), nn.Linear(512, d_out), nn.Sigmoid(), nn.Unflatten(1, x_shape))


class Decoder:
    """A trained inversion network and the feature standardisation it was trained with. Called on NumPy features
    it returns NumPy inputs without gradients; :meth:`torch` keeps the graph, for attacks that search features."""

    def __init__(self, network, mean: float, std: float, images: bool):
        import torch

        self.network, self.mean, self.std = network, mean, std
        # channels_last measured faster for these CPU convolutions (6.0 s against 7.2 s an epoch)
        self.layout = torch.channels_last if images else torch.contiguous_format

    def torch(self, features):
        return self.network(((features - self.mean) / self.std).contiguous(memory_format=self.layout))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.torch(torch.from_numpy(features.astype(np.float32))).numpy()


def train_decoder(features: np.ndarray, inputs: np.ndarray, epochs: int = 30, seed: int = 0, batch: int = 64,
                  resample=None, width: int = DECODER_WIDTH, loss=None) -> Decoder:
    """An inverse network from cut features to inputs (:func:`decoder_network`), trained on (public) pairs.

    ``loss(prediction, target)`` defaults to MSE. ``resample``, when given, is called as ``resample(epoch)``
    before every epoch after the first and returns fresh (features, inputs) pairs: the adaptive attacker draws
    new simulated mixtures each epoch.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    f_shape, x_shape = features.shape[1:], inputs.shape[1:]
    images = len(f_shape) == 3 and len(x_shape) == 3
    # Standardise features with (first-epoch) public statistics so the decoder sees the same scale at attack time.
    decoder = Decoder(decoder_network(f_shape, x_shape, width), float(features.mean()), float(features.std() + 1e-8), images)
    decoder.network.to(memory_format=decoder.layout)
    loss = loss or nn.functional.mse_loss

    def tensors(f, x):  # standardised once an epoch, not once a batch
        f = torch.from_numpy(((f - decoder.mean) / decoder.std).astype(np.float32)).contiguous(memory_format=decoder.layout)
        return f, torch.from_numpy(x.astype(np.float32, copy=False))

    fs, xs = tensors(features, inputs)
    optimizer = torch.optim.Adam(decoder.network.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    decoder.network.train()
    for epoch in range(epochs):
        if resample is not None and epoch > 0:
            fs, xs = tensors(*resample(epoch))
        for idx in torch.randperm(len(xs), generator=generator).split(batch):
            value = loss(decoder.network(fs[idx]), xs[idx])
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
    decoder.network.eval()
    return decoder


def group_stack(values: np.ndarray, k: int) -> np.ndarray:
    """(G·k, ...) samples as (G, ...) groups for the group decoder: images stacked along channels, (G, k·C, H, W);
    anything else as (G, k, ...)."""
    groups = len(values) // k
    if values.ndim == 4:
        return values.reshape(groups, k * values.shape[1], *values.shape[2:])
    return values.reshape(groups, k, *values.shape[1:])


def permutation_invariant_mse(k: int):
    """Loss of a group decoder: per group, the summed MSE of its k outputs under the assignment to the k targets
    that minimises it (Hungarian on the k×k pairwise losses, found without gradient; gradient through the
    matched pairs only), averaged over groups. Any k: no enumeration of the k! permutations."""
    import torch
    from scipy.optimize import linear_sum_assignment

    def loss(prediction, target):
        pred, true = prediction.reshape(len(prediction), k, -1), target.reshape(len(target), k, -1)
        with torch.no_grad():
            pairwise = ((pred[:, :, None] - true[:, None]) ** 2).mean(dim=3)
        assignment = [linear_sum_assignment(cost) for cost in pairwise.numpy()]
        rows = torch.as_tensor(np.stack([r for r, _ in assignment]))
        cols = torch.as_tensor(np.stack([c for _, c in assignment]))
        groups = torch.arange(len(pred))[:, None]
        return ((pred[groups, rows] - true[groups, cols]) ** 2).mean()

    return loss


def match_outputs(outputs: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Order of a group's k outputs that pairs them one-to-one with its k true inputs at least total MSE
    (uses the truth: the chance level of such a pairing is the best of k uninformed guesses)."""
    from scipy.optimize import linear_sum_assignment

    o, t = outputs.reshape(len(outputs), -1).astype(np.float64), truth.reshape(len(truth), -1).astype(np.float64)
    cost = (o * o).sum(1)[:, None] - 2 * o @ t.T + (t * t).sum(1)[None, :]
    rows, cols = linear_sum_assignment(cost)
    order = np.empty(len(truth), dtype=int)
    order[cols] = rows
    return order


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


def _label_pipeline(features: np.ndarray, labels: np.ndarray, seed: int):
    linear_model = require("sklearn.linear_model", "data")
    preprocessing = require("sklearn.preprocessing", "data")
    pipeline = require("sklearn.pipeline", "data")
    model = pipeline.make_pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(pooled(features), labels)
    return model


def train_label_classifier(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Logistic regression on pooled features; returns a function features -> predicted labels."""
    model = _label_pipeline(features, labels, seed)
    return lambda f: model.predict(pooled(f))


def label_logits(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """The same classifier as a differentiable torch function, features -> logits (the span search's confidence)."""
    import torch

    model = _label_pipeline(features, labels, seed)
    scaler, linear = model[0], model[-1]
    coef = linear.coef_ / scaler.scale_
    bias = linear.intercept_ - coef @ scaler.mean_
    if len(coef) == 1:  # binary: sklearn keeps one row, the logit of class 1 against class 0
        coef, bias = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], bias])
    weight, offset = torch.from_numpy(coef.T.astype(np.float32)), torch.from_numpy(bias.astype(np.float32))
    return lambda f: pooled(f).reshape(len(f), -1) @ weight + offset
