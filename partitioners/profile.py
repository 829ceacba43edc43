"""Per-layer cost and every valid cut point of a traced model.

A cut at position ``p`` separates ``compute_nodes[:p]`` from the rest. It is
valid when exactly one tensor is live across it, so a residual block (whose
input is still needed by the skip connection) is never cut inside, and a cut
never has to ship two tensors. Position 0 is the raw input.

Names: a cut is named by the outermost module that finishes with its tensor
(``layer1``, ``encoder.layers.encoder_layer_3``); a tensor computed inside a
module by a plain function is ``<module path>.<fx node name>``
(``layer1.0.add``); an indexing op is written as the indexing it does on the
named tensor it reads (``encoder[:,0]``, a ViT's class token; a tuple-returning
module's first output is ``encoder.0.self_attention[0]``) rather than fx's
``getitem_29``. The fx node name is always an alias.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass

from datamix_cli.errors import CutError, InputShapeError, TraceError
from partitioners.flops import FLOPS_PER_MAC, make_counter
from partitioners.graph import TracedModel

INPUT_CUT = "input"


@dataclass(frozen=True)
class LayerCost:
    """One compute node and the FLOPs it costs per sample."""

    name: str
    module_path: str
    flops: int


@dataclass(frozen=True)
class CutPoint:
    """A place the model can be cut, with what lies before it and what crosses it."""

    name: str
    aliases: tuple[str, ...]
    position: int
    value: str  # fx node name of the tensor crossing the cut
    flops_prefix: int
    params_prefix: int
    activation_shape: tuple[int, ...]  # per sample
    dtype: str
    itemsize: int

    @property
    def macs_prefix(self) -> int:
        return self.flops_prefix // FLOPS_PER_MAC

    @property
    def elements(self) -> int:
        n = 1
        for d in self.activation_shape:
            n *= d
        return n

    @property
    def activation_bytes(self) -> int:
        return self.elements * self.itemsize


@dataclass(frozen=True)
class GraphProfile:
    """Costs of one model at one input shape (FLOPs are per sample)."""

    input_shape: tuple[int, ...]
    total_flops: int
    total_params: int
    layers: tuple[LayerCost, ...]
    cut_points: tuple[CutPoint, ...]
    classifier_position: int
    classifier_name: str
    uncounted_ops: dict[str, int]

    @property
    def total_macs(self) -> int:
        return self.total_flops // FLOPS_PER_MAC

    def cut(self, name: str) -> CutPoint:
        """Resolve a cut by its name or one of its aliases."""
        for cut in self.cut_points:
            if name == cut.name or name in cut.aliases:
                return cut
        raise CutError(f"unknown cut {name!r}; valid cuts: {', '.join(c.name for c in self.cut_points)}")


def profile_model(traced: TracedModel, input_shape: tuple[int, ...]) -> GraphProfile:
    """Run the traced model once on zeros of ``input_shape`` (batch 1) and measure every node."""
    import torch

    if len(input_shape) < 2 or input_shape[0] != 1 or any(d <= 0 for d in input_shape):
        raise InputShapeError(f"input shape {input_shape} must be positive and start with batch size 1, e.g. 1,1,32,32")
    flops, values, uncounted = _run_counting(traced, torch.zeros(input_shape))
    nodes = traced.compute_nodes
    layers = tuple(LayerCost(n.name, _innermost_path(n), flops[n]) for n in nodes)
    params_before = _params_prefix(traced)
    module_ends = _module_end_positions(nodes)
    index_of = {n: i for i, n in enumerate(nodes)}

    cuts, seen_values, used_names = [], set(), set()
    prefix = 0
    for position in range(len(nodes)):
        if position:
            prefix += flops[nodes[position - 1]]
        live = traced.live_values(position)
        if len(live) != 1 or live[0] in seen_values or not isinstance(values.get(live[0]), torch.Tensor):
            continue
        value = live[0]
        seen_values.add(value)
        tensor = values[value]
        name, aliases = _cut_names(value, position, index_of, module_ends)
        if name in used_names:  # two indexings that read alike: fall back to fx's unique node name
            name, aliases = _scoped_node_name(value), (value.name,)
        used_names.add(name)
        cuts.append(
            CutPoint(
                name=name,
                aliases=aliases,
                position=position,
                value=value.name,
                flops_prefix=prefix,
                params_prefix=params_before[position],
                activation_shape=tuple(tensor.shape[1:]),
                dtype=str(tensor.dtype).removeprefix("torch."),
                itemsize=tensor.element_size(),
            )
        )
    classifier = _classifier_position(traced)
    return GraphProfile(
        input_shape=tuple(input_shape),
        total_flops=sum(flops.values()),
        total_params=params_before[len(nodes)],
        layers=layers,
        cut_points=tuple(cuts),
        classifier_position=classifier,
        classifier_name=_innermost_path(nodes[classifier]) or nodes[classifier].name,
        uncounted_ops=dict(sorted(uncounted.items())),
    )


def negative_shares(traced: TracedModel, profile: GraphProfile, x) -> dict[str, float]:
    """Share of negative entries of each cut's tensor on the batch ``x``: 0 after a ReLU (or a sigmoid, a pooling of
    one), clearly above 0 for features of both signs, such as a residual sum before its activation."""
    import torch
    import torch.fx

    wanted = {cut.value: cut.name for cut in profile.cut_points}
    shares = {}

    class Recording(torch.fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            if node.name in wanted and isinstance(result, torch.Tensor) and result.is_floating_point():
                shares[wanted[node.name]] = float((result < 0).float().mean())
            return result

    with torch.no_grad():
        Recording(traced.module).run(x)
    return shares


def _run_counting(traced: TracedModel, example):
    import torch
    import torch.fx

    flops, values, uncounted = {}, {}, Counter()
    current = []

    class Counting(torch.fx.Interpreter):
        def run_node(self, node):
            current[:] = [node]
            counter = make_counter()
            with counter:
                result = super().run_node(node)
            flops[node] = counter.flops
            uncounted.update(counter.uncounted)
            values[node] = result
            return result

    try:
        with torch.no_grad():
            Counting(traced.module).run(example)
    except Exception as exc:
        # fx appends the graph and a traceback hint to the message; the first line is the reason.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = current[0].name if current else "start"
        raise InputShapeError(f"the model fails on input shape {tuple(example.shape)} at {where}: {reason}") from exc
    output = values.get(traced.output_value)
    if not isinstance(output, torch.Tensor):
        raise TraceError(f"the model must return a single tensor, it returned {type(output).__name__}")
    return flops, values, uncounted


def _module_paths(node) -> list[str]:
    """Module paths enclosing ``node``, outermost first (the root module excluded)."""
    stack = node.meta.get("nn_module_stack") or {}
    return [path for path, _ in stack.values() if path]


def _innermost_path(node) -> str:
    paths = _module_paths(node)
    return paths[-1] if paths else ""


def _module_end_positions(nodes) -> dict[str, int]:
    """For each module path, the position of its last compute node."""
    ends = {}
    for position, node in enumerate(nodes):
        for path in _module_paths(node):
            ends[path] = position
    return ends


def _cut_names(value, position: int, index_of: dict, module_ends: dict[str, int]) -> tuple[str, tuple[str, ...]]:
    """Name a cut by the outermost module that finishes with its tensor; inner ones become aliases."""
    if position == 0 or value not in index_of:
        return INPUT_CUT, (value.name,)
    finished = _finished_modules(value, index_of, module_ends)
    if finished:
        return finished[0], tuple(finished[1:]) + (value.name,)
    name = _value_label(value, index_of, module_ends)
    return name, (value.name,) if name != value.name else ()


def _finished_modules(node, index_of: dict, module_ends: dict[str, int]) -> list[str]:
    """Module paths whose last compute node is ``node``, outermost first."""
    index = index_of.get(node)
    return [p for p in _module_paths(node) if index is not None and module_ends.get(p) == index]


def _scoped_node_name(node) -> str:
    enclosing = _innermost_path(node)
    return f"{enclosing}.{node.name}" if enclosing else node.name


def _value_label(node, index_of: dict, module_ends: dict[str, int]) -> str:
    """A readable name for any value: the module that finishes with it, an indexing of one, or its scoped node name."""
    if node.op == "placeholder":
        return INPUT_CUT
    finished = _finished_modules(node, index_of, module_ends)
    if finished:
        return finished[0]
    return _indexing_name(node, index_of, module_ends) or _scoped_node_name(node)


def _indexing_name(node, index_of: dict, module_ends: dict[str, int]) -> str | None:
    """``x[:, 0]`` as ``<name of x>[:,0]``; None for anything but indexing with constants."""
    import torch.fx

    if node.op != "call_function" or node.target is not operator.getitem or len(node.args) != 2:
        return None
    source, index = node.args
    if not isinstance(source, torch.fx.Node):
        return None
    text = _index_text(index)
    if text is None:
        return None
    return f"{_value_label(source, index_of, module_ends)}[{text}]"


def _index_text(index) -> str | None:
    """Python's indexing syntax for constant indices, without spaces; None if any part is computed."""
    if isinstance(index, tuple):
        parts = [_index_text(i) for i in index]
        return None if not parts or any(p is None for p in parts) else ",".join(parts)
    if index is None:
        return "None"
    if index is Ellipsis:
        return "..."
    if isinstance(index, bool):
        return None
    if isinstance(index, int):
        return str(index)
    if isinstance(index, slice):
        bounds = [index.start, index.stop, index.step]
        if any(b is not None and (isinstance(b, bool) or not isinstance(b, int)) for b in bounds):
            return None
        text = ":".join("" if b is None else str(b) for b in bounds[:2])
        return text + (f":{index.step}" if index.step is not None else "")
    return None


def _parameters_of(traced: TracedModel, node) -> list:
    import torch

    if node.op == "call_module":
        return list(traced.module.get_submodule(node.target).parameters())
    params = []
    for arg in node.all_input_nodes:
        if arg.op == "get_attr":
            attr = _get_attr(traced.module, arg.target)
            if isinstance(attr, torch.nn.Parameter):
                params.append(attr)
    return params


def _get_attr(module, target: str):
    for part in target.split("."):
        module = getattr(module, part)
    return module


def _params_prefix(traced: TracedModel) -> list[int]:
    """Parameters used by compute_nodes[:p], for every p (shared parameters counted once)."""
    seen, total, prefix = set(), 0, [0]
    for node in traced.compute_nodes:
        for p in _parameters_of(traced, node):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        prefix.append(total)
    return prefix


def _classifier_position(traced: TracedModel) -> int:
    """Position of the final layer with parameters: the classifier the tail must keep on the edge."""
    for position in reversed(range(len(traced.compute_nodes))):
        if _parameters_of(traced, traced.compute_nodes[position]):
            return position
    raise TraceError("the model has no layer with parameters, so there is no classifier to keep on the edge")
