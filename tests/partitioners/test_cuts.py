"""Cut-point enumeration: single-tensor cuts only, stable names, costs up to each cut."""

import pytest
import torch

from datamix_cli.errors import CutError, TraceError
from partitioners.graph import trace_model
from partitioners.profile import profile_model

from tests.helpers import TinyResNet, mlp


def test_sequential_can_be_cut_after_every_layer():
    p = profile_model(trace_model(mlp()), (1, 16))
    assert [c.name for c in p.cut_points] == ["input", "0", "1", "2", "3", "4", "5"]
    assert [c.flops_prefix for c in p.cut_points] == [0, 512, 512, 1024, 1024, 1536, 1536]
    assert [c.params_prefix for c in p.cut_points] == [0, 272, 272, 544, 544, 816, 816]
    assert all(c.activation_shape == (16,) and c.activation_bytes == 64 for c in p.cut_points)
    assert p.classifier_name == "6"


def test_residual_block_is_never_cut_inside():
    p = profile_model(trace_model(TinyResNet()), (1, 1, 8, 8))
    names = [c.name for c in p.cut_points]
    # Inside ``block`` only the point after the join (before ReLU) carries one tensor.
    assert names == ["input", "stem", "block.add", "block", "pool", "flatten"]
    assert "block.conv" not in names and all("block.conv" not in c.aliases for c in p.cut_points)


def test_every_cut_carries_exactly_one_live_tensor():
    from examples.models import mobilenet_v2

    traced = trace_model(mobilenet_v2())
    p = profile_model(traced, (1, 1, 32, 32))
    for cut in p.cut_points:
        assert [v.name for v in traced.live_values(cut.position)] == [cut.value]
    positions = {c.position for c in p.cut_points}
    multi = [i for i in range(1, len(traced.compute_nodes)) if len(traced.live_values(i)) > 1]
    assert multi and not positions & set(multi)


def test_cut_names_resolve_by_alias_and_unknown_names_list_valid_ones():
    p = profile_model(trace_model(TinyResNet()), (1, 1, 8, 8))
    assert p.cut("block.relu").name == "block"
    with pytest.raises(CutError, match="valid cuts: input, stem, block.add, block, pool, flatten"):
        p.cut("nope")


def test_activation_bytes_follow_shape_and_dtype():
    p = profile_model(trace_model(TinyResNet()), (1, 1, 8, 8))
    stem = p.cut("stem")
    assert stem.activation_shape == (4, 8, 8) and stem.dtype == "float32"
    assert stem.activation_bytes == 4 * 8 * 8 * 4


def test_names_are_stable_across_traces():
    a = profile_model(trace_model(TinyResNet()), (1, 1, 8, 8))
    b = profile_model(trace_model(TinyResNet()), (1, 1, 8, 8))
    assert [c.name for c in a.cut_points] == [c.name for c in b.cut_points]


def test_data_dependent_control_flow_is_a_trace_error_suggesting_export():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(TraceError, match=r"\.pt2"):
        trace_model(Branchy())


def test_multi_input_models_are_rejected():
    class Two(torch.nn.Module):
        def forward(self, a, b):
            return a + b

    with pytest.raises(TraceError, match="exactly one input"):
        trace_model(Two())
