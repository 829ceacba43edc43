"""ONNX through ``torch.onnx.export(dynamo=True)``, run with onnxruntime."""

from __future__ import annotations

from pathlib import Path

from datamix_cli.errors import ExportFailedError, require
from exporters._quiet import captured_output
from exporters.registry import register


class OnnxExporter:
    name = "onnx"
    suffix = ".onnx"
    extra = "onnx"
    default_atol = 1e-4
    dynamic_batch = False
    roles = ("head", "tail")  # the parts of a split this format is written for

    def check_available(self) -> None:
        for module in ("onnx", "onnxruntime", "onnxscript"):
            require(module, self.extra)

    def export(self, module, example_inputs: tuple, path: Path, input_names: list[str], output_name: str) -> None:
        import torch

        with captured_output() as log:
            try:
                torch.onnx.export(
                    module,
                    example_inputs,
                    str(path),
                    dynamo=True,
                    external_data=False,  # one self-contained file, so its sha256 covers the weights
                    input_names=input_names,
                    output_names=[output_name],
                )
            except Exception as exc:
                raise ExportFailedError(f"ONNX export of {path.name} failed: {exc}\n{log()[-2000:]}") from exc

    def load(self, path: Path, threads: int = 1):
        ort = require("onnxruntime", self.extra)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(*arrays):
            return session.run(None, dict(zip(names, arrays)))[0]

        return run


register(OnnxExporter())
