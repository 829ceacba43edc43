"""Datasets: built-in ones that ship inside installed packages, and the user's own.

* ``digits``: scikit-learn's 1,797 8x8 handwritten digits, 10 classes;
* ``faces``: scikit-image's LFW subset, 200 25x25 images, face / non-face;
* ``path.npz`` with arrays ``x`` (N, ...) and ``y`` (N,), optional ``classes``;
* a folder with one sub-folder of images per class.

Samples are float32 in [0, 1], resized to the model's per-sample shape:
images are resampled bilinearly; for 1-D models (C, L) each image is read
row by row as a signal and resampled to length L.

Colour (images in folders and images given to ``infer``, one rule, in
:func:`read_image`): grayscale images (PIL modes 1, L, LA, I, I;16, F) stay
one channel, everything else becomes RGB, three channels. An alpha channel is
dropped (RGBA → RGB, LA → L), as PIL's ``convert`` and torchvision's
ImageFolder do. A folder holding any colour image is read as RGB, its
grayscale images replicated over the three channels. Grayscale data for a
model with C channels is replicated C times; colour data for a model with a
different channel count is refused with one line, never silently averaged.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.errors import DatasetError, InputFileError, require

BUILTIN = ("digits", "faces")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm"}


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
            image = _decode(self.files[int(i)], pil)
            if self.colour and image.ndim == 2:
                image = np.repeat(image[None], 3, axis=0)
            out[row] = self.preprocessing.fit(image[None], self.sample_shape, str(self.files[int(i)]))[0]
        return out


def _decode(file: Path, pil) -> np.ndarray:
    try:
        return read_image(file, pil)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot read image {file}: {exc}; --skip-bad-images skips such files") from None


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
            raw, y, classes = _npz(path)
        elif path.is_dir():
            files, y, classes, colour, size, skipped = _scan_folder(path, skip_bad_images)
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


def _npz(path: Path):
    if not path.is_file():
        raise InputFileError(f"dataset file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DatasetError(f"{path} must hold arrays 'x' and 'y'; it holds {', '.join(archive.files)}")
            y = archive["y"]
            classes = tuple(str(c) for c in archive["classes"]) if "classes" in archive else None
            x = _memmap_member(path, "x")
            if x is None:  # compressed (np.savez_compressed): it has to be read whole
                x = archive["x"]
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot read {path} as a NumPy archive: {exc}") from exc
    if x.dtype.kind not in "fiub" or y.dtype.kind not in "iu" or y.ndim != 1 or len(x) != len(y) or not len(y):
        raise DatasetError(f"{path}: need numeric x (N, ...) and integer y (N,), got x {x.shape} {x.dtype}, y {y.shape} {y.dtype}")
    if classes is None:
        classes = tuple(str(i) for i in range(int(y.max()) + 1))
    if y.min() < 0 or y.max() >= len(classes):
        raise DatasetError(f"{path}: labels must lie in 0..{len(classes) - 1}, found {y.min()}..{y.max()}")
    return x, y, classes


def _memmap_member(path: Path, name: str) -> np.memmap | None:
    """Array ``name`` of an uncompressed .npz (np.savez) mapped in place; None if it is compressed."""
    import struct

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            return None
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject or not shape or not np.prod(shape):
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def read_image(path: Path, pil) -> np.ndarray:
    """One image in [0, 1]: (H, W) if grayscale, else (3, H, W) RGB; alpha dropped (see the module doc)."""
    with pil.open(path) as image:
        image.load()
        mode = image.mode
        if mode in GRAYSCALE_MODES:
            if mode.startswith("I"):
                return np.clip(np.asarray(image, dtype=np.float64) / 65535.0, 0, 1)
            if mode == "F":
                return np.clip(np.asarray(image, dtype=np.float64), 0, 1)
            return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
        return np.asarray(image.convert("RGB"), dtype=np.float64).transpose(2, 0, 1) / 255.0


def _scan_folder(path: Path, skip_bad: bool):
    """Files, labels and class names of a folder of class sub-folders; reads image headers only.

    Without ``skip_bad`` a file whose header cannot be read stops here and a
    truncated one when it is decoded, naming the file. With it, every image is
    decoded once now and the unreadable ones are left out and counted.
    """
    pil = require("PIL.Image", "data")
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir())
    if not class_dirs:
        raise DatasetError(f"{path} has no class sub-folders")
    files, labels, skipped, sizes, colour = [], [], [], {}, False
    for label, folder in enumerate(class_dirs):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with pil.open(file) as image:
                    mode, size = image.mode, image.size
                    if skip_bad:
                        image.load()
            except (OSError, ValueError, SyntaxError) as exc:
                if not skip_bad:
                    raise DatasetError(f"cannot read image {file}: {exc}; --skip-bad-images skips such files") from None
                skipped.append(str(file))
                continue
            colour |= mode not in GRAYSCALE_MODES
            sizes[size[::-1]] = sizes.get(size[::-1], 0) + 1
            files.append(file)
            labels.append(label)
    if not files:
        raise DatasetError(f"no readable images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {path}")
    common = max(sizes, key=sizes.get)  # the native sample size when the model does not fix one
    return files, np.asarray(labels, dtype=np.int64), tuple(d.name for d in class_dirs), colour, common, tuple(skipped)


def _resize(x: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(x, dtype=torch.float32)
    mode = "linear" if len(size) == 1 else "bilinear"
    return F.interpolate(t[:, None], size=size, mode=mode, align_corners=False)[:, 0].numpy()


def fit_to_shape(raw: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Resize raw samples to ``shape`` = (C, H, W) or (C, L), or fail saying why they do not fit."""
    if tuple(raw.shape[1:]) == tuple(shape):
        return raw
    n = len(raw)
    if len(shape) == 3 and raw.ndim == 3:  # grayscale images -> (C, H, W)
        return np.repeat(_resize(raw, shape[1:])[:, None], shape[0], axis=1)
    if len(shape) == 3 and raw.ndim == 4 and raw.shape[1] == shape[0]:  # (N, C, H, W), other size
        flat = _resize(raw.reshape(n * shape[0], *raw.shape[2:]), shape[1:])
        return flat.reshape(n, *shape)
    if len(shape) == 3 and raw.ndim == 4 and raw.shape[1] != shape[0]:
        raise DatasetError(
            f"samples of {name} have {raw.shape[1]} channels but the model takes {shape[0]}; "
            "convert the data (colour is never averaged away or invented)"
        )
    if len(shape) == 2 and shape[0] == 1 and raw.ndim >= 2:  # anything -> a 1-channel signal
        return _resize(raw.reshape(n, -1), (shape[1],))[:, None]
    raise DatasetError(f"samples of {name} have shape {tuple(raw.shape[1:])}, which cannot be fitted to the model input {tuple(shape)}")


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
