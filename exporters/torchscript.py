"""TorchScript through ``torch.jit.trace``: the cloud part, any batch size."""

from __future__ import annotations

from pathlib import Path

from datamix_cli.errors import ExportFailedError
from exporters.registry import register


class TorchScriptExporter:
    name = "torchscript"
    suffix = ".pt"
    extra = "core"
    default_atol = 1e-5
    dynamic_batch = True
    roles = ("head", "tail", "cloud")  # the parts of a split this format is written for

    def check_available(self) -> None:
        pass  # torch is a core dependency

    def export(self, module, example_inputs: tuple, path: Path, input_names: list[str], output_name: str) -> None:
        import warnings

        import torch

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scripted = torch.jit.trace(module.eval(), example_inputs, check_trace=False)
            scripted.save(str(path))
        except Exception as exc:
            raise ExportFailedError(f"TorchScript export of {path.name} failed: {exc}") from exc

    def load(self, path: Path, threads: int = 1):
        return numpy_runner(load_module(path))


def load_module(path: Path):
    """A TorchScript file as a torch module in eval mode, on the CPU (the one place it is loaded)."""
    import warnings

    import torch

    with warnings.catch_warnings():  # torch >= 2.14 warns on every load that TorchScript is deprecated
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated")
        return torch.jit.load(str(path), map_location="cpu").eval()


def numpy_runner(module):
    """Run a torch module (or TorchScript) on NumPy arrays, without gradients, returning NumPy."""
    import torch

    def run(*arrays):
        with torch.no_grad():
            return module(*(torch.from_numpy(a) for a in arrays)).numpy()

    return run


register(TorchScriptExporter())
