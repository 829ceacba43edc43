"""Latency on a link, estimated and measured, and int8 (or fp16) edge parts against fp32, for the ResNet example on
digits; and the decision table for a torchvision MobileNetV3 at 224².

    .venv/bin/python benchmarks/bench_latency.py [--links 3g,4g,wifi] [--samples 64] [--runs 300] [--work DIR]
        [--int8-budgets 0.2,0.5] [--int8-only] [--precision int8|fp16]
    .tv-venv/bin/python benchmarks/bench_latency.py --model mobilenet_v3_small|resnet50 [--links 3g,4g,wifi] [--samples 16]
        [--precision-at-224 --int8-budgets 0.2]

With ``--model mobilenet_v3_small`` (or ``resnet50``) the decision table (3.) is built, and with
``--precision-at-224`` the int8 speed (1.) first, for torchvision's ``mobilenet_v3_small(num_classes=10)`` (or
``resnet50``) on 3x224x224 inputs (the digits resized):
random weights, since time does not depend on them and nothing is downloaded, so its splits are built with
--allow-low-accuracy and their agreement is not reported (bench_precision_mobilenet.py measures it, trained).

1. int8 speed: each split (per budget, one seeded epoch, `--edge-precision int8`, or fp16 with `--precision fp16`)
   runs its fp32 and int8 head and tail on onnxruntime and on ai-edge-litert with one thread, alternating, in this
   one process; the median of each and the ratio, with the reduced chain's top-1 agreement from the manifest.
2. Estimate accuracy: per link preset, the estimate of `profile --link` for the split's cut (its parts measured:
   ONNX head + mix and tail with one thread, the cloud part in PyTorch) against `serve-local --link` (the client's
   socket paced to the link), per stage and end to end: relative error (estimate - measured) / measured.
3. Decision table: per link preset, the latency-optimal cut (`profile --measure --objective latency --budget 1`),
   its estimate and its measured latency (a split at that cut, `serve-local --link`), and its speed-up against
   the FLOPs budget's cut (0.2), edge only and cloud only (both estimated).
Appends the figures to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = ["examples/models.py:resnet", "--weights", "examples/checkpoints/resnet_digits.pt", "--input-shape", "1,1,32,32"]
MODELS = {"resnet": MODEL, **{name: [f"torchvision.models:{name}", "--model-kwargs", '{"num_classes": 10}', "--input-shape", "1,3,224,224",
                                      "--allow-low-accuracy"] for name in ("mobilenet_v3_small", "resnet50")}}


def datamix(*args: str) -> str:
    done = subprocess.run([str(Path(sys.executable).parent / "datamix"), *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"datamix {args[0]} failed ({done.returncode}): {done.stderr.strip()[-800:] or done.stdout.strip()[-800:]}")
    return done.stdout


def split(out: Path, *extra: str) -> dict:
    if not (out / "manifest.json").exists():
        datamix("split", *MODEL, "--data", "digits", "--seed", "0", "--out", str(out), "--force", "--json", *extra)
    return json.loads((out / "manifest.json").read_text())


def reduced_speed(folder: Path, manifest: dict, runs: int, runtime: str = "onnx", precision: str = "int8") -> dict:
    """Median ms of head(x, C) + tail(z, C⁻¹) per group for fp32 and ``precision`` (int8 or fp16) on ``runtime``
    (onnx or tflite, one thread), alternating run by run."""
    from exporters import get_exporter

    k = manifest["protocol"]["k"]
    x = np.load(folder / "test_vectors.npz")
    inputs = (x["x"], x["C"]), (x["cloud_out"], x["C_inv"])
    chains = {}
    for fmt, suffix in (("fp32", f".{runtime}"), ("reduced", f".{precision}.{runtime}")):
        exporter = get_exporter(runtime if fmt == "fp32" else f"{runtime}_{precision}")
        chains[fmt] = (exporter.load(folder / f"edge/head{suffix}", 1), exporter.load(folder / f"edge/tail{suffix}", 1))
    times = {fmt: [] for fmt in chains}
    for i in range(runs + 20):
        for fmt, (head, tail) in chains.items():
            start = time.perf_counter()
            head(*inputs[0])
            tail(*inputs[1])
            if i >= 20:  # warm-up
                times[fmt].append(time.perf_counter() - start)
    fp32, reduced = (statistics.median(times[f]) * 1e3 for f in ("fp32", "reduced"))
    agreement = next(a["agreement"] for a in manifest["artifacts"] if a["format"] == f"{runtime}_{precision}")
    return {"k": k, "fp32_ms": fp32, "reduced_ms": reduced, "speedup": fp32 / reduced, "top1_agreement": agreement["top1"], "inputs": agreement["inputs"]}


def part_times(manifest: dict) -> dict:
    """The split cut's parts timed as `profile --link --measure` times them (seconds per group)."""
    from datamix_cli.model.loading import ModelSource, load_model
    from datamix_cli.pipeline.latency import LINKS, LatencyOptions, _measured, _tail_seconds
    from partitioners.graph import trace_model
    from partitioners.profile import profile_model
    from partitioners.select import choose_split

    traced = trace_model(load_model(ModelSource(MODEL[0], weights=ROOT / MODEL[2])))
    profile = profile_model(traced, (1, 1, 32, 32))
    decision = choose_split(profile, 1.0, manifest["protocol"]["k"], manifest["split"]["head_cut"], manifest["split"]["tail_cut"])
    options = LatencyOptions(LINKS["4g"], measure=True)

    def timed(part, cut, example, measure):  # measured afresh, not read from the part-time cache
        return measure()

    head, cloud = _measured(traced, decision.head_cut, decision.tail_cut, decision.k, options, (1, 32, 32), timed)
    return {"edge_head_mix": head, "cloud": cloud, "edge_demix_tail": _tail_seconds(traced, decision, options, (1, 32, 32), timed)}


def estimate(manifest: dict, times: dict, link) -> dict:
    from datamix_cli.model.identity import model_name
    from datamix_cli.pipeline.latency import response_bytes, stages
    from datamix_cli.pipeline.uplink import wire_bytes_per_input

    k, up = manifest["protocol"]["k"], manifest["split"]["uplink"]
    sent = wire_bytes_per_input(model_name(manifest["model"]["source"]), up["codec"], tuple(up["shape"][1:]), k) * k
    back = response_bytes(k, int(np.prod(manifest["split"]["downlink"]["shape"][1:])), 4)
    return stages(times["edge_head_mix"], times["cloud"], times["edge_demix_tail"], sent, back, link)


def measured(folder: Path, link: str, samples: int) -> dict:
    report = json.loads(datamix("serve-local", str(folder), "--link", link, "--samples", str(samples), "--json"))
    return {stage: values["p50"] / 1e3 for stage, values in report["latency_ms"].items()}


def compare(est: dict, meas: dict) -> dict:
    """Relative errors: edge, cloud, network (uplink + RTT + downlink, which the measurement splits differently)."""
    network_est = est["uplink"] + est["rtt"] + est["downlink"]
    network_meas = meas["uplink"] + meas["downlink"]
    pairs = {"edge_head_mix": (est["edge_head_mix"], meas["edge_head_mix"]), "cloud": (est["cloud"], meas["cloud"]),
             "network": (network_est, network_meas), "edge_demix_tail": (est["edge_demix_tail"], meas["edge_demix_tail"]),
             "total": (est["total"], meas["total"])}
    return {name: {"estimate_ms": 1e3 * e, "measured_ms": 1e3 * m, "relative_error": (e - m) / m if m else None} for name, (e, m) in pairs.items()}


def profile_args() -> list[str]:
    return [a for a in MODEL if a != "--allow-low-accuracy"]  # a split option


def decision(link: str, work: Path, samples: int) -> dict:
    table = json.loads(datamix("profile", *profile_args(), "--link", link, "--measure", "--objective", "latency", "--budget", "1", "--json"))["latency"]
    rows = {r["cut"]: r for r in table["cuts"]}
    flops = json.loads(datamix("profile", *profile_args(), "--budget", "0.2", "--json"))["chosen"]["head_cut"]
    chosen = table["chosen"]
    folder = work / f"cut-{chosen}"
    split(folder, "--head-cut", chosen, "--epochs", "0", "--formats", "onnx")
    best = rows[chosen]["latency"]["total"]
    return {"link": link, "chosen": chosen, "estimate_ms": 1e3 * best, "measured_ms": 1e3 * measured(folder, link, samples)["total"],
            "flops_cut": flops, "flops_cut_estimate_ms": 1e3 * rows[flops]["latency"]["total"],
            "edge_only_ms": 1e3 * table["baselines"]["edge_only"]["total"], "cloud_only_ms": 1e3 * table["baselines"]["cloud_only_uint8"]["total"],
            "speedup_vs_flops_cut": rows[flops]["latency"]["total"] / best,
            "speedup_vs_edge_only": table["baselines"]["edge_only"]["total"] / best,
            "speedup_vs_cloud_only": table["baselines"]["cloud_only_uint8"]["total"] / best}


def describe(d: dict) -> str:
    return (f"latency-optimal cut {d['chosen']}: {d['estimate_ms']:.1f} ms estimated, {d['measured_ms']:.1f} ms measured; "
            f"{d['speedup_vs_flops_cut']:.2f}x vs the FLOPs cut {d['flops_cut']} ({d['flops_cut_estimate_ms']:.1f} ms), "
            f"{d['speedup_vs_edge_only']:.3f}x vs edge only ({d['edge_only_ms']:.2f} ms), {d['speedup_vs_cloud_only']:.2f}x vs cloud only ({d['cloud_only_ms']:.1f} ms)")


def precision_rows(label: str, out: Path, budget: str, runs: int, precision: str, epochs: str) -> list[tuple[str, str, str]]:
    """The reduced-precision split at ``budget`` timed against its fp32 parts on both edge runtimes: result rows.
    With ``epochs`` 0 (untrained weights) the agreement is not reported: it says nothing of a model at chance."""
    found = split(out, "--budget", budget, "--epochs", epochs, "--formats", "onnx,tflite", "--edge-precision", precision, "--allow-mismatch")
    rows = []
    for runtime, engine in (("onnx", "onnxruntime"), ("tflite", "ai-edge-litert")):
        speed = reduced_speed(out, found, runs, runtime, precision)
        print(json.dumps({"budget": budget, "runtime": runtime, "precision": precision, "head_cut": found["split"]["head_cut"], **speed}), flush=True)
        agreement = f"; top-1 agreement {speed['top1_agreement']:.1%} on {speed['inputs']} held-out inputs" if epochs != "0" else ""
        rows.append((f"{precision} edge head + tail, {label}, budget {budget} (cut {found['split']['head_cut']}; {engine}, 1 thread)",
                     f"fp32 {speed['fp32_ms']:.3f} ms, {precision} {speed['reduced_ms']:.3f} ms per group of {speed['k']}: {speed['speedup']:.2f}x{agreement}",
                     ">= 1.5x faster, agreement >= 99 %" if precision == "int8" else "agreement >= 99 % (no speed target)"))
    return rows


def seeded_weights(name: str, path: Path) -> Path:
    """Untrained torchvision weights drawn once (seed 0) and saved, so every profile of the run times the same model
    and reuses the part-time cache (fresh random weights would be a new model each time)."""
    import torch
    import torchvision

    if not path.exists():
        torch.manual_seed(0)
        torch.save(getattr(torchvision.models, name)(num_classes=10).state_dict(), path)
    return path


def main() -> None:
    global MODEL
    from datamix_cli.pipeline.latency import parse_link

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet", choices=sorted(MODELS), help="a torchvision model: the decision table (and --precision-at-224) at 224² (.tv-venv)")
    parser.add_argument("--links", default="3g,4g,wifi")  # the int8 speed runs first, on --int8-budgets
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--work", type=Path, default=Path("/tmp/datamix-latency"))
    parser.add_argument("--int8-budgets", default="0.2", help="budgets whose splits the int8 speed is measured on")
    parser.add_argument("--int8-only", action="store_true", help="measure the int8 speed and stop")
    parser.add_argument("--precision", default="int8", choices=("int8", "fp16"), help="the reduced precision timed against fp32")
    parser.add_argument("--precision-at-224", action="store_true", help="with --model: also time the --precision parts at --int8-budgets")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.model != "resnet":
        (args.work / args.model).mkdir(exist_ok=True)
        MODEL = [*MODELS[args.model], "--weights", str(seeded_weights(args.model, args.work / args.model / "weights.pt"))]
        for budget in args.int8_budgets.split(",") if args.precision_at_224 else ():
            rows += precision_rows(f"torchvision {args.model} at 3x224x224 (random weights: speed only)", args.work / args.model / f"{args.precision}-{budget}",
                                   budget, args.runs, args.precision, epochs="0")
        for link in filter(None, args.links.split(",")):
            d = decision(link, args.work / args.model, args.samples)
            print(json.dumps(d), flush=True)
            rows.append((f"latency decision, torchvision {args.model} at 3x224x224 (random weights), {link}", describe(d), "decision table (issue 19)"))
        record(rows)
        return
    for budget in args.int8_budgets.split(","):
        rows += precision_rows("ResNet example", args.work / (f"resnet-{budget}" + ("" if args.precision == "int8" else f"-{args.precision}")),
                               budget, args.runs, args.precision, epochs="1")
    if args.int8_only:
        record(rows)
        return
    folder = args.work / "resnet-0.2"
    manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").exists() else split(
        folder, "--budget", "0.2", "--epochs", "1", "--formats", "onnx,tflite", "--edge-precision", "int8", "--allow-mismatch")
    times = part_times(manifest)
    for link in filter(None, args.links.split(",")):
        c = compare(estimate(manifest, times, parse_link(link)), measured(folder, link, args.samples))
        print(json.dumps({"link": link, **c}), flush=True)
        rows.append((f"latency estimate vs paced serve-local, ResNet example at layer1.0, {link}",
                     "; ".join(f"{n} {v['estimate_ms']:.2f} vs {v['measured_ms']:.2f} ms ({100 * v['relative_error']:+.0f} %)" for n, v in c.items()),
                     "end to end within 25 %"))
    for link in filter(None, args.links.split(",")):
        d = decision(link, args.work, args.samples)
        print(json.dumps(d), flush=True)
        rows.append((f"latency decision, ResNet example, {link}", describe(d), "decision table (issue 19)"))
    record(rows)


if __name__ == "__main__":
    main()
