"""Datasets: built-in ones that ship inside installed packages, and the user's own.

* ``digits``: scikit-learn's 1,797 8x8 handwritten digits, 10 classes;
* ``faces``: scikit-image's LFW subset, 200 25x25 images, face / non-face;
* ``path.npz`` with arrays ``x`` (N, ...) and ``y`` (N,), optional ``classes``;
* a folder with one sub-folder of images per class.

Samples are float32 in [0, 1], resized to the model's per-sample shape:
images are resampled bilinearly; for 1-D models (C, L) each image is read
row by row as a signal and resampled to length L.

Colour rules are in :mod:`datamix_cli.data.images`, geometry in :mod:`datamix_cli.data.geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.data.images import decode, scan_folder
from datamix_cli.data.npz import read_npz
from datamix_cli.errors import DatasetError, InputFileError, require

BUILTIN = ("digits", "faces")


class Samples:
    """Samples read on demand: array-like (N, *sample_shape) float32, indexed like an ndarray.

    Image folders and memory-mapped ``.npz`` arrays that still need resizing
    come as ``Samples``, so memory does not grow with the number of images;
    indexing reads and preprocesses just the samples asked for.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, n: int, sample_shape: tuple[int, ...]):
        self._n, self.sample_shape = n, tuple(sample_shape)

    def read(self, indices: np.ndarray) -> np.ndarray:  # (len(indices), *sample_shape) float32
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n, *self.sample_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):
        if isinstance(index, tuple):  # x[i, ...]: read the samples, then index within them
            first = self[index[0]]
            lead = () if isinstance(index[0], (int, np.integer)) else (slice(None),) * (first.ndim - len(self.sample_shape))
            return first[lead + index[1:]]
        indices = np.arange(self._n)[index]  # ints, slices, masks, fancy indices: ndarray semantics and errors
        return self.read(indices.reshape(-1)).reshape(*indices.shape, *self.sample_shape)

    def __array__(self, dtype=None, copy=None):
        out = self.read(np.arange(self._n))
        return out if dtype is None else out.astype(dtype)

    def take(self, indices: np.ndarray) -> "Samples":
        return _Subset(self, np.asarray(indices))


class _Subset(Samples):
    def __init__(self, base: Samples, indices: np.ndarray):
        super().__init__(len(indices), base.sample_shape)
        self.base, self.indices = base, indices

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.base.read(self.indices[indices])


class _FittedArray(Samples):
    """Raw arrays (possibly memory-mapped) fitted to the model's input shape on access."""

    def __init__(self, raw: np.ndarray, sample_shape, preprocessing, name: str):
        super().__init__(len(raw), sample_shape)
        self.raw, self.preprocessing, self.name = raw, preprocessing, name

    def read(self, indices: np.ndarray) -> np.ndarray:
        order = np.argsort(indices, kind="stable")  # sorted reads are sequential on a memory map
        raw = np.asarray(self.raw[indices[order]], dtype=np.float64)
        out = np.empty((len(indices), *self.sample_shape), dtype=np.float32)
        out[order] = self.preprocessing.fit(raw, self.sample_shape, self.name)
        return out


class _ImageFiles(Samples):
    """An image folder, decoded and preprocessed image by image on access."""

    def __init__(self, files: list[Path], colour: bool, sample_shape, preprocessing):
        super().__init__(len(files), sample_shape)
        self.files, self.colour, self.preprocessing = files, colour, preprocessing

    def read(self, indices: np.ndarray) -> np.ndarray:
        pil = require("PIL.Image", "data")
        out = np.empty((len(indices), *self.sample_shape), dtype=np.float32)
        for row, i in enumerate(indices):
            image = decode(self.files[int(i)], pil)
            if self.colour and image.ndim == 2:
                image = np.repeat(image[None], 3, axis=0)
            out[row] = self.preprocessing.fit(image[None], self.sample_shape, str(self.files[int(i)]))[0]
        return out


def take(x, indices: np.ndarray):
    """``x[indices]`` without reading lazily held samples."""
    return x.take(indices) if isinstance(x, Samples) else x[indices]


@dataclass(frozen=True)
class Dataset:
    """Samples shaped for one model (an ndarray or lazily read :class:`Samples`), labels, class names."""

    name: str
    x: "np.ndarray | Samples"  # float32 (N, *sample_shape)
    y: np.ndarray  # int64 (N,)
    classes: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # unreadable files left out with --skip-bad-images

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def split(self, holdout: float, seed: int) -> tuple["Dataset", "Dataset"]:
        """A stratification-free random train / held-out split, reproducible by seed."""
        order = np.random.default_rng(seed).permutation(len(self.y))
        n_hold = max(1, int(round(holdout * len(order))))
        hold, train = order[:n_hold], order[n_hold:]
        return (
            Dataset(self.name, take(self.x, train), self.y[train], self.classes, self.skipped),
            Dataset(self.name, take(self.x, hold), self.y[hold], self.classes, self.skipped),
        )


def load_dataset(spec: str, sample_shape: tuple[int, ...] | None = None, preprocessing=None, skip_bad_images: bool = False) -> Dataset:
    """Load ``spec`` and fit it to ``sample_shape`` (channels first, no batch dimension).

    ``preprocessing`` (:class:`datamix_cli.data.preprocessing.Preprocessing`, default none)
    gives the geometry; folders and large ``.npz`` files are read on demand.
    """
    from datamix_cli.data.preprocessing import Preprocessing

    preprocessing = preprocessing or Preprocessing()
    skipped: tuple[str, ...] = ()
    if spec in BUILTIN:
        raw, y, classes = _builtin(spec)
    else:
        path = Path(spec)
        if path.suffix == ".npz":
            raw, y, classes = read_npz(path)
        elif path.is_dir():
            files, y, classes, colour, size, skipped = scan_folder(path, skip_bad_images)
            native = ((3,) if colour else (1,)) + size
            shape = tuple(sample_shape) if sample_shape is not None else native
            if len(shape) == 3 and colour and shape[0] != 3:
                raise DatasetError(
                    f"samples of {spec} have 3 channels but the model takes {shape[0]}; "
                    "convert the data (colour is never averaged away or invented)"
                )
            return Dataset(spec, _ImageFiles(files, colour, shape, preprocessing), y, classes, skipped)
        elif not path.exists():
            raise InputFileError(f"dataset {spec!r} is neither built in ({', '.join(BUILTIN)}) nor an existing path")
        else:
            raise DatasetError(f"dataset {spec!r}: expected an .npz file or a folder of class sub-folders")
    if sample_shape is None:
        x = raw if isinstance(raw, np.memmap) else raw.astype(np.float32)
    elif isinstance(raw, np.memmap):
        if tuple(raw.shape[1:]) == tuple(sample_shape) and raw.dtype == np.float32 and not preprocessing.resize:
            x = raw  # used in place: nothing to fit
        else:
            x = _FittedArray(raw, tuple(sample_shape), preprocessing, spec)
            x[:1]  # fail now, in one line, if the arrays cannot fit the model
    else:
        x = preprocessing.fit(raw, tuple(sample_shape), spec).astype(np.float32, copy=False)
    return Dataset(spec, x, y.astype(np.int64), classes, skipped)


def default_sample_shape(raw_x) -> tuple[int, ...]:
    """Per-sample shape of raw images (N, H, W) -> (1, H, W); anything else unchanged."""
    return (1, *raw_x.shape[1:]) if raw_x.ndim == 3 else tuple(raw_x.shape[1:])


def _builtin(name: str):
    if name == "digits":
        datasets = require("sklearn.datasets", "data")
        digits = datasets.load_digits()
        return digits.images / 16.0, digits.target, tuple(str(i) for i in range(10))
    skimage_data = require("skimage.data", "data")
    images = np.asarray(skimage_data.lfw_subset(), dtype=np.float64)
    # The first 100 images are faces, the other 100 are not (scikit-image docs).
    labels = np.r_[np.ones(100), np.zeros(100)]
    return images, labels, ("non-face", "face")


def split_datasets(manifest, sample_shape: tuple[int, ...], data: str | None = None) -> tuple[Dataset, Dataset]:
    """(fine-tuning, held-out) data as the split saw them, with the split's preprocessing.

    ``data`` replaces the split's data set (then split by the manifest's holdout
    and seed); without it a split made with ``--eval-data`` gives that set back.
    """
    from datamix_cli.data.preprocessing import Preprocessing

    training = manifest.training
    preprocessing = Preprocessing.from_manifest(manifest.model)
    skip = bool(training.get("skipped_images"))  # the split left unreadable images out: so do we
    if data is None and training.get("eval_data"):
        return tuple(load_dataset(spec, sample_shape, preprocessing, skip) for spec in (training["data"], training["eval_data"]))
    dataset = load_dataset(data or manifest.accuracy["dataset"], sample_shape, preprocessing, skip)
    return dataset.split(training.get("holdout") or 0.2, training.get("data_seed", 0))
