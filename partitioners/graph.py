"""Tracing a model into a torch.fx graph and reasoning about liveness.

We trace with ``torch.fx.symbolic_trace`` (module-level nodes keep their
``nn_module_stack``, so cut points get readable module paths and the parts stay
ordinary ``nn.Module``s that TorchScript, ONNX and litert-torch accept). A
``torch.export`` archive arrives already as an fx graph at ATen level and is
used as is. Models with data-dependent control flow cannot be symbolically
traced; ``torch.export`` them (it records one path) and pass the ``.pt2``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property

from datamix_cli.errors import TraceError

# Nodes torch.export inserts to check input shapes; they would pin the parts to
# the exported batch size and hold no computation.
_GUARD_TARGETS = {"_guards_fn"}


@dataclass(frozen=True)
class TracedModel:
    """A private, traced copy of the user's model (the original is never touched)."""

    module: "torch.fx.GraphModule"  # noqa: F821

    @cached_property
    def placeholder(self):
        return next(n for n in self.module.graph.nodes if n.op == "placeholder")

    @cached_property
    def output_value(self):
        out = next(n for n in self.module.graph.nodes if n.op == "output")
        value = out.args[0]
        # torch.export graphs return a flat tuple even for a single tensor.
        if isinstance(value, (tuple, list)) and len(value) == 1:
            value = value[0]
        return value

    @cached_property
    def compute_nodes(self) -> tuple:
        """Nodes that compute something, in topological order (no inputs, attributes or output)."""
        return tuple(n for n in self.module.graph.nodes if n.op in ("call_module", "call_function", "call_method"))

    @cached_property
    def _last_use(self) -> dict:
        """For each value, the position of its last consumer (len(compute_nodes) for the output)."""
        position = {n: i for i, n in enumerate(self.compute_nodes)}
        end = len(self.compute_nodes)
        last = {}
        for node in self.module.graph.nodes:
            if node.op == "get_attr":
                continue  # parameters are reachable from every part; they never cross a cut
            for user in node.users:
                last[node] = max(last.get(node, -1), position.get(user, end))
        return last

    def live_values(self, cut: int) -> list:
        """Values defined before position ``cut`` and used at or after it."""
        defined_before = [self.placeholder, *self.compute_nodes[:cut]]
        return [v for v in defined_before if self._last_use.get(v, -1) >= cut]


def eval_mode(model):
    """Switch to eval mode; a torch.export module fixed its mode when it was exported."""
    try:
        return model.eval()
    except NotImplementedError:
        return model


def trace_model(model) -> TracedModel:
    """Trace a deep copy of ``model``; raise :class:`TraceError` with the reason if impossible."""
    import torch
    import torch.fx

    model = eval_mode(copy.deepcopy(model))
    if isinstance(model, torch.fx.GraphModule):
        graph_module = model
        for node in list(graph_module.graph.nodes):
            if node.op == "call_module" and node.target in _GUARD_TARGETS and not node.users:
                graph_module.graph.erase_node(node)
        graph_module.recompile()
    else:
        try:
            graph_module = torch.fx.symbolic_trace(model)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TraceError(
                f"cannot trace {type(model).__name__} with torch.fx ({reason}); "
                "export it with torch.export.export and pass the .pt2 archive instead"
            ) from exc
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise TraceError(f"datamix splits models with exactly one input tensor; this one takes {len(placeholders)}")
    traced = TracedModel(graph_module)
    if not isinstance(traced.output_value, torch.fx.Node):
        raise TraceError("the model must return a single tensor, not a tuple or dict")
    return traced
