"""ONNX with fp16 weights and activations, for the edge parts.

The fp32 ONNX export is converted by onnxruntime's own ``convert_float_to_float16`` (``onnxruntime.transformers``,
no extra dependency), with the graph's inputs and outputs kept fp32 (``keep_io_types``). The node that reads the
mixing matrix (C in the head, C⁻¹ in the tail) stays fp32, and so does every reshape between it and the artifact's
boundary: the mixtures leave the head in fp32 and the cloud outputs are de-mixed in fp32 before anything rounds
them, since de-mixing amplifies rounding by up to cond(C). The protocol is unchanged.

Runtimes with fp16 kernels (ARM CPUs with fp16 arithmetic, GPUs, NPUs) compute in fp16; onnxruntime's x86 CPU
provider has few and casts around the rest, so on this kind of machine the format saves bytes, not time.
Like the int8 formats it is verified by the top-1 agreement of the whole edge chain, not by a tolerance.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from datamix_cli.errors import ExportFailedError, require
from exporters._precision import Fp16EdgePart
from exporters._quiet import captured_output
from exporters.onnx import OnnxExporter
from exporters.registry import register

# Ops that only move or relabel elements: on the mixing side of the boundary they carry the fp32 mixtures.
_LAYOUT_OPS = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"})


class OnnxFp16Exporter(Fp16EdgePart, OnnxExporter):
    name = "onnx_fp16"
    suffix = ".fp16.onnx"

    def export(self, module, example_inputs: tuple, path: Path, input_names: list[str], output_name: str) -> None:
        require("onnxruntime", self.extra)
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with tempfile.TemporaryDirectory(prefix="datamix-fp16-") as folder:
            fp32 = Path(folder) / "fp32.onnx"
            super().export(module, example_inputs, fp32, input_names, output_name)
            model = onnx.load(str(fp32))
            with captured_output() as log:
                try:
                    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=fp32_nodes(model.graph, input_names[1:]))
                    drop_round_trips(half.graph)
                    onnx.save(half, str(path))
                except Exception as exc:
                    raise ExportFailedError(f"fp16 conversion of {path.name} failed: {exc}; export fp32 instead\n{log()[-1000:]}") from exc


def fp32_nodes(graph, matrices) -> list[str]:
    """The nodes that read one of ``matrices`` (the mixing), and the layout ops joining them to the graph's data
    inputs and outputs: everything that touches the fp32 side of the mixing."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    keep = {node.name: node for node in graph.node if set(matrices) & set(node.input)}
    frontier = list(keep.values())
    while frontier:
        node = frontier.pop()
        upstream = [producer[i] for i in node.input if i in producer]
        downstream = [c for o in node.output for c in consumers.get(o, [])]
        for neighbour in (*upstream, *downstream):
            if neighbour.op_type in _LAYOUT_OPS and neighbour.name not in keep:
                keep[neighbour.name] = neighbour
                frontier.append(neighbour)
    return sorted(keep)


def drop_round_trips(graph) -> None:
    """Read the fp32 tensor itself wherever a Cast to fp32 reads a Cast to fp16 of an fp32 tensor.

    The converter casts every fp32 graph input to fp16 and every output from fp16, then casts back around the nodes
    kept fp32, so without this the mixing would read C rounded to fp16 and the mixtures would leave rounded."""
    import onnx

    def cast_to(node):
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    producer = {out: node for node in graph.node for out in node.output}
    fp32 = {v.name for v in (*graph.input, *graph.value_info) if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    for node in graph.node:
        source = producer.get(node.input[0]) if cast_to(node) == onnx.TensorProto.FLOAT else None
        if source is not None and cast_to(source) == onnx.TensorProto.FLOAT16 and source.input[0] in fp32:
            node.input[0] = source.input[0]
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    dead = [node for node in graph.node if node.op_type == "Cast" and not set(node.output) & used]
    for node in dead:
        graph.node.remove(node)


register(OnnxFp16Exporter())
