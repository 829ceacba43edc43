"""Counting FLOPs of ATen ops as they run.

One rule, stated once: FLOPs = 2 x MACs, as in ``torch.utils.flop_counter``,
whose per-op formulas (matmul, conv, attention families) are the counting
table. Ops that only move or view data cost nothing. Every other op (ReLU,
add, batch-norm, pooling, ...) is *not counted* and is reported by name with
its number of calls, so a reader sees what the totals leave out.
"""

from __future__ import annotations

from collections import Counter

FLOPS_PER_MAC = 2
FLOPS_RULE = "FLOPs = 2 x MACs (torch.utils.flop_counter convention); elementwise ops not counted"

# Data movement and metadata: no arithmetic, so zero by definition, not by omission.
FREE_OPS = frozenset(
    {
        "alias", "as_strided", "cat", "clone", "contiguous", "copy_", "detach", "empty", "empty_like",
        "expand", "flatten", "lift_fresh", "new_empty", "permute", "reshape", "select", "slice",
        "split", "split_with_sizes", "squeeze", "stack", "sym_size", "t", "transpose", "unbind",
        "unsafe_view", "_unsafe_view", "unsqueeze", "view", "zeros", "zeros_like", "ones_like",
        "_to_copy", "to", "full", "fill_", "dropout", "native_dropout",
    }
)


def _op_name(func) -> str:
    return func._overloadpacket.__name__


def make_counter():
    """A ``TorchDispatchMode`` that adds up FLOPs and tallies uncounted ops.

    Built lazily so importing this module does not import torch.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class OpCounter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.flops = 0
            self.uncounted: Counter[str] = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.flops += int(formula(*args, **kwargs, out_val=out))
            elif _op_name(func) not in FREE_OPS:
                self.uncounted[_op_name(func)] += 1
            return out

    return OpCounter()
