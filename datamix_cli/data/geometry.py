"""Geometry of samples: one resize, fitting raw samples to the model's per-sample shape, and the resize + centre
crop of the preprocessing spec. Images are resampled bilinearly; for 1-D models (C, L) each sample is read as a
signal and resampled to length L."""

from __future__ import annotations

import numpy as np

from datamix_cli.errors import DatasetError


def resize(x: np.ndarray, size: tuple[int, ...], antialias: bool = False) -> np.ndarray:
    """Resample a batch of single-channel samples (N, *spatial) to ``size``: linear for signals, bilinear for
    images (``antialias`` when shrinking photographs, as the preprocessing presets do)."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
    mode = "linear" if len(size) == 1 else "bilinear"
    return F.interpolate(t[:, None], size=size, mode=mode, align_corners=False, antialias=antialias)[:, 0].numpy()


def fit_to_shape(raw: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Resize raw samples to ``shape`` = (C, H, W) or (C, L), or fail saying why they do not fit."""
    if tuple(raw.shape[1:]) == tuple(shape):
        return raw
    n = len(raw)
    if len(shape) == 3 and raw.ndim == 3:  # grayscale images -> (C, H, W)
        return np.repeat(resize(raw, shape[1:])[:, None], shape[0], axis=1)
    if len(shape) == 3 and raw.ndim == 4 and raw.shape[1] == shape[0]:  # (N, C, H, W), other size
        flat = resize(raw.reshape(n * shape[0], *raw.shape[2:]), shape[1:])
        return flat.reshape(n, *shape)
    if len(shape) == 3 and raw.ndim == 4 and raw.shape[1] != shape[0]:
        raise DatasetError(
            f"samples of {name} have {raw.shape[1]} channels but the model takes {shape[0]}; "
            "convert the data (colour is never averaged away or invented)"
        )
    if len(shape) == 2 and shape[0] == 1 and raw.ndim >= 2:  # anything -> a 1-channel signal
        return resize(raw.reshape(n, -1), (shape[1],))[:, None]
    raise DatasetError(f"samples of {name} have shape {tuple(raw.shape[1:])}, which cannot be fitted to the model input {tuple(shape)}")


def resize_and_crop(raw: np.ndarray, shorter: int, crop: tuple[int, int]) -> np.ndarray:
    """Resize each image so its shorter side is ``shorter`` (aspect kept), then centre-crop to ``crop``."""
    h, w = raw.shape[-2:]
    scale = shorter / min(h, w)
    size = (max(crop[0], int(round(h * scale))), max(crop[1], int(round(w * scale))))
    flat = np.ascontiguousarray(raw, dtype=np.float32).reshape(-1, h, w)
    if (h, w) != size:
        flat = resize(flat, size, antialias=True)
    top, left = (size[0] - crop[0]) // 2, (size[1] - crop[1]) // 2
    out = flat[:, top : top + crop[0], left : left + crop[1]]
    return out.reshape(*raw.shape[:-2], *crop).astype(raw.dtype, copy=False)
