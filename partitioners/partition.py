"""Cutting a traced model into head, cloud and tail ``nn.Module``s.

Takes the decision (two cut points) from elsewhere. The parts share the
parameters of the traced private copy, so training them end to end trains one
model, and the user's own model is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from datamix_cli.errors import CutError
from partitioners.graph import TracedModel
from partitioners.profile import CutPoint


@dataclass(frozen=True)
class Partition:
    """head -> cloud -> tail; ``tail(cloud(head(x)))`` equals ``model(x)``."""

    head: "torch.nn.Module"  # noqa: F821
    cloud: "torch.nn.Module"  # noqa: F821
    tail: "torch.nn.Module"  # noqa: F821


def partition(traced: TracedModel, head_cut: CutPoint, tail_cut: CutPoint) -> Partition:
    if not head_cut.position < tail_cut.position:
        raise CutError(f"head cut {head_cut.name!r} must come before tail cut {tail_cut.name!r}")
    end = len(traced.compute_nodes)
    return Partition(
        head=extract_segment(traced, 0, head_cut.position),
        cloud=extract_segment(traced, head_cut.position, tail_cut.position),
        tail=extract_segment(traced, tail_cut.position, end),
    )


def _crossing_value(traced: TracedModel, position: int):
    if position == len(traced.compute_nodes):
        return traced.output_value
    live = traced.live_values(position)
    if len(live) != 1:
        raise CutError(f"position {position} has {len(live)} live tensors; only single-tensor cuts are valid")
    return live[0]


def extract_segment(traced: TracedModel, start: int, end: int):
    """A GraphModule running ``compute_nodes[start:end]`` from the tensor crossing ``start``."""
    import torch.fx

    graph = torch.fx.Graph()
    source = _crossing_value(traced, start)
    env = {source: graph.placeholder("x")}

    def lookup(node):
        if node not in env:
            if node.op != "get_attr":
                raise CutError(f"{node.name} is needed across the cut; the cut is not valid")
            env[node] = graph.get_attr(node.target)
        return env[node]

    for node in traced.compute_nodes[start:end]:
        env[node] = graph.node_copy(node, lookup)
    graph.output(lookup(_crossing_value(traced, end)))
    graph.lint()
    return torch.fx.GraphModule(traced.module, graph).eval()
