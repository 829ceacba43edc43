"""TFLite with int8 weights and activations (PT2E static quantization by litert-torch), for the edge parts.

The part is captured with ``torch.export``, annotated by litert-torch's ``PT2EQuantizer`` (symmetric int8, weights
per output channel), calibrated on inputs the caller gives (the fine-tuning data, mixed as the protocol mixes), and
converted with the matching ``QuantConfig``. The quantizer annotates convolutions, linear layers, pooling, adds and
concatenations only, so the matrix products that read the mixing matrix (C in the head, C⁻¹ in the tail) stay fp32.
A linear layer that writes the part's output (a classifier's logits) stays fp32 as well: TFLite has no int8 layer
with an fp32 output (onnx_int8's classifier reads int8 and writes fp32), and int8 logits flip near ties.

The converter folds a quantize that reads a model input, or a dequantize that writes a model output, into the
signature, which would make the artifact's input or output int8. Where the quantized graph has such a boundary, the
part is wrapped in an fp16 round trip there (a CAST pair the converter does not fold), so the artifact's inputs and
outputs stay fp32 and the protocol is unchanged. The round trip rounds to fp16 only values that int8 then quantizes
(an input) or that int8 produced (an output, at most 128 steps of its scale), so it adds far less error than int8.

Like ``onnx_int8`` it is verified by the top-1 agreement of the whole edge chain, not by a tolerance.
"""

from __future__ import annotations

from pathlib import Path

from datamix_cli.errors import ExportFailedError, MissingExtraError, require
from exporters._precision import Int8EdgePart
from exporters._quiet import captured_output
from exporters.registry import register
from exporters.tflite import TfliteExporter

_FP16_MAX = 65504.0


class TfliteInt8Exporter(Int8EdgePart, TfliteExporter):
    name = "tflite_int8"
    suffix = ".int8.tflite"

    def export(self, module, example_inputs: tuple, path: Path, input_names: list[str], output_name: str, calibration=None) -> None:
        self.check_calibration(calibration, path)
        with captured_output() as log:
            try:
                litert_torch = require("litert_torch", self.extra)
                from litert_torch.quantize.quant_config import QuantConfig

                quantized, quantizer = _quantize(module.eval(), example_inputs, calibration, frozenset(), False)
                inputs, output = _folded_boundaries(quantized)
                if inputs or output:
                    quantized, quantizer = _quantize(module.eval(), example_inputs, calibration, inputs, output)
                litert_torch.convert(quantized, example_inputs, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
            except (MissingExtraError, ExportFailedError):
                raise
            except Exception as exc:
                raise ExportFailedError(f"int8 TFLite quantization of {path.name} failed: {exc}; export fp32 instead\n{log()[-1000:]}") from exc


def _quantize(module, example_inputs, calibration, fp16_inputs: frozenset, fp16_output: bool):
    """The calibrated, converted PT2E graph of ``module`` with fp16 round trips at the given boundaries."""
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    wrapped = _with_fp16_boundaries(module, fp16_inputs, fp16_output) if fp16_inputs or fp16_output else module
    observed = _float_logits(quantize_pt2e.prepare_pt2e(torch.export.export(wrapped, example_inputs).module(), quantizer))
    with torch.no_grad():
        for case in calibration:
            observed(*(torch.from_numpy(a) for a in case))
    return quantize_pt2e.convert_pt2e(observed, fold_quantize=False), quantizer


def _float_logits(observed):
    """``observed`` with the linear layer that writes the part's output (a classifier's logits) left fp32: the
    observers on its input and output are dropped. Rounded to int8, logits flip near ties: the MobileNetV3 tail's
    own agreement was 98.6 % with int8 logits, the ONNX tail's 99.7 % with fp32 ones (onnx_int8 keeps them fp32 too).
    TFLite has no int8 layer with an fp32 output, so the whole layer stays fp32; it is a part's last and smallest."""
    import torch

    output = next(n for n in observed.graph.nodes if n.op == "output")
    result = output.args[0][0] if isinstance(output.args[0], (tuple, list)) else output.args[0]
    linear = result.args[0] if _is_observer(result) else None
    if linear is None or linear.target is not torch.ops.aten.linear.default:
        return observed
    for observer in (result, linear.args[0]):
        if _is_observer(observer) and len(observer.users) == 1:
            observer.replace_all_uses_with(observer.args[0])
            observed.graph.erase_node(observer)
    observed.recompile()
    return observed


def _is_observer(node) -> bool:
    return node.op == "call_module" and node.target.startswith("activation_post_process") and len(node.args) == 1


def _folded_boundaries(graph) -> tuple[frozenset, bool]:
    """Which inputs (by position) a quantize reads directly, and whether a dequantize writes the output."""
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    inputs = frozenset(i for i, node in enumerate(placeholders) if any("quantize_per_tensor" in str(u.target) for u in node.users))
    out = next(n for n in graph.graph.nodes if n.op == "output").args[0]
    out = out[0] if isinstance(out, (tuple, list)) else out
    output = "dequantize" in str(out.target)
    if output:
        scale = float(out.args[1]) if len(out.args) > 1 and isinstance(out.args[1], float) else 0.0
        if scale * 128 > _FP16_MAX:
            raise ExportFailedError(f"int8 output scale {scale:g} spans more than fp16 holds; export fp32 instead")
    return inputs, output


def _with_fp16_boundaries(inner, fp16_inputs: frozenset, fp16_output: bool):
    """``inner`` with an fp16 round trip on the given inputs and the output (a CAST pair the converter keeps)."""
    import torch

    class Boundary(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            args = [a.to(torch.float16).to(torch.float32) if i in fp16_inputs else a for i, a in enumerate(args)]
            out = self.inner(*args)
            return out.to(torch.float16).to(torch.float32) if fp16_output else out

    return Boundary()


register(TfliteInt8Exporter())
