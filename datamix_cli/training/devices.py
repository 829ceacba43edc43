"""Where fine-tuning and evaluation run: ``--device auto|cpu|cuda[:N]``.

Only training and evaluation move; artifacts are always exported from CPU
copies, so they do not depend on where training ran, and the mixing
coefficients are always drawn on the CPU from the OS's CSPRNG.
"""

from __future__ import annotations

import re

from datamix_cli.errors import ConfigError


def resolve_device(spec: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda[:N]`` checked to exist."""
    import torch

    spec = spec.strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: CUDA is not available here (torch {torch.__version__}, no visible GPU); use --device cpu")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return spec


def move(device, *things) -> None:
    """Move modules, and the head, cloud and tail of partitions, to ``device`` (None entries are skipped)."""
    import torch

    for thing in things:
        if isinstance(thing, torch.nn.Module):
            thing.to(device)
        elif thing is not None:
            move(device, thing.head, thing.cloud, thing.tail)
