"""TFLite (LiteRT) through litert-torch, run with ai-edge-litert.

``tflite-runtime`` 2.14.0, the last release, cannot load models under NumPy 2
(``_ARRAY_API not found``); it is used only as a fallback when it imports.
"""

from __future__ import annotations

from pathlib import Path

from datamix_cli.errors import ExportFailedError, MissingExtraError, require
from exporters._quiet import captured_output
from exporters.registry import register


def interpreter_class():
    """The LiteRT ``Interpreter``: ai-edge-litert, else tflite-runtime if it imports."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except (ImportError, AttributeError) as exc:
        raise MissingExtraError(
            f"no TFLite runtime: ai-edge-litert is not installed and tflite-runtime does not load ({exc}); "
            "install it with: pip install 'datamix[tflite]'"
        ) from exc


class TfliteExporter:
    name = "tflite"
    suffix = ".tflite"
    extra = "tflite"
    default_atol = 1e-4
    dynamic_batch = False
    roles = ("head", "tail")  # the parts of a split this format is written for

    def check_available(self) -> None:
        with captured_output():  # importing litert-torch prints torchao and absl noise
            require("litert_torch", self.extra)
        interpreter_class()

    def export(self, module, example_inputs: tuple, path: Path, input_names: list[str], output_name: str) -> None:
        with captured_output() as log:
            try:
                litert_torch = require("litert_torch", self.extra)
                litert_torch.convert(module.eval(), example_inputs).export(str(path))
            except MissingExtraError:
                raise
            except Exception as exc:
                raise ExportFailedError(f"TFLite conversion of {path.name} failed: {exc}\n{log()[-2000:]}") from exc

    def load(self, path: Path, threads: int = 1):
        with captured_output():  # the XNNPACK delegate announces itself on stderr
            interpreter = interpreter_class()(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
        runner = interpreter.get_signature_runner()
        # litert-torch names positional inputs args_0, args_1, ... in order.
        names = sorted(interpreter.get_signature_list()["serving_default"]["inputs"], key=lambda n: int(n.rsplit("_", 1)[1]))

        def run(*arrays):
            outputs = runner(**dict(zip(names, arrays)))
            return next(iter(outputs.values()))

        return run


register(TfliteExporter())
