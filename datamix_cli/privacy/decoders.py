"""Inversion networks from cut features to inputs, trained on public pairs: the engine of the inversion,
adaptive and group attacks, and of the adversary that fine-tuning trains against. torch is imported lazily."""

from __future__ import annotations

import numpy as np


# Decoder channels. 32 rather than 64 trains about 4x faster on CPU, so that the audit's two decoders fit in
# minutes on two cores; on the ResNet example's unmixed features mean SSIM went from 0.995 to 0.989.
DECODER_WIDTH = 32


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
