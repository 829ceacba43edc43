"""The exporter protocol and the registry formats join by name.

Adding a format is one new module that defines an :class:`Exporter` and calls
:func:`register`. Capabilities are data (attributes), checked before any work
starts, so an unsupported request fails before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

from datamix_cli.errors import ExporterRegistryError


@runtime_checkable
class Exporter(Protocol):
    """Writes one part to one file and runs that file back for verification."""

    name: ClassVar[str]  # registry key and format name in the manifest
    suffix: ClassVar[str]  # file suffix, e.g. ".onnx"
    extra: ClassVar[str]  # pip extra that provides the backend
    default_atol: ClassVar[float]  # max abs error accepted against PyTorch (fp32)
    dynamic_batch: ClassVar[bool]  # whether the artifact accepts any batch size
    roles: ClassVar[tuple[str, ...]]  # the parts of a split ("head", "cloud", "tail") it is written for

    def check_available(self) -> None:
        """Raise :class:`MissingExtraError` naming the pip extra if the backend is missing."""

    def export(self, module: Any, example_inputs: tuple, path: Path, input_names: list[str], output_name: str) -> None:
        """Write ``module`` traced on ``example_inputs`` to ``path``."""

    def load(self, path: Path, threads: int = 1) -> Callable[..., Any]:
        """A callable running the artifact on NumPy arrays (inputs in order), returning a NumPy array."""


_REGISTRY: dict[str, Exporter] = {}


def register(exporter: Exporter) -> Exporter:
    """Add ``exporter`` under its name; a name registered twice is an error."""
    if not isinstance(exporter, Exporter):
        raise ExporterRegistryError(f"{exporter!r} does not implement the Exporter protocol")
    if exporter.name in _REGISTRY:
        raise ExporterRegistryError(f"an exporter named {exporter.name!r} is already registered")
    _REGISTRY[exporter.name] = exporter
    return exporter


def get_exporter(name: str) -> Exporter:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ExporterRegistryError(f"no exporter named {name!r}; registered: {known}") from None


def registered_names(role: str | None = None) -> list[str]:
    """Every registered format, or those written for ``role``."""
    return sorted(name for name, exporter in _REGISTRY.items() if role is None or role in exporter.roles)
