"""``torch.export`` programs (``.pt2``): the cloud part with a dynamic batch dimension.

TorchScript is deprecated from torch 2.14 (``torch.jit.load`` warns on every
load); an exported program is its successor, loadable by ``torch.export.load``
with no Python source, and what Triton's PyTorch backend and AOTInductor take.
"""

from __future__ import annotations

from pathlib import Path

from datamix_cli.errors import ExportFailedError
from exporters.registry import register


def export_program(module, example_inputs: tuple, name: str):
    """``torch.export`` of ``module`` with the first dimension of every input dynamic (the batch)."""
    import torch

    if len(example_inputs[0]) < 2:
        raise ExportFailedError(f"{name}: export on a batch of >= 2, so the batch dimension stays dynamic")
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    try:
        return torch.export.export(module.eval(), example_inputs, dynamic_shapes=tuple({0: batch} for _ in example_inputs), strict=False)
    except Exception as exc:
        raise ExportFailedError(f"torch.export of {name} failed: {exc}") from exc


class ExportedProgramExporter:
    name = "pt2"
    suffix = ".pt2"
    extra = "core"
    default_atol = 1e-5
    dynamic_batch = True
    roles = ("cloud",)

    def check_available(self) -> None:
        pass  # torch is a core dependency

    def export(self, module, example_inputs: tuple, path: Path, input_names: list[str], output_name: str) -> None:
        import torch

        torch.export.save(export_program(module, example_inputs, path.name), str(path))

    def load(self, path: Path, threads: int = 1):
        import torch

        from exporters.torchscript import numpy_runner

        return numpy_runner(torch.export.load(str(path)).module())


register(ExportedProgramExporter())
