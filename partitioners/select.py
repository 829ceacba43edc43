"""The split policy: which cuts an edge FLOPs budget picks.

Kept apart from how a graph is cut (``partition.py``): this module only
decides. The tail is the shortest suffix holding the final classifier layer,
so the cloud sees neither inputs nor predictions; the head is the deepest cut
whose edge cost (head + tail + mixing + de-mixing) fits the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from datamix_cli.errors import BudgetError, CutError
from partitioners.profile import CutPoint, GraphProfile

# A cut counts as "signed" (features of both signs) when at least this share of its entries is negative. After a
# ReLU the share is exactly 0; a residual sum or a BatchNorm output before its activation is typically 30-50 %.
SIGNED_MIN_SHARE = 0.05


def mixing_flops(cut: CutPoint, k: int) -> int:
    """FLOPs per sample to mix (or de-mix) the tensor at ``cut`` over a group of k: k MACs per element."""
    return 2 * k * cut.elements


@dataclass(frozen=True)
class SplitDecision:
    """The chosen head/tail cuts and the per-sample FLOPs of every part."""

    head_cut: CutPoint
    tail_cut: CutPoint
    k: int
    total_flops: int

    @property
    def head_flops(self) -> int:
        return self.head_cut.flops_prefix

    @property
    def tail_flops(self) -> int:
        return self.total_flops - self.tail_cut.flops_prefix

    @property
    def cloud_flops(self) -> int:
        return self.tail_cut.flops_prefix - self.head_cut.flops_prefix

    @property
    def mix_flops(self) -> int:
        return mixing_flops(self.head_cut, self.k)

    @property
    def demix_flops(self) -> int:
        return mixing_flops(self.tail_cut, self.k)

    @property
    def edge_flops(self) -> int:
        return self.head_flops + self.tail_flops + self.mix_flops + self.demix_flops

    @property
    def edge_fraction(self) -> float:
        return self.edge_flops / self.total_flops if self.total_flops else 1.0


def default_tail_cut(profile: GraphProfile) -> CutPoint:
    """The latest cut before the classifier layer."""
    before = [c for c in profile.cut_points if c.position <= profile.classifier_position]
    return before[-1]


def choose_split(
    profile: GraphProfile,
    budget: float,
    k: int = 4,
    head_cut: str | None = None,
    tail_cut: str | None = None,
    negative_shares: dict[str, float] | None = None,
) -> SplitDecision:
    """Pick head and tail cuts; explicit cut names override the budget.

    With ``negative_shares`` (each cut's share of negative entries, measured on data) the head is the deepest
    cut within the budget whose features take both signs: a pre-activation cut, where non-negative blind
    separation of a group's mixtures has nothing to hold on to.
    """
    if not 0 < budget <= 1:
        raise BudgetError(f"budget must be in (0, 1], got {budget}")
    if k < 1:  # the protocol's bounds on k are checked where it is configured (datamix_cli.protocol.mixing)
        raise BudgetError(f"the mixing cost needs a group size k >= 1, got {k}")
    tail = profile.cut(tail_cut) if tail_cut else default_tail_cut(profile)
    if tail.position > profile.classifier_position:
        raise CutError(
            f"tail cut {tail.name!r} lies after the classifier {profile.classifier_name!r}; "
            "the cloud would see the predictions"
        )
    candidates = [c for c in profile.cut_points if c.position < tail.position]
    if not candidates:
        raise CutError(f"tail cut {tail.name!r} leaves nothing for the cloud")
    if head_cut:
        head = profile.cut(head_cut)
        if head.position >= tail.position:
            raise CutError(f"head cut {head.name!r} must come before tail cut {tail.name!r}")
        return SplitDecision(head, tail, k, profile.total_flops)
    decisions = [SplitDecision(c, tail, k, profile.total_flops) for c in candidates]
    feasible = [d for d in decisions if d.edge_flops <= budget * profile.total_flops]
    if not feasible:
        best = min(decisions, key=lambda d: d.edge_flops)
        raise BudgetError(
            f"budget {budget:g} is infeasible: the smallest achievable edge share is {best.edge_fraction:.4f} "
            f"(head cut {best.head_cut.name!r}, tail cut {tail.name!r}, k={k})"
        )
    if negative_shares is None:
        return feasible[-1]
    signed = [d for d in feasible if negative_shares.get(d.head_cut.name, 0.0) >= SIGNED_MIN_SHARE]
    if not signed:
        raise BudgetError(
            f"no cut within budget {budget:g} has features of both signs (at least {SIGNED_MIN_SHARE:.0%} negative); "
            "raise --budget or use --cut-features any"
        )
    return signed[-1]
