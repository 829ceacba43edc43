"""FLOPs against hand-computed numbers (FLOPs = 2 x MACs)."""

import torch
from torch import nn

from partitioners.graph import trace_model
from partitioners.profile import profile_model


def profile(module, shape):
    return profile_model(trace_model(module), shape)


def test_linear_is_two_flops_per_mac():
    p = profile(nn.Linear(8, 4), (1, 8))
    assert p.total_macs == 8 * 4
    assert p.total_flops == 2 * 8 * 4


def test_conv2d_counts_output_elements_times_kernel_volume():
    # out 3x3x3, each 2*3*3 MACs
    p = profile(nn.Conv2d(2, 3, 3), (1, 2, 5, 5))
    assert p.total_macs == 3 * 3 * 3 * (2 * 3 * 3)
    assert p.total_flops == 972


def test_depthwise_conv_divides_by_groups():
    p = profile(nn.Conv2d(4, 4, 3, padding=1, groups=4), (1, 4, 6, 6))
    assert p.total_macs == 4 * 6 * 6 * 9


def test_conv1d():
    p = profile(nn.Conv1d(1, 2, 3), (1, 1, 10))
    assert p.total_flops == 2 * (2 * 8 * 3)


def test_flops_are_per_sample_and_a_batch_other_than_one_is_refused():
    import pytest

    from datamix_cli.errors import InputShapeError

    assert profile(nn.Linear(8, 4), (1, 8)).total_flops == 2 * 8 * 4  # one sample, not a batch
    with pytest.raises(InputShapeError, match="batch size 1"):
        profile(nn.Linear(8, 4), (5, 8))


def test_uncounted_ops_are_listed_with_counts_not_silently_zero():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.BatchNorm1d(8))
    p = profile(model, (1, 8))
    assert p.uncounted_ops["relu"] == 2
    assert p.uncounted_ops["native_batch_norm"] == 1 or "batch_norm" in "".join(p.uncounted_ops)
    assert p.total_flops == 2 * 2 * 64


def test_view_ops_are_free_not_uncounted():
    class Flat(nn.Module):
        def forward(self, x):
            return torch.flatten(x, 1).reshape(x.shape[0], -1)

    p = profile(nn.Sequential(Flat(), nn.Linear(4, 2)), (1, 2, 2))
    assert p.uncounted_ops == {}


def test_layer_flops_add_up_to_the_total():
    from examples.models import resnet

    p = profile(resnet(), (1, 1, 32, 32))
    assert sum(layer.flops for layer in p.layers) == p.total_flops
    assert p.total_flops > 0


class SelfAttention(nn.Module):
    def __init__(self, embed: int = 16, heads: int = 2):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed, heads, batch_first=True)
        self.fc = nn.Linear(embed, 4)

    def forward(self, x):
        y, _ = self.attn(x, x, x, need_weights=False)
        return self.fc(y.mean(1))


def unfused_flops(module, shape) -> int:
    """torch's own counter on the unfused path (train mode, the math attention kernel, i.e. plain matmuls):
    an oracle that shares no formula with ours."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    module.train()
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        module(torch.zeros(shape))
    module.eval()
    return counter.get_total_flops()


def test_eval_mode_fused_attention_is_counted_like_the_unfused_path():
    """Eval-mode attention runs as one fused kernel (ViT's case): it must cost what its parts cost."""
    attention = SelfAttention().eval()
    encoder = nn.Sequential(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), nn.Flatten(), nn.Linear(80, 3)).eval()
    # By hand, E = 16, L = S = 5: projections 4·5·16² + scores and weighted sum 2·5·5·16 = 5,920 MACs.
    by_hand = {"attention": 2 * (5920 + 16 * 4), "encoder": 2 * (5920 + 2 * 5 * 16 * 32 + 80 * 3)}
    for name, module in (("attention", attention), ("encoder", encoder)):
        p = profile(module, (1, 5, 16))
        assert not {"_native_multi_head_attention", "_transformer_encoder_layer_fwd"} & set(p.uncounted_ops), p.uncounted_ops
        assert p.total_flops == by_hand[name] == unfused_flops(module, (1, 5, 16)), name


def test_scaled_dot_product_attention_on_the_cpu_is_counted():
    import torch.nn.functional as F

    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            q = x.view(1, 5, 2, 8).transpose(1, 2)  # 2 heads of 8
            return self.fc(F.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(1, 5, 16))

    p = profile(Heads().eval(), (1, 5, 16))
    assert "_scaled_dot_product_flash_attention_for_cpu" not in p.uncounted_ops
    assert p.total_flops == 2 * (2 * 5 * 5 * (8 + 8) + 5 * 16 * 2)  # QKᵀ and attention·V per head, then the linear
