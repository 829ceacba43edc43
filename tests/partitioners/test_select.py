"""Split selection by budget, against hand-computed costs of a 4-layer MLP.

Per sample: three 16x16 layers (512 FLOPs each) and a 16->4 classifier (128);
total 1664. With k=2, mixing or de-mixing a 16-element cut costs 2*2*16 = 64.
"""

import pytest

from datamix_cli.errors import BudgetError, CutError
from partitioners.graph import trace_model
from partitioners.profile import profile_model
from partitioners.select import choose_split, default_tail_cut

from tests.helpers import mlp


@pytest.fixture(scope="module")
def profile():
    return profile_model(trace_model(mlp()), (1, 16))


def test_tail_is_the_shortest_suffix_holding_the_classifier(profile):
    assert default_tail_cut(profile).name == "5"


def test_budget_picks_the_deepest_head_that_fits(profile):
    d = choose_split(profile, budget=0.5, k=2)
    assert (d.head_cut.name, d.tail_cut.name) == ("1", "5")
    assert (d.head_flops, d.tail_flops, d.mix_flops, d.demix_flops) == (512, 128, 64, 64)
    assert d.edge_flops == 768 and d.cloud_flops == 1024
    assert d.edge_fraction == pytest.approx(768 / 1664)


def test_small_budget_keeps_only_the_raw_input_head(profile):
    d = choose_split(profile, budget=0.2, k=2)
    assert d.head_cut.name == "input" and d.edge_flops == 256


def test_infeasible_budget_states_the_smallest_share(profile):
    with pytest.raises(BudgetError, match=r"smallest achievable edge share is 0\.1538"):
        choose_split(profile, budget=0.1, k=2)


@pytest.mark.parametrize("budget", [0, -0.1, 1.5])
def test_budget_outside_unit_interval(profile, budget):
    with pytest.raises(BudgetError, match=r"\(0, 1\]"):
        choose_split(profile, budget=budget)


def test_a_group_size_below_one_has_no_mixing_cost(profile):
    with pytest.raises(BudgetError, match="k >= 1"):
        choose_split(profile, budget=0.5, k=0)


def test_overrides_by_name(profile):
    d = choose_split(profile, budget=0.2, k=2, head_cut="3", tail_cut="5")
    assert (d.head_cut.name, d.tail_cut.name) == ("3", "5")


def test_override_errors(profile):
    with pytest.raises(CutError, match="valid cuts"):
        choose_split(profile, budget=0.5, head_cut="bogus")
    with pytest.raises(CutError, match="must come before"):
        choose_split(profile, budget=0.5, head_cut="5", tail_cut="3")


def test_mixing_is_costed_at_the_head_cut_and_de_mixing_at_the_tail_cut():
    from torch import nn

    # 16 -> 32 -> 8 -> 4: the head cut "1" carries 32 elements, the tail cut "3" carries 8.
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 4))
    d = choose_split(profile_model(trace_model(model), (1, 16)), budget=1.0, k=3, head_cut="1", tail_cut="3")
    assert (d.mix_flops, d.demix_flops) == (2 * 3 * 32, 2 * 3 * 8)
    assert (d.head_flops, d.cloud_flops, d.tail_flops) == (2 * 16 * 32, 2 * 32 * 8, 2 * 8 * 4)
    assert d.edge_flops == 1024 + 64 + 192 + 48
