"""tail(cloud(head(x))) == model(x): for every example model, and at every valid cut pair of the ResNet."""

import itertools

import pytest
import torch

from examples.models import EXAMPLES
from partitioners.graph import trace_model
from partitioners.partition import partition
from partitioners.profile import profile_model
from partitioners.select import choose_split


def run_parts(parts, x):
    with torch.no_grad():
        return parts.tail(parts.cloud(parts.head(x)))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_partition_identity_for_every_example(name):
    factory, shape = EXAMPLES[name]
    model = factory().eval()
    traced = trace_model(model)
    decision = choose_split(profile_model(traced, (1, *shape)), budget=0.3)
    parts = partition(traced, decision.head_cut, decision.tail_cut)
    x = torch.randn(5, *shape)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(run_parts(parts, x), expected, rtol=0, atol=0)


def test_partition_identity_at_every_valid_cut_pair_of_the_resnet():
    factory, shape = EXAMPLES["resnet"]
    model = factory().eval()
    traced = trace_model(model)
    profile = profile_model(traced, (1, *shape))
    x = torch.randn(3, *shape)
    with torch.no_grad():
        expected = model(x)
    pairs = list(itertools.combinations(profile.cut_points, 2))
    assert len(pairs) == len(profile.cut_points) * (len(profile.cut_points) - 1) // 2 > 100
    for head, tail in pairs:
        parts = partition(traced, head, tail)
        torch.testing.assert_close(run_parts(parts, x), expected, msg=lambda m: f"{head.name}->{tail.name}: {m}")


def test_head_and_tail_carry_the_cut_tensors():
    factory, shape = EXAMPLES["resnet"]
    traced = trace_model(factory().eval())
    profile = profile_model(traced, (1, *shape))
    head_cut, tail_cut = profile.cut("layer1"), profile.cut("flatten")
    parts = partition(traced, head_cut, tail_cut)
    h = parts.head(torch.randn(2, *shape))
    assert tuple(h.shape[1:]) == head_cut.activation_shape
    assert tuple(parts.cloud(h).shape[1:]) == tail_cut.activation_shape


def test_the_users_model_is_never_touched():
    factory, shape = EXAMPLES["small_cnn"]
    model = factory().train()  # a flag the partitioner must not flip either
    before = {k: v.clone() for k, v in model.state_dict().items()}
    traced = trace_model(model)
    decision = choose_split(profile_model(traced, (1, *shape)), budget=0.3)
    parts = partition(traced, decision.head_cut, decision.tail_cut)
    with torch.no_grad():
        for p in parts.head.parameters():
            p.add_(1.0)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert model.training and all(m.training for m in model.modules())
    assert all(p.data_ptr() not in {q.data_ptr() for q in model.parameters()} for p in parts.cloud.parameters())


def test_parts_share_parameters_so_they_train_as_one_model():
    factory, shape = EXAMPLES["small_cnn"]
    traced = trace_model(factory().eval())
    decision = choose_split(profile_model(traced, (1, *shape)), budget=0.3)
    parts = partition(traced, decision.head_cut, decision.tail_cut)
    traced_ptrs = {p.data_ptr() for p in traced.module.parameters()}
    for part in (parts.head, parts.cloud, parts.tail):
        assert {p.data_ptr() for p in part.parameters()} <= traced_ptrs


def test_exported_program_partitions_too(tmp_path):
    factory, shape = EXAMPLES["resnet"]
    model = factory().eval()
    path = tmp_path / "resnet.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, *shape),)), path)
    traced = trace_model(torch.export.load(path).module())
    profile = profile_model(traced, (1, *shape))
    assert "layer1" in [c.name for c in profile.cut_points]
    decision = choose_split(profile, budget=0.2)
    parts = partition(traced, decision.head_cut, decision.tail_cut)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(run_parts(parts, x), model(x))
