"""``path.npz`` datasets: arrays ``x`` (N, ...) and ``y`` (N,), optional ``classes``; an uncompressed archive's ``x`` is
memory-mapped in place (its zip local header parsed here), so a large set streams instead of filling memory."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from datamix_cli.errors import DatasetError, InputFileError


def read_npz(path: Path):
    if not path.is_file():
        raise InputFileError(f"dataset file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DatasetError(f"{path} must hold arrays 'x' and 'y'; it holds {', '.join(archive.files)}")
            y = archive["y"]
            classes = tuple(str(c) for c in archive["classes"]) if "classes" in archive else None
            x = memmap_member(path, "x")
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


def memmap_member(path: Path, name: str) -> np.memmap | None:
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
