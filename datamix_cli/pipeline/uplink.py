"""``split --max-uplink-bytes N``: the configuration of what is sent (cut × bottleneck width and stride × codec)
with the best accuracy at ≤ N bytes per input on the wire, within the edge FLOPs budget.

Bytes on the wire are counted as a request of one group of k mixtures takes them on the socket (HTTP request
line and headers, the JSON header, payload and codec parameters: :func:`datamix_cli.serving.oip.request_bytes`),
divided by k: the most a request of whole groups costs per input (more groups per request share the headers).

The search is cheap by construction: for each cut and stride only the widest code that fits is tried (a narrower
one of the same kind carries less), each candidate is ranked by a short fine-tune on the validation part of the
fine-tuning data (never the evaluation holdout), and only the winner gets the full fine-tune.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from datamix_cli.errors import ConfigError
from datamix_cli.protocol.bottleneck import BottleneckConfig
from datamix_cli.protocol.codecs import CODECS

SEARCH_EPOCHS = 2  # the short fine-tune that ranks candidates
MAX_CANDIDATES = 6
STRIDES = (1, 2, 4, 8)
CUTS = 2  # the deepest cut within the budget and the next shallower one with a different shape


@dataclass(frozen=True)
class Candidate:
    cut: str
    cut_shape: tuple[int, ...]
    bottleneck: BottleneckConfig
    codec: str
    wire_bytes: float  # per input, one group per request

    def describe(self) -> str:
        code = "no bottleneck" if not self.bottleneck.active else f"bottleneck {self.bottleneck.channels} ch at stride {self.bottleneck.stride}"
        return f"cut {self.cut}, {code}, {self.codec}"

    def record(self, accuracy: float | None) -> dict:
        b = self.bottleneck
        return {"cut": self.cut, "bottleneck": b.channels, "stride": b.stride if b.active else None, "codec": self.codec,
                "code_shape": list(b.code_shape(self.cut_shape)), "wire_bytes_per_input": round(self.wire_bytes, 1),
                "validation_accuracy": accuracy}


def wire_bytes_per_input(model: str, codec_name: str, code_shape: tuple[int, ...], k: int, downlink: str = "fp32") -> float:
    """Uplink bytes per input on the socket for one request of one group of k (see the module's docstring)."""
    from datamix_cli.serving.oip import request_bytes

    codec = CODECS[codec_name]
    tensors = [("mixtures", codec.datatype, (k, *code_shape))]
    if codec.params:
        tensors.append((codec.params_name("mixtures"), "FP32", (k, codec.params)))
    return request_bytes(model, tensors, "cloud_out") / k


def widest(model: str, cut_shape: tuple[int, ...], stride: int, codec: str, k: int, limit: int) -> BottleneckConfig | None:
    """The widest bottleneck at ``stride`` whose uplink fits ``limit`` bytes per input (None: not even one channel)."""
    width = cut_shape[0] if len(cut_shape) == 3 else cut_shape[-1]
    best = None
    lo, hi = 1, width
    while lo <= hi:  # bytes grow with the width
        mid = (lo + hi) // 2
        config = BottleneckConfig(mid, stride)
        if wire_bytes_per_input(model, codec, config.code_shape(cut_shape), k) <= limit:
            best, lo = config, mid + 1
        else:
            hi = mid - 1
    return best


def candidates(model: str, cuts, k: int, limit: int) -> list[Candidate]:
    """What the search tries: per cut (deepest first), the widest code per stride for int8, and the widest fp16 code
    at the deepest cut; a cut whose full fp32 features already fit is tried as it is."""
    found = []
    for position, cut in enumerate(cuts):
        shape = tuple(cut.activation_shape)
        if wire_bytes_per_input(model, "fp32", shape, k) <= limit:
            found.append(Candidate(cut.name, shape, BottleneckConfig(), "fp32", wire_bytes_per_input(model, "fp32", shape, k)))
            continue
        strides = [s for s in (STRIDES if len(shape) == 3 else (1,)) if len(shape) != 3 or not (shape[1] % s or shape[2] % s)]
        plan = [("int8", s) for s in strides] + ([("fp16", strides[min(1, len(strides) - 1)])] if position == 0 else [])
        for codec, stride in plan:
            config = widest(model, shape, stride, codec, k, limit)
            if config is not None:
                found.append(Candidate(cut.name, shape, config, codec, wire_bytes_per_input(model, codec, config.code_shape(shape), k)))
    unique = list({(c.cut, c.bottleneck, c.codec): c for c in found}.values())
    return unique[:MAX_CANDIDATES]


def search_cuts(profile, decision, budget: float, k: int):
    """The deepest cut the budget allows (the one the split would take) and the next shallower one of another shape."""
    from partitioners.select import choose_split

    cuts = [decision.head_cut]
    for cut in reversed([c for c in profile.cut_points if c.position < decision.head_cut.position]):
        if len(cuts) == CUTS:
            break
        if tuple(cut.activation_shape) != tuple(cuts[-1].activation_shape) and cut.elements > 0 and cut.position > 0:
            choose_split(profile, budget, k, cut.name, decision.tail_cut.name)  # refuses a cut the split cannot take
            cuts.append(cut)
    return cuts


def smallest(model: str, cuts, k: int) -> Candidate:
    """The fewest bytes any configuration sends: one int8 channel at the largest stride, over all cuts."""
    options = []
    for cut in cuts:
        shape = tuple(cut.activation_shape)
        for stride in STRIDES if len(shape) == 3 else (1,):
            if len(shape) == 3 and (shape[1] % stride or shape[2] % stride):
                continue
            config = BottleneckConfig(1, stride)
            options.append(Candidate(cut.name, shape, config, "int8", wire_bytes_per_input(model, "int8", config.code_shape(shape), k)))
    return min(options, key=lambda c: c.wire_bytes)


def rank(candidate: Candidate, train, traced, decision_for, mixing, training, fit, validation) -> float:
    """Validation accuracy of ``candidate`` after a short mixing-aware fine-tune."""
    from datamix_cli.protocol.bottleneck import PCA_SAMPLES, insert
    from datamix_cli.training.finetune import finetune, frozen_copy
    from partitioners.partition import partition

    import copy
    import warnings

    decision = decision_for(candidate.cut)
    with warnings.catch_warnings():  # deep-copying fx graphs warns about pytree internals in torch 2.13
        warnings.simplefilter("ignore", FutureWarning)
        traced = copy.deepcopy(traced)  # the parts share the traced model's weights: fine-tune a copy
    parts = partition(traced, decision.head_cut, decision.tail_cut)
    teacher = None
    if candidate.bottleneck.active:
        teacher = frozen_copy(parts)
        parts, _ = insert(parts, candidate.bottleneck, candidate.cut_shape, np.asarray(train.x[:PCA_SAMPLES]))
    config = replace(training, epochs=SEARCH_EPOCHS, patience=0)
    done = finetune(parts, fit.x, fit.y, replace(mixing, uplink=candidate.codec), config, None, None, validation, teacher)
    return max(record["validation_accuracy"] for record in done.history)


def search(config, prepared, train, fit, validation, report) -> tuple[object, dict]:
    """The split configuration to build (head cut, bottleneck, uplink codec set) and the search's manifest record."""
    import time

    from datamix_cli.model.identity import model_name
    from partitioners.select import choose_split

    limit, k = config.max_uplink_bytes, config.mixing.k
    if validation is None:
        raise ConfigError("--max-uplink-bytes ranks candidates on validation data: set --validation > 0")
    model = model_name(config.source.spec)
    base = choose_split(prepared.profile, config.budget, k, config.head_cut, config.tail_cut)
    cuts = search_cuts(prepared.profile, base, config.budget, k) if config.head_cut is None else [base.head_cut]
    decision_for = lambda cut: choose_split(prepared.profile, config.budget, k, cut, base.tail_cut.name)  # noqa: E731
    tried = candidates(model, cuts, k, limit)
    started = time.perf_counter()
    if not tried:
        low = smallest(model, cuts, k)
        accuracy = rank(low, train, prepared.traced, decision_for, config.mixing, config.training, fit, validation)
        raise ConfigError(f"no configuration sends <= {limit} bytes per input: the smallest, {low.describe()}, sends "
                          f"{low.wire_bytes:.0f} B at {accuracy:.1%} validation accuracy")
    records = []
    for candidate in tried:
        accuracy = rank(candidate, train, prepared.traced, decision_for, config.mixing, config.training, fit, validation)
        records.append(candidate.record(accuracy))
        report(f"uplink search: {candidate.describe()}: {candidate.wire_bytes:.0f} B/input, validation accuracy {accuracy:.1%}")
    best = max(range(len(tried)), key=lambda i: (records[i]["validation_accuracy"], -tried[i].wire_bytes))
    chosen = tried[best]
    record = {"max_uplink_bytes": limit, "counted": "per input, a request of one group of k, HTTP headers and JSON included",
              "search_epochs": SEARCH_EPOCHS, "seconds": round(time.perf_counter() - started, 2),
              "candidates": records, "chosen": records[best]}
    chosen_config = replace(config, head_cut=chosen.cut, tail_cut=base.tail_cut.name, bottleneck=chosen.bottleneck,
                            mixing=replace(config.mixing, uplink=chosen.codec))
    return chosen_config, record
