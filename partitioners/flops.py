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


def _attention_macs(query, key, embed_dim: int) -> int:
    """MACs of one multi-head attention on batch-first (B, L, E) query and (B, S, E) key/value:
    Q/K/V and output projections, QKᵀ and attention·V (summed over heads: E per query-key pair)."""
    batch, length, _ = query.shape
    source = key.shape[1]
    projections = batch * (2 * length + 2 * source) * embed_dim * embed_dim
    return projections + 2 * batch * length * source * embed_dim


def _native_mha_flops(query, key, value, embed_dim, num_head, *args, **kwargs) -> int:
    return FLOPS_PER_MAC * _attention_macs(query, key, int(embed_dim))


def _encoder_layer_flops(src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu, norm_first,
                         eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2, ffn_weight_1, *args, **kwargs) -> int:
    batch, length, _ = src.shape
    hidden = ffn_weight_1.shape[0]
    ffn = 2 * batch * length * int(embed_dim) * hidden
    return FLOPS_PER_MAC * (_attention_macs(src, src, int(embed_dim)) + ffn)


def _cpu_sdpa_flops(query, key, value, *args, **kwargs) -> int:
    """(B, H, L, d) queries against (B, H, S, d) keys and (B, H, S, dv) values: QKᵀ plus attention·V."""
    *lead, length, depth = query.shape
    source, value_depth = key.shape[-2], value.shape[-1]
    heads = 1
    for d in lead:
        heads *= d
    return FLOPS_PER_MAC * heads * length * source * (depth + value_depth)


# Fused kernels that torch's table does not cover: eval-mode nn.MultiheadAttention and
# nn.TransformerEncoderLayer (the "fast path"), and scaled-dot-product attention's CPU kernel.
# Without them a ViT's attention would be silently missing from the budget.
FUSED_FORMULAS = {
    "_native_multi_head_attention": _native_mha_flops,
    "_transformer_encoder_layer_fwd": _encoder_layer_flops,
    "_scaled_dot_product_flash_attention_for_cpu": _cpu_sdpa_flops,
}


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
            elif _op_name(func) in FUSED_FORMULAS:
                self.flops += int(FUSED_FORMULAS[_op_name(func)](*args, **kwargs))
            elif _op_name(func) not in FREE_OPS:
                self.uncounted[_op_name(func)] += 1
            return out

    return OpCounter()
