"""ONNX with int8 weights and activations (QDQ static quantization by onnxruntime), for the edge parts.

The fp32 ONNX export is quantized by ``onnxruntime.quantization.quantize_static``: QDQ format, weights int8 per
output channel, activations uint8 (the u8s8 kernels x86 and ARM run fastest; s8s8 took 10x longer here),
ranges from min-max calibration over inputs the caller gives (the fine-tuning data, mixed as the protocol mixes).
The nodes that read the mixing matrix (C in the head, C⁻¹ in the tail) stay fp32, and so do the artifact's
inputs and outputs: the protocol is unchanged. Matrix products (a classifier's Gemm) read int8 but write fp32:
rounding the logits to uint8 steps flips the top-1 of near ties (the ResNet example's chain agreed on 98.9 % of
held-out inputs with quantized logits, 99.2 % without).

Quantized outputs differ from PyTorch by design, so this format is verified by agreement, not by a tolerance:
``verification = "agreement"`` tells the export loop to check the top-1 agreement of the whole edge chain
(int8 head, fp32 cloud, int8 tail) with the PyTorch chain on held-out inputs, at least ``min_agreement``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from datamix_cli.errors import ExportFailedError, require
from exporters._precision import Int8EdgePart
from exporters._quiet import captured_output
from exporters.onnx import OnnxExporter
from exporters.registry import register


class OnnxInt8Exporter(Int8EdgePart, OnnxExporter):
    name = "onnx_int8"
    suffix = ".int8.onnx"

    def export(self, module, example_inputs: tuple, path: Path, input_names: list[str], output_name: str, calibration=None) -> None:
        require("onnxruntime", self.extra)
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        import onnx

        self.check_calibration(calibration, path)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.cases = iter([dict(zip(input_names, case)) for case in calibration])

            def get_next(self):
                return next(self.cases, None)

        with tempfile.TemporaryDirectory(prefix="datamix-int8-") as folder:
            fp32, prepared = Path(folder) / "fp32.onnx", Path(folder) / "prepared.onnx"
            super().export(module, example_inputs, fp32, input_names, output_name)
            keep = [n.name for n in onnx.load(str(fp32)).graph.node if set(input_names[1:]) & set(n.input)]  # mixing, de-mixing
            with captured_output() as log:
                try:
                    quant_pre_process(str(fp32), str(prepared))
                    quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep,
                                    extra_options={"OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"]})
                except Exception as exc:
                    raise ExportFailedError(f"int8 quantization of {path.name} failed: {exc}; export fp32 or fp16 instead\n{log()[-1000:]}") from exc


register(OnnxInt8Exporter())
