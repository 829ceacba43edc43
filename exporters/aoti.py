"""AOTInductor packages (``.aoti.pt2``): the cloud part compiled ahead of time to native code.

Built from the ``torch.export`` program by ``torch._inductor.aoti_compile_and_package``
(needs a C++ compiler; tens of seconds per part) and loaded with
``aoti_load_package``, which needs no Python model code. The package is
specific to the CPU/GPU kind and torch version it was compiled for, so it is
an opt-in cloud format (``datamix split --cloud-formats torchscript,pt2,aoti``),
not a default; Triton's PyTorch backend serves it as ``platform: torch_aoti``.
"""

from __future__ import annotations

from pathlib import Path

from datamix_cli.errors import ExportFailedError, MissingExtraError
from exporters.registry import register


class AotInductorExporter:
    name = "aoti"
    suffix = ".aoti.pt2"
    extra = "core"
    default_atol = 1e-4
    dynamic_batch = True
    roles = ("cloud",)

    def check_available(self) -> None:
        import shutil

        if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
            raise MissingExtraError("AOTInductor needs a C++ compiler (c++, g++ or clang++) on PATH")

    def export(self, module, example_inputs: tuple, path: Path, input_names: list[str], output_name: str) -> None:
        import torch

        from exporters._quiet import captured_output
        from exporters.pt2 import export_program

        program = export_program(module, example_inputs, path.name)
        with captured_output() as log:
            try:
                torch._inductor.aoti_compile_and_package(program, package_path=str(path))
            except Exception as exc:
                raise ExportFailedError(f"AOTInductor compilation of {path.name} failed: {exc}\n{log()[-2000:]}") from exc

    def load(self, path: Path, threads: int = 1):
        import torch

        from exporters.torchscript import numpy_runner

        return numpy_runner(torch._inductor.aoti_load_package(str(path)))


register(AotInductorExporter())
