"""``datamix profile``: where the model can be cut and what stays on the edge."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from datamix_cli.commands._model_options import MODEL_ARG, MODEL_KWARGS, TRUST_PICKLE, WEIGHTS, model_source
from datamix_cli.options import UplinkCodec


def profile(
    model: str = MODEL_ARG,
    weights: Path = WEIGHTS,
    trust_pickle: bool = TRUST_PICKLE,
    model_kwargs: str = MODEL_KWARGS,
    input_shape: str = typer.Option(None, "--input-shape", help="Input shape with batch dimension, e.g. 1,1,32,32."),
    data: str = typer.Option(None, "--data", help="Dataset to take the input shape from: digits, faces, x.npz or a folder."),
    budget: float = typer.Option(0.2, "--budget", help="Largest share of the model's FLOPs the edge may run, in (0, 1]."),
    k: int = typer.Option(4, "--k", help="Group size: inputs mixed together (2..64)."),
    head_cut: str = typer.Option(None, "--head-cut", help="Cut name to end the head at, instead of the budget's choice."),
    tail_cut: str = typer.Option(None, "--tail-cut", help="Cut name to start the tail at, instead of the one before the classifier."),
    bottleneck: int = typer.Option(None, "--bottleneck", help="Cost a learned bottleneck of this many channels at the chosen head cut (as `split --bottleneck`)."),
    bottleneck_stride: int = typer.Option(1, "--bottleneck-stride", help="Its spatial stride."),
    uplink: UplinkCodec = typer.Option(UplinkCodec.fp32, "--uplink", help="Count the bottleneck's bytes in this codec: fp32, fp16 or int8.", case_sensitive=False),
    link: str = typer.Option(None, "--link", help="Estimate every cut's end-to-end latency on this link: 3g, 4g, wifi (BottleNet's rates) or MBPS\\[/DOWN_MBPS]\\[:RTT_MS]."),
    measure: bool = typer.Option(False, "--measure", help="Time each candidate head (+ mixing) and the tail on the edge runtime (--runtime), and the cloud part in PyTorch, instead of splitting the whole model's time by FLOPs."),
    objective: str = typer.Option("flops", "--objective", help="flops (the budget's deepest cut), latency, bytes or energy: what picks the cut within the budget (latency, bytes and energy need --link; energy --device-power)."),
    device_power: float = typer.Option(None, "--device-power", help="The device's power in W while it runs the edge parts: adds an energy estimate per cut (compute plus the preset link's radio power, BottleNet's model) for --objective energy."),
    runtime: str = typer.Option("onnx", "--runtime", help="Edge runtime --measure times the parts on, and the format of --export-candidates: onnx (onnxruntime) or tflite (ai-edge-litert)."),
    threads: int = typer.Option(1, "--threads", help="Edge runtime threads for the edge times (1: one phone core)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Time every part again instead of reusing times measured before for the same model, cut, runtime and threads ($DATAMIX_CACHE_DIR, default ~/.cache/datamix)."),
    device_speed: float = typer.Option(1.0, "--device-speed", help="The device is this many times as fast as this machine's edge runtime."),
    cloud_speedup: float = typer.Option(1.0, "--cloud-speedup", help="The cloud is this many times as fast as this machine."),
    export_candidates: Path = typer.Option(None, "--export-candidates", help="Write every candidate head (with mixing), the tail (with de-mixing) and the whole model as ONNX (or TFLite with --runtime tflite), with candidates.json, to time on the real device."),
    device_times: Path = typer.Option(None, "--device-times", help="The device's timings of those files (JSON {\"head\": {CUT: ms}, \"tail\": ms, \"whole\": ms}, CSV lines PART,ms, or TFLite benchmark_model's log of every file, saved in the --export-candidates folder): the edge stages of the --link estimate."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
    plot: Path = typer.Option(None, "--plot", help="Write a PNG of per-layer FLOPs with the cuts and the budget."),
) -> None:
    """List every valid cut point with its cost and the split a FLOPs budget picks."""
    from datamix_cli.options import parse_shape
    from datamix_cli.pipeline.latency import latency_options
    from datamix_cli.pipeline.profile import ProfileConfig, plot_profile, report_to_dict, run_profile

    config = ProfileConfig(
        source=model_source(model, weights, trust_pickle, model_kwargs),
        input_shape=parse_shape(input_shape) if input_shape else None,
        data=data,
        budget=budget,
        k=k,
        head_cut=head_cut,
        tail_cut=tail_cut,
        bottleneck=_bottleneck_config(bottleneck, bottleneck_stride),
        uplink=uplink.value,
        latency=latency_options(link, measure=measure, threads=threads, device_speed=device_speed, cloud_speedup=cloud_speedup, uplink=uplink.value,
                                runtime=runtime, cache=not no_cache, device_power_w=device_power),
        objective=objective,
        export_candidates=export_candidates,
        candidates_runtime=runtime,
        device_times=device_times,
    )
    report = run_profile(config)
    if plot is not None:
        plot_profile(report, plot)
    if as_json:
        typer.echo(json.dumps(report_to_dict(report), indent=2))
    else:
        _print_table(report, plot)


def _bottleneck_config(channels: int | None, stride: int):
    if channels is None:
        return None
    from datamix_cli.protocol.bottleneck import BottleneckConfig

    return BottleneckConfig(channels, stride)


def _print_table(report, plot: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from datamix_cli.pipeline.profile import codec_bytes, edge_fraction_if_head
    from partitioners.flops import FLOPS_RULE

    p, d = report.profile, report.decision
    table = Table(title=f"cut points (input {list(p.input_shape)}, {p.total_flops / 1e6:.2f} MFLOPs per sample)")
    table.add_column("cut", no_wrap=True)
    table.add_column("", no_wrap=True)
    for column in ("FLOPs before", "params before", "activation", "KB fp32", "KB fp16", "KB int8", "edge share if head here"):
        table.add_column(column, justify="left" if column == "activation" else "right")
    for cut in p.cut_points:
        share = edge_fraction_if_head(report, cut)
        marker = "◀ head" if cut is d.head_cut else "◀ tail" if cut is d.tail_cut else ""
        table.add_row(
            cut.name,
            marker,
            f"{cut.flops_prefix / max(p.total_flops, 1):.1%}",
            f"{cut.params_prefix:,}",
            "×".join(map(str, cut.activation_shape)),
            *(f"{b / 1024:.1f}" for b in codec_bytes(cut.elements).values()),
            "—" if share is None else f"{share:.1%}",
            style="bold green" if marker else None,
        )
    console = Console()
    console.print(table)
    summary = Table(title=f"edge compute per sample (budget {report.budget:g}, k={d.k})")
    for column in ("deployment", "edge FLOPs", "edge share", "what leaves the device"):
        summary.add_column(column, justify="right" if "edge" in column else "left")
    summary.add_row("edge only", f"{p.total_flops:,}", "100.0%", "nothing")
    sent = "raw inputs"
    if report.baselines:
        from datamix_cli.data.images import JPEG_QUALITY

        b, jpeg = report.baselines, f"jpeg_q{JPEG_QUALITY}"
        sent = f"raw inputs: {b['raw_uint8']:.0f} B uint8, {b['png']:.0f} B PNG, {b[jpeg]:.0f} B JPEG q{JPEG_QUALITY} (median of {b['samples']})"
    summary.add_row("cloud only", "0", "0.0%", sent)
    summary.add_row(
        f"DataMix: head→{d.head_cut.name}, tail from {d.tail_cut.name}",
        f"{d.edge_flops:,}",
        f"{d.edge_fraction:.1%}",
        f"mixed {'×'.join(map(str, d.head_cut.activation_shape))} features: {d.head_cut.activation_bytes:,} B up, "
        f"{d.tail_cut.activation_bytes:,} B down per input (fp32; int8 {codec_bytes(d.head_cut.elements)['int8']:,} B up)",
        style="bold green",
    )
    console.print(summary)
    console.print("Fewer bytes: a learned bottleneck and the int8 codec, `datamix split --max-uplink-bytes N` (docs/split.md#what-is-sent).")
    console.print(
        f"DataMix edge FLOPs = head {d.head_flops:,} + tail {d.tail_flops:,} + mix {d.mix_flops:,} + de-mix {d.demix_flops:,}; "
        f"cloud {d.cloud_flops:,}. {FLOPS_RULE}; MACs total {p.total_macs:,}."
    )
    if p.uncounted_ops:
        listed = ", ".join(f"{op}×{n}" for op, n in p.uncounted_ops.items())
        console.print(f"not counted (no FLOP formula): {listed}")
    if report.bottleneck is not None:
        b, f = report.bottleneck, report.bottleneck["flops"]
        console.print(
            f"with a bottleneck of {b['channels']} channels at stride {b['stride']} at {d.head_cut.name}: code {'×'.join(map(str, b['code_shape']))}, "
            f"edge share {f['edge_fraction']:.1%} (encoder {f['bottleneck']['encoder']:,} FLOPs on the edge, decoder "
            f"{f['bottleneck']['decoder']:,} in the cloud), uplink {b['uplink']['bytes_per_sample']:,} B per mixture ({b['uplink']['codec']}), "
            f"{b['wire_bytes_per_input']:.0f} B per input on the wire (one group per request, HTTP included)"
        )
    if report.latency is not None:
        _print_latency(console, report.latency)
    if plot is not None:
        console.print(f"plot written to {plot}")


def _print_latency(console, latency: dict) -> None:
    from rich.table import Table

    link = latency["link"]
    table = Table(title=f"latency of one group of k={latency['k']} (ms) on {link['name']}: {link['up_mbps']:g}/{link['down_mbps']:g} Mbit/s, "
                        f"RTT {link['rtt_ms']:g} ms; {latency['times']}")
    stages = ("edge_head_mix", "uplink", "rtt", "cloud", "downlink", "edge_demix_tail", "total")
    power = latency.get("device_power_w")
    for column in ("cut", "", "edge share", "B/input up", *stages, *(("mJ",) if power else ())):
        table.add_column(column, justify="left" if column in ("cut", "") else "right")
    for r in latency["cuts"]:
        marks = [m for m, on in (("◀ chosen", r["cut"] == latency["chosen"]), ("flops", r["cut"] == latency["flops_choice"]),
                                 ("pareto", r["cut"] in latency["pareto"])) if on]
        table.add_row(r["cut"], " ".join(marks), f"{r['edge_fraction']:.1%}", f"{r['uplink_bytes_per_input']:.0f}",
                      *(f"{1e3 * r['latency'][s]:.2f}" for s in stages), *((f"{1e3 * r['energy']['total']:.1f}",) if power else ()),
                      style="bold green" if r["cut"] == latency["chosen"] else None)
    for name, b in latency["baselines"].items():
        table.add_row(name.replace("_", " "), "baseline", "100.0%" if name == "edge_only" else "0.0%", "",
                      *(f"{1e3 * b[s]:.2f}" if s in b else "" for s in stages), *((f"{1e3 * b['energy']['total']:.1f}",) if power else ()))
    console.print(table)
    cache = latency.get("cache") or {}
    if cache.get("reused"):
        console.print(f"{cache['reused']} part times reused from {cache['path']} (same model, cut, runtime and threads; --no-cache times them again)")
    chosen = next(r for r in latency["cuts"] if r["cut"] == latency["chosen"])
    flops = next(r for r in latency["cuts"] if r["cut"] == latency["flops_choice"])
    console.print(f"--objective {latency['objective']}: {latency['chosen']} ({1e3 * chosen['latency']['total']:.1f} ms), against the FLOPs budget's "
                  f"{latency['flops_choice']} ({1e3 * flops['latency']['total']:.1f} ms), edge only {1e3 * latency['baselines']['edge_only']['total']:.1f} ms "
                  f"and cloud only {1e3 * latency['baselines']['cloud_only_uint8']['total']:.1f} ms (raw uint8). An estimate: "
                  f"{link['source']}.")
    if power:
        console.print(f"mJ: the device's energy per group, {power:g} W while computing plus the radio while it transfers "
                      f"(P = {link['radio_mw']['up_per_mbps']:g} mW/Mbps x rate + {link['radio_mw']['base']:g} mW up); waiting and the radio's tail are not counted.")
