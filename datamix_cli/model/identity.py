"""A model's identity: the sha256 of its parameters and buffers, and a file-safe name for it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path


def state_dict_sha256(model) -> str:
    """Identity of a model's parameters and buffers, independent of how they were stored."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_name(spec: str) -> str:
    stem = spec.rpartition(":")[2] if ":" in spec else Path(spec).stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "model"
