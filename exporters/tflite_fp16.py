"""TFLite with fp16 weights (TFLite's "float16 quantization"), for the edge parts.

The fp32 TFLite export is rewritten by ``ai-edge-quantizer`` (a dependency of litert-torch) with its float-casting
weight-only recipe: every convolution and fully connected weight is stored as fp16 and read through a DEQUANTIZE
op. That halves the weights' bytes; a GPU delegate or an NPU computes in fp16, the CPU kernels in fp32. Activations
are never rounded here, and the mixing (BATCH_MATMUL reading C or C⁻¹, which are inputs, not weights) and the
artifact's inputs and outputs stay fp32: the protocol is unchanged.

Like the int8 formats it is verified by the top-1 agreement of the whole edge chain, not by a tolerance.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from datamix_cli.errors import ExportFailedError, MissingExtraError, require
from exporters._precision import Fp16EdgePart
from exporters._quiet import captured_output
from exporters.registry import register
from exporters.tflite import TfliteExporter


class TfliteFp16Exporter(Fp16EdgePart, TfliteExporter):
    name = "tflite_fp16"
    suffix = ".fp16.tflite"

    def export(self, module, example_inputs: tuple, path: Path, input_names: list[str], output_name: str) -> None:
        with tempfile.TemporaryDirectory(prefix="datamix-fp16-") as folder:
            fp32 = Path(folder) / "fp32.tflite"
            super().export(module, example_inputs, fp32, input_names, output_name)
            with captured_output() as log:
                try:
                    require("ai_edge_quantizer", self.extra)
                    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

                    recipe = quantizer.Quantizer(str(fp32))
                    recipe.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                                  algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
                    path.write_bytes(recipe.quantize(enable_progress_report=False).quantized_model)
                except MissingExtraError:
                    raise
                except Exception as exc:
                    raise ExportFailedError(f"fp16 conversion of {path.name} failed: {exc}; export fp32 instead\n{log()[-1000:]}") from exc


register(TfliteFp16Exporter())
