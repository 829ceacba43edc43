"""End-to-end latency of a split on a device and a link, and the cut that minimises it (``--link``, ``--measure``,
``--objective``).

One request carries one group of k inputs (a lone query is padded with decoys), so the latency of any input in it
is that of the group:

    edge head + mix (k inputs)  +  uplink  +  RTT  +  cloud (k mixtures)  +  downlink  +  de-mix + tail (k)

* edge parts: the head with mixing and the tail with de-mixing, exported exactly as ``split`` ships them and
  timed on the edge runtime (``--runtime onnx|tflite``, ``--threads``, default 1: a phone core), a median of
  repeated runs after warm-up, kept between runs by model sha256, cut, runtime and threads
  (datamix_cli.pipeline.timing_cache); ``--device-speed F`` divides them by F (a device F times as fast);
* the cloud part: TorchScript-free eager PyTorch on this machine with its default threads, divided by
  ``--cloud-speedup``;
* the network: the request's bytes on the socket (HTTP included, datamix_cli.serving.oip.request_bytes) at the
  uplink rate, the response's at the downlink rate, plus one round trip.

Without ``--measure`` the edge and cloud times are the whole model's time on each runtime split by FLOPs share: the
proportionality ``--measure`` exists to correct. Baselines: edge-only (the whole model on the edge runtime, nothing
sent) and cloud-only (the raw input as uint8, or its JPEG when ``--data`` gives samples, then the whole model in
the cloud, logits back).

Energy (``--device-power W``, and ``--objective energy``) is an estimate of the device's joules per group: its
compute at W while the edge parts run, and its radio while it sends and receives at the preset's rates, with the
power model P = alpha * rate + beta that BottleNet tabulates for 3G, 4G and Wi-Fi (uplink alpha and beta, from
Huang et al., MobiSys 2012; the downlink alpha is Huang et al.'s as Neurosurgeon's code uses it). As in BottleNet,
only the transfers count: the radio's power while it waits for the cloud and its tail after the response are not
modelled, so the figures are lower bounds on the radio's share.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.errors import ConfigError

OBJECTIVES = ("flops", "latency", "bytes", "energy")
RESPONSE_HEADER_BYTES = 160  # status line and headers of a uvicorn response (estimate: ~150-170 B measured by hand)
RUNS, WARMUP = 20, 5
# A part runs once per request, after the device (and the server) waited on the network, so each timed run follows
# an idle pause: back to back, warm caches made the ResNet example's head and tail 0.57 / 0.20 ms against
# 0.99 / 0.49 ms after a 5 ms pause, and serve-local measured them at 0.85 / 0.33 ms.
IDLE_S = 0.01


@dataclass(frozen=True)
class Radio:
    """The device radio's power while it transfers at a rate r (Mbit/s): alpha * r + beta, in mW."""

    up_mw_per_mbps: float
    down_mw_per_mbps: float
    beta_mw: float

    def watts(self, mbps: float, up: bool) -> float:
        return ((self.up_mw_per_mbps if up else self.down_mw_per_mbps) * mbps + self.beta_mw) / 1e3


@dataclass(frozen=True)
class Link:
    name: str
    up_mbps: float
    down_mbps: float
    rtt_ms: float
    source: str = "given"
    radio: Radio | None = None  # the presets' power model: what --objective energy needs

    def to_dict(self) -> dict:
        d = {"name": self.name, "up_mbps": self.up_mbps, "down_mbps": self.down_mbps, "rtt_ms": self.rtt_ms, "source": self.source}
        if self.radio is not None:
            d["radio_mw"] = {"up_per_mbps": self.radio.up_mw_per_mbps, "down_per_mbps": self.radio.down_mw_per_mbps, "base": self.radio.beta_mw}
        return d


_BOTTLENET = ("rate: BottleNet (Eshratifar et al., ISLPED 2019), average uplink; RTT assumed (not from BottleNet); radio power: "
              "BottleNet's uplink mW/Mbps and base mW (Huang et al., MobiSys 2012), Huang et al.'s downlink mW/Mbps")
LINKS = {
    "3g": Link("3g", 1.1, 1.1, 100.0, _BOTTLENET, Radio(868.98, 122.12, 817.88)),
    "4g": Link("4g", 5.85, 5.85, 50.0, _BOTTLENET, Radio(438.39, 51.97, 1288.04)),
    "wifi": Link("wifi", 18.88, 18.88, 10.0, _BOTTLENET, Radio(283.17, 137.01, 132.86)),
}
_CUSTOM = re.compile(r"^(?P<up>[0-9.eE+-]+)(?:/(?P<down>[0-9.eE+-]+))?(?::(?P<rtt>[0-9.eE+-]+))?$")


def parse_link(text: str) -> Link:
    """A preset (3g, 4g, wifi) or MBPS[/DOWN_MBPS][:RTT_MS] (down defaults to up, RTT to 0)."""
    if text.lower() in LINKS:
        return LINKS[text.lower()]
    match = _CUSTOM.match(text.strip())
    try:
        up = float(match["up"]) if match else None
        down = float(match["down"]) if match and match["down"] else up
        rtt = float(match["rtt"]) if match and match["rtt"] else 0.0
    except ValueError:
        up = None
    if up is None:
        raise ConfigError(f"unknown link {text!r}: use {', '.join(LINKS)} or MBPS[/DOWN_MBPS][:RTT_MS], e.g. 10/40:30")
    if not (up > 0 and down > 0 and np.isfinite(up) and np.isfinite(down)) or not (rtt >= 0 and np.isfinite(rtt)):
        raise ConfigError(f"link {text!r}: rates must be > 0 Mbit/s and the RTT >= 0 ms")
    return Link(text, up, down, rtt)


def transfer_s(n_bytes: float, mbps: float) -> float:
    return n_bytes * 8 / (mbps * 1e6)


def stages(edge_head_s: float, cloud_s: float, edge_tail_s: float, up_bytes: float, down_bytes: float, link: Link) -> dict:
    """Seconds of each stage of one group's request, and their total."""
    result = {"edge_head_mix": edge_head_s, "uplink": transfer_s(up_bytes, link.up_mbps), "rtt": link.rtt_ms / 1e3,
              "cloud": cloud_s, "downlink": transfer_s(down_bytes, link.down_mbps), "edge_demix_tail": edge_tail_s}
    result["total"] = sum(result.values())
    return result


def energy(latency: dict, link: Link, device_power_w: float) -> dict:
    """Joules of one group's request on the device: compute while the edge parts run, the radio while it sends and
    while it receives (the module docstring says what is left out)."""
    result = {"edge_compute": device_power_w * (latency.get("edge_head_mix", 0.0) + latency.get("edge_demix_tail", 0.0)),
              "uplink": link.radio.watts(link.up_mbps, True) * latency.get("uplink", 0.0),
              "downlink": link.radio.watts(link.down_mbps, False) * latency.get("downlink", 0.0)}
    result["total"] = sum(result.values())
    return result


def check_objective(objective: str, options) -> None:
    """One line for an objective the options cannot estimate: before any work is done."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown --objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
    if objective != "flops" and options is None:
        raise ConfigError(f"--objective {objective} needs --link (the link's rate and RTT)")
    if objective == "energy" and options.device_power_w is None:
        raise ConfigError("--objective energy needs --device-power W: the device's power while it runs the edge parts")
    if options is not None and options.device_power_w is not None and options.link.radio is None:
        raise ConfigError(f"--device-power estimates energy with a preset's radio power model: use --link 3g, 4g or wifi, not {options.link.name!r}")


def latency_options(link: str | None, **fields) -> LatencyOptions | None:
    """The checked options of the latency estimate on ``link`` (a preset or MBPS[/DOWN][:RTT]), or None without one,
    when --device-power has nothing to estimate; what profile and split both parse their options into."""
    if link is None:
        if fields.get("device_power_w") is not None:
            raise ConfigError("--device-power needs --link (the radio's energy is a link's)")
        return None
    options = LatencyOptions(parse_link(link), **fields)
    options.check()
    return options


def response_bytes(k: int, values_per_sample: int, bytes_per_value: int) -> int:
    """A binary response of the cloud outputs on the socket: the JSON header (estimated from one encoded), the
    tensor, and the HTTP status line and headers."""
    from datamix_cli.serving.oip import encode_response

    body, header = encode_response("cloud", "cloud_out", np.zeros((k, 1), dtype=np.float32), {}, None, binary=True)
    return header + k * values_per_sample * bytes_per_value + RESPONSE_HEADER_BYTES


def pareto(rows: list[dict]) -> list[str]:
    """The cuts no other cut beats on both latency and edge FLOPs."""
    front, best = [], float("inf")
    for r in sorted(rows, key=lambda r: (r["edge_flops"], r["latency"]["total"])):
        if r["latency"]["total"] < best:
            front.append(r["cut"])
            best = r["latency"]["total"]
    return front


def choose(rows: list[dict], objective: str, budget: float, max_uplink_bytes: int | None = None) -> dict:
    """The cut minimising ``objective`` among those with a head of at least one layer, within the FLOPs budget and
    the uplink limit."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown --objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
    # A head without layers would send mixed raw inputs, which blind separation recovers: never chosen.
    # --budget 1 lifts the budget: a cut just before the tail runs slightly more than the whole model (mixing).
    within = [r for r in rows if (budget >= 1 or r["edge_fraction"] <= budget) and r["head_flops"] > 0]
    allowed = [r for r in within if max_uplink_bytes is None or r["uplink_bytes_per_input"] <= max_uplink_bytes]
    if not allowed:
        smallest = min((r["uplink_bytes_per_input"] for r in within), default=0)
        raise ConfigError(f"no cut within the budget {budget:g}" + (f" and {max_uplink_bytes} uplink bytes per input (the smallest within it sends "
                                                                    f"{smallest:.0f} B)" if max_uplink_bytes else ""))
    key = {"flops": lambda r: (-r["edge_flops"], r["latency"]["total"]),  # the budget's choice: the deepest within it
           "latency": lambda r: r["latency"]["total"], "bytes": lambda r: (r["uplink_bytes_per_input"], r["latency"]["total"]),
           "energy": lambda r: (r["energy"]["total"], r["latency"]["total"])}[objective]
    return min(allowed, key=key)


def median_s(run, inputs: tuple, runs: int = RUNS, warmup: int = WARMUP, idle_s: float = 0.0) -> float:
    """The median seconds of ``run(*inputs)`` over ``runs`` runs after ``warmup``, each after ``idle_s`` of sleep."""
    for _ in range(warmup):
        run(*inputs)
    times = []
    for _ in range(runs):
        time.sleep(idle_s)
        start = time.perf_counter()
        run(*inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def edge_seconds(module, example: tuple, threads: int, runtime: str = "onnx") -> float:
    """The median time of ``module`` exported to ``runtime`` (onnx or tflite) and run with ``threads`` threads."""
    from exporters import get_exporter

    exporter = get_exporter(runtime)
    with tempfile.TemporaryDirectory(prefix="datamix-time-") as folder:
        path = Path(folder) / f"part{exporter.suffix}"
        exporter.export(module.eval(), example, path, [f"in{i}" for i in range(len(example))], "out")
        run = exporter.load(path, threads)
        return median_s(run, tuple(t.numpy() for t in example), idle_s=IDLE_S)


def _timed(cache, options, traced_sha: str, part: str, cut: str | None, example: tuple, measure) -> float:
    """``measure()`` (seconds on this machine), or its cached value for the same model, part, shapes and runtime."""
    from datamix_cli.pipeline.timing_cache import runtime_version

    import torch

    runtime = "torch" if part in ("cloud", "whole_cloud") else options.runtime
    key = {"model": traced_sha, "part": part, "cut": cut, "shapes": [list(t.shape) for t in example], "runtime": runtime,
           "version": runtime_version(runtime), "threads": torch.get_num_threads() if runtime == "torch" else options.threads,
           "idle_ms": IDLE_S * 1e3}
    return cache.seconds(key, measure)


def torch_seconds(module, example: tuple) -> float:
    import torch

    with torch.no_grad():
        return median_s(lambda *a: module(*a), example, idle_s=IDLE_S)


EDGE_RUNTIMES = ("onnx", "tflite")  # what --measure times on and --export-candidates writes


def check_edge_runtime(runtime: str) -> None:
    if runtime not in EDGE_RUNTIMES:
        raise ConfigError(f"--runtime must be onnx or tflite, got {runtime!r}")


@dataclass(frozen=True)
class LatencyOptions:
    link: Link
    measure: bool = False
    threads: int = 1
    device_speed: float = 1.0  # the device is this many times as fast as this machine's edge runtime
    cloud_speedup: float = 1.0  # the cloud is this many times as fast as this machine
    uplink: str = "fp32"
    runtime: str = "onnx"  # the edge runtime the parts are timed on: onnx or tflite
    cache: bool = True  # reuse part times measured before (datamix_cli.pipeline.timing_cache)
    # Seconds measured on the real device (read_device_times): {"head": {cut: s}, "tail": s, "whole": s or None}.
    device_times: dict | None = None
    device_power_w: float | None = None  # the device's power while it computes: turns on the energy estimate

    def check(self) -> None:
        if self.device_power_w is not None and not self.device_power_w > 0:
            raise ConfigError(f"--device-power must be > 0 W, got {self.device_power_w}")

        for name, value in (("--threads", self.threads), ("--device-speed", self.device_speed), ("--cloud-speedup", self.cloud_speedup)):
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        check_edge_runtime(self.runtime)


def latency_table(model_spec: str, traced, profile, decision, options: LatencyOptions, sample_shape: tuple[int, ...],
                  jpeg_bytes: float | None = None) -> dict:
    """Per candidate head cut (with the chosen tail cut): edge FLOPs, bytes and the latency stages of one group;
    the edge-only and cloud-only baselines; the Pareto set over latency and edge FLOPs."""
    import torch

    from datamix_cli.model.identity import model_name
    from datamix_cli.pipeline.uplink import wire_bytes_per_input
    from datamix_cli.serving.oip import request_bytes
    from partitioners.select import SplitDecision

    from datamix_cli.pipeline.timing_cache import TimeCache, model_sha256

    options.check()
    k, tail, link = decision.k, decision.tail_cut, options.link
    name = model_name(model_spec)
    x = torch.rand(k, *sample_shape)
    whole = traced.module
    cache, sha = TimeCache(enabled=options.cache), model_sha256(traced)

    def timed(part, cut, example, measure):
        return _timed(cache, options, sha, part, cut, example, measure)

    edge_whole = timed("whole", None, (x[:1],), lambda: edge_seconds(whole, (x[:1],), options.threads, options.runtime)) / options.device_speed
    cloud_whole = timed("whole_cloud", None, (x[:1],), lambda: torch_seconds(whole, (x[:1],))) / options.cloud_speedup
    edge_group = timed("whole", None, (x,), lambda: edge_seconds(whole, (x,), options.threads, options.runtime)) / options.device_speed if not options.measure else None
    cloud_group = timed("whole_cloud", None, (x,), lambda: torch_seconds(whole, (x,))) / options.cloud_speedup if not options.measure else None
    down = response_bytes(k, int(np.prod(tail.activation_shape)), 4)
    measured_tail = _tail_seconds(traced, decision, options, sample_shape, timed) if options.measure else None
    device = options.device_times
    if device is not None and device.get("whole") is not None:
        edge_whole = device["whole"]
    rows = []
    for cut in profile.cut_points:
        if cut.position >= tail.position or (device is not None and cut.name not in device["head"]):
            continue
        d = SplitDecision(cut, tail, k, profile.total_flops)
        up = wire_bytes_per_input(name, options.uplink, tuple(cut.activation_shape), k) * k
        if device is not None:  # the device's own times for the edge, this machine's (measured) for the cloud
            head_s, tail_s = device["head"][cut.name], device["tail"]
            cloud_s = _measured(traced, cut, tail, k, options, sample_shape, timed, head=False)[1] if options.measure else cloud_group * d.cloud_flops / max(profile.total_flops, 1)
        elif options.measure:
            head_s, cloud_s = _measured(traced, cut, tail, k, options, sample_shape, timed)
            tail_s = measured_tail
        else:  # proportional to FLOPs: what --measure corrects
            total = max(profile.total_flops, 1)
            head_s = edge_group * (d.head_flops + d.mix_flops) / total
            tail_s = edge_group * (d.tail_flops + d.demix_flops) / total
            cloud_s = cloud_group * d.cloud_flops / total
        rows.append({"cut": cut.name, "head_flops": d.head_flops, "edge_flops": d.edge_flops, "edge_fraction": d.edge_fraction,
                     "uplink_bytes_per_input": up / k, "downlink_bytes_per_input": down / k,
                     "latency": stages(head_s, cloud_s, tail_s, up, down, link)})
    cache.save()
    raw = int(np.prod(sample_shape))
    raw_request = request_bytes(name, [("input", "UINT8", (1, *sample_shape))], "logits")
    logits = response_bytes(1, _classes(whole, sample_shape), 4)
    baselines = {"edge_only": {"total": edge_whole},
                 "cloud_only_uint8": stages(0.0, cloud_whole, 0.0, raw_request, logits, link)}
    if jpeg_bytes is not None:
        baselines["cloud_only_jpeg"] = stages(0.0, cloud_whole, 0.0, raw_request - raw + jpeg_bytes, logits, link)
    if options.device_power_w is not None:
        for r in rows:
            r["energy"] = energy(r["latency"], link, options.device_power_w)
        baselines["edge_only"]["energy"] = {"edge_compute": options.device_power_w * edge_whole, "total": options.device_power_w * edge_whole}
        for name in [n for n in baselines if n.startswith("cloud_only")]:
            baselines[name]["energy"] = energy(baselines[name], link, options.device_power_w)
    return {"link": link.to_dict(), "measured": options.measure, "threads": options.threads, "device_speed": options.device_speed,
            "cloud_speedup": options.cloud_speedup, "uplink_codec": options.uplink, "k": k, "cuts": rows, "baselines": baselines,
            "pareto": pareto(rows), "runtime": options.runtime, "device_power_w": options.device_power_w,
            "times": ("edge: measured on the device (--device-times)" if device is not None else
                      f"measured per part ({options.runtime} edge, eager PyTorch cloud)" if options.measure else "whole model's time split by FLOPs share"),
            "cache": {"reused": cache.hits, "measured": cache.misses, "path": str(cache.path) if options.cache else None}}


def _classes(traced, sample_shape) -> int:
    import torch

    with torch.no_grad():
        return int(traced(torch.zeros(1, *sample_shape)).reshape(1, -1).shape[1])


def _measured(traced, cut, tail, k: int, options: LatencyOptions, sample_shape, timed, head: bool = True) -> tuple[float, float]:
    """Head + mix on the edge runtime (0 with ``head=False``: the device's own time is used) and the cloud part in
    PyTorch, for one group of k."""
    import torch

    from datamix_cli.protocol.edge_modules import HeadWithMix
    from partitioners.partition import partition

    parts = partition(traced, cut, tail)
    x = torch.rand(k, *sample_shape)
    c = torch.full((k, k), 1.0 / k) + torch.eye(k)
    head_s = timed("head+mix", cut.name, (x, c), lambda: edge_seconds(HeadWithMix(parts.head), (x, c), options.threads, options.runtime)) if head else 0.0
    with torch.no_grad():
        m = parts.head(x)
    cloud_s = timed("cloud", f"{cut.name}..{tail.name}", (m,), lambda: torch_seconds(parts.cloud, (m,)))
    return head_s / options.device_speed, cloud_s / options.cloud_speedup


def _tail_seconds(traced, decision, options: LatencyOptions, sample_shape, timed) -> float:
    import torch

    from datamix_cli.protocol.edge_modules import TailWithDemix
    from partitioners.partition import partition

    k = decision.k
    parts = partition(traced, decision.head_cut, decision.tail_cut)
    with torch.no_grad():
        z = parts.cloud(parts.head(torch.rand(k, *sample_shape)))
    example = (z, torch.eye(k))
    return timed("tail+demix", decision.tail_cut.name, example, lambda: edge_seconds(TailWithDemix(parts.tail), example, options.threads, options.runtime)) / options.device_speed


def manifest_record(table: dict) -> dict:
    """What the manifest keeps of a latency table (``split.objective``): the objective, the link, the chosen and the
    FLOPs budget's cut with their estimates, the baselines and the Pareto set."""
    row = {r["cut"]: r for r in table["cuts"]}
    return {"name": table["objective"], "link": table["link"], "times": table["times"], "threads": table["threads"], "runtime": table["runtime"],
            "chosen": table["chosen"], "flops_choice": table["flops_choice"], "estimate_s": row[table["chosen"]]["latency"],
            "flops_choice_estimate_s": row[table["flops_choice"]]["latency"], "edge_only_s": table["baselines"]["edge_only"]["total"],
            "cloud_only_uint8_s": table["baselines"]["cloud_only_uint8"]["total"], "pareto": table["pareto"],
            **({"max_uplink_bytes": table["max_uplink_bytes"]} if table.get("max_uplink_bytes") is not None else {}),
            **({"energy_j": row[table["chosen"]]["energy"], "device_power_w": table["device_power_w"]} if "energy" in row[table["chosen"]] else {})}


def candidate_cuts(profile, decision) -> list:
    """The head cuts a latency objective may choose: before the tail, with at least one layer in the head."""
    return [c for c in profile.cut_points if c.position < decision.tail_cut.position and c.flops_prefix > 0]
