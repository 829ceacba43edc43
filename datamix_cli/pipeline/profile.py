"""``datamix profile`` as a library call: trace, measure, pick a split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.errors import ConfigError, InputShapeError
from datamix_cli.model.loading import ModelSource, load_model


@dataclass(frozen=True)
class ProfileConfig:
    source: ModelSource
    input_shape: tuple[int, ...] | None = None  # with batch dimension
    data: str | None = None
    budget: float = 0.2
    k: int = 4
    head_cut: str | None = None
    tail_cut: str | None = None
    bottleneck: object = None  # a datamix_cli.protocol.bottleneck.BottleneckConfig to cost at the chosen head cut
    uplink: str = "fp32"  # the codec its bytes are counted in
    latency: object = None  # a datamix_cli.pipeline.latency.LatencyOptions: estimate every cut's latency on a link
    objective: str = "flops"  # flops (the budget's deepest cut), latency or bytes, among the cuts within the budget
    export_candidates: Path | None = None  # write every candidate head and the tail, to time on the device
    candidates_runtime: str = "onnx"  # in this runtime's format: onnx or tflite
    device_times: Path | None = None  # read those timings back (JSON or CSV, ms): the edge stages of the estimate


@dataclass(frozen=True)
class ProfileReport:
    profile: "partitioners.profile.GraphProfile"  # noqa: F821
    decision: "partitioners.select.SplitDecision"  # noqa: F821
    budget: float
    # What a cloud-only app would send per input instead (raw uint8, PNG, JPEG q90 of --data's first samples).
    baselines: dict | None = None
    # With --bottleneck: the code at the chosen cut, its FLOPs (encoder on the edge, decoder in the cloud) and bytes.
    bottleneck: dict | None = None
    # With --link: every cut's latency stages, the baselines, the Pareto set; flops_choice is the budget's cut.
    latency: dict | None = None


BASELINE_SAMPLES = 64


def run_profile(config: ProfileConfig) -> ProfileReport:
    from partitioners.graph import trace_model
    from partitioners.profile import profile_model
    from datamix_cli.pipeline.latency import check_objective
    from datamix_cli.protocol.mixing import validate_k
    from partitioners.select import choose_split

    validate_k(config.k)
    model = load_model(config.source)
    traced = trace_model(model)
    shape = resolve_input_shape(traced, config.input_shape, config.data)
    profile = profile_model(traced, (1, *shape[1:]))
    decision = choose_split(profile, config.budget, config.k, config.head_cut, config.tail_cut)
    baselines = _baselines(config.data, tuple(shape[1:]))
    latency = None
    check_objective(config.objective, config.latency)
    if config.export_candidates is not None:
        from datamix_cli.pipeline.device_times import export_candidates

        export_candidates(traced, profile, decision, tuple(shape[1:]), config.export_candidates, config.candidates_runtime)
    if config.device_times is not None:
        from dataclasses import replace

        from datamix_cli.pipeline.device_times import read_device_times

        if config.latency is None:
            raise ConfigError("--device-times needs --link (what the estimate is for)")
        config = replace(config, latency=replace(config.latency, device_times=read_device_times(config.device_times, profile, decision)))
    if config.latency is not None:
        decision, latency = choose_by_objective(config.source.spec, traced, profile, decision, config.latency, config.objective,
                                                config.budget, tuple(shape[1:]), baselines, config.head_cut)
    bottleneck = _bottleneck(config, profile, decision) if config.bottleneck is not None and config.bottleneck.active else None
    return ProfileReport(profile, decision, config.budget, baselines, bottleneck, latency)


def choose_by_objective(spec: str, traced, profile, decision, options, objective: str, budget: float, sample_shape, baselines,
                        head_cut: str | None = None, max_uplink_bytes: int | None = None):
    """(the decision ``objective`` picks within the budget, the latency table with the choice recorded); an
    explicit ``head_cut`` is kept and only estimated."""
    from datamix_cli.data.images import JPEG_QUALITY
    from datamix_cli.pipeline.latency import choose, latency_table
    from partitioners.select import SplitDecision

    jpeg = (baselines or {}).get(f"jpeg_q{JPEG_QUALITY}")
    table = latency_table(spec, traced, profile, decision, options, sample_shape, jpeg)
    flops_cut = decision.head_cut.name
    chosen = decision.head_cut.name if head_cut else choose(table["cuts"], objective, budget, max_uplink_bytes)["cut"]
    sent = next((r["uplink_bytes_per_input"] for r in table["cuts"] if r["cut"] == chosen), 0)
    if max_uplink_bytes is not None and sent > max_uplink_bytes:
        raise ConfigError(f"--head-cut {chosen} sends {sent:.0f} B per input, over --max-uplink-bytes {max_uplink_bytes}")
    table.update(objective=objective, flops_choice=flops_cut, chosen=chosen, max_uplink_bytes=max_uplink_bytes)
    return SplitDecision(profile.cut(chosen), decision.tail_cut, decision.k, profile.total_flops), table


def _bottleneck(config: ProfileConfig, profile, decision) -> dict:
    """What a bottleneck at the chosen head cut costs and sends (the manifest's figures for the same split)."""
    from datamix_cli.model.identity import model_name
    from datamix_cli.pipeline.manifest_sections import flops_section
    from datamix_cli.pipeline.uplink import wire_bytes_per_input
    from datamix_cli.protocol.codecs import get_codec, wire_spec

    cut = tuple(decision.head_cut.activation_shape)
    code = config.bottleneck.code_shape(cut)
    return {
        **config.bottleneck.to_manifest(cut),
        "flops": flops_section(profile, decision, config.bottleneck),
        "uplink": wire_spec(get_codec(config.uplink), "mixtures", (-1, *code)),
        "wire_bytes_per_input": wire_bytes_per_input(model_name(config.source.spec), config.uplink, code, config.k),
    }


def _baselines(data: str | None, sample_shape: tuple[int, ...]) -> dict | None:
    if data is None:
        return None
    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.data.images import encoded_sizes

    dataset = load_dataset(data, sample_shape)
    return encoded_sizes(np.asarray(dataset.x[: min(BASELINE_SAMPLES, len(dataset.y))]))


def resolve_input_shape(traced, given: tuple[int, ...] | None, data: str | None) -> tuple[int, ...]:
    """--input-shape, else the shape a torch.export archive recorded, else the dataset's natural shape."""
    if given is not None:
        return given
    recorded = traced.placeholder.meta.get("val")
    if recorded is not None and hasattr(recorded, "shape"):
        return tuple(int(d) for d in recorded.shape)
    if data is not None:
        from datamix_cli.data.datasets import default_sample_shape, load_dataset

        return (1, *default_sample_shape(load_dataset(data).x))
    raise InputShapeError("cannot tell the model's input shape: pass --input-shape (e.g. 1,1,32,32) or --data")


def edge_fraction_if_head(report: ProfileReport, cut) -> float | None:
    """Edge share if the head were cut at ``cut`` with the chosen tail; None where that is no split."""
    from partitioners.select import SplitDecision

    tail = report.decision.tail_cut
    if cut.position >= tail.position:
        return None
    return SplitDecision(cut, tail, report.decision.k, report.profile.total_flops).edge_fraction


def report_to_dict(report: ProfileReport) -> dict:
    from partitioners.flops import FLOPS_RULE

    p, d = report.profile, report.decision
    return {
        "input_shape": list(p.input_shape),
        "flops_rule": FLOPS_RULE,
        "total_flops": p.total_flops,
        "total_macs": p.total_macs,
        "total_params": p.total_params,
        "classifier": p.classifier_name,
        "uncounted_ops": p.uncounted_ops,
        "cut_points": [
            {
                "name": c.name,
                "aliases": list(c.aliases),
                "flops_prefix": c.flops_prefix,
                "macs_prefix": c.macs_prefix,
                "flops_share": c.flops_prefix / p.total_flops if p.total_flops else 0.0,
                "params_prefix": c.params_prefix,
                "activation_shape": list(c.activation_shape),
                "activation_bytes": c.activation_bytes,
                "bytes_per_codec": codec_bytes(c.elements),
                "dtype": c.dtype,
                "edge_fraction_if_head": edge_fraction_if_head(report, c),
            }
            for c in p.cut_points
        ],
        "layers": [{"name": l.name, "module": l.module_path, "flops": l.flops} for l in p.layers],
        "chosen": {
            "budget": report.budget,
            "k": d.k,
            "head_cut": d.head_cut.name,
            "tail_cut": d.tail_cut.name,
            "head_flops": d.head_flops,
            "tail_flops": d.tail_flops,
            "mix_flops": d.mix_flops,
            "demix_flops": d.demix_flops,
            "cloud_flops": d.cloud_flops,
            "edge_flops": d.edge_flops,
            "edge_fraction": d.edge_fraction,
            "uplink_bytes_per_sample": d.head_cut.activation_bytes,
            "uplink_bytes_per_codec": codec_bytes(d.head_cut.elements),
            "downlink_bytes_per_sample": d.tail_cut.activation_bytes,
        },
        "cloud_only_bytes_per_sample": report.baselines,
        "bottleneck": report.bottleneck,
        "latency": report.latency,
    }


def codec_bytes(values: int) -> dict[str, int]:
    """Tensor bytes per sample of ``values`` numbers in each wire codec (int8: with its scale and zero point)."""
    from datamix_cli.protocol.codecs import CODECS

    return {name: codec.bytes_per_sample(values) for name, codec in CODECS.items()}


def plot_profile(report: ProfileReport, path: Path) -> None:
    """PNG: per-layer FLOPs, cumulative share, every valid cut, the chosen cuts and the budget."""
    from datamix_cli.errors import require
    from datamix_cli.artifacts.staging import save_figure

    require("matplotlib", "plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, d = report.profile, report.decision
    flops = [layer.flops for layer in p.layers]
    total = max(p.total_flops, 1)
    cumulative, running = [], 0
    for f in flops:
        running += f
        cumulative.append(running / total)
    fig, ax = plt.subplots(figsize=(max(8, len(flops) * 0.12), 4.5))
    ax.bar(range(len(flops)), [f / 1e6 for f in flops], color="#4c72b0", label="layer MFLOPs")
    ax.set_xlabel("layer (topological order)")
    ax.set_ylabel("MFLOPs per sample")
    share = ax.twinx()
    share.plot(range(len(flops)), cumulative, color="#dd8452", label="cumulative FLOPs share")
    share.axhline(report.budget, color="#c44e52", linestyle="--", label=f"edge budget {report.budget:g}")
    share.set_ylim(0, 1.05)
    share.set_ylabel("share of total FLOPs")
    for cut in p.cut_points:
        ax.axvline(cut.position - 0.5, color="#bbbbbb", linewidth=0.5)
    for cut, label in ((d.head_cut, "head cut"), (d.tail_cut, "tail cut")):
        ax.axvline(cut.position - 0.5, color="#55a868", linewidth=2)
        ax.annotate(f"{label}: {cut.name}", (cut.position - 0.5, ax.get_ylim()[1] * 0.95), rotation=90, fontsize=8, ha="right", va="top")
    ax.set_title(f"edge share {d.edge_fraction:.1%} (k={d.k}); grey lines: valid cuts")
    handles = ax.get_legend_handles_labels()[0] + share.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper center", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
