"""`datamix split` of the ResNet example on digits: accuracy, wall time, edge cost.

    .venv/bin/python benchmarks/bench_split.py [--compare-kappa 50] [--repeat 200]

Targets (issue 3), all on this machine, same run:
* edge FLOPs share <= 0.20 at budget 0.2, k = 4; mixing-aware accuracy within
  1.0 point of the original (held-out n and seeds stated); naive mixing shown;
* mixing + de-mixing <= 2 % of the edge parts' run time (onnxruntime, 1 thread);
* edge latency ratio (head+mix + de-mix+tail) / whole model, onnxruntime 1 thread,
  next to the FLOPs ratio;
* the whole split (fine-tuning, ONNX + TFLite export, verification) <= 3 minutes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _results import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "examples/checkpoints/resnet_digits.pt"
K = 4


def run_split(out: Path, kappa: float) -> tuple[float, dict]:
    from datamix_cli.artifacts.manifest import load_manifest

    cmd = [
        str(Path(sys.executable).parent / "datamix"), "split", "examples/models.py:resnet", "--weights", str(CHECKPOINT),
        "--data", "digits", "--input-shape", "1,1,32,32", "--budget", "0.2", "--k", str(K), "--kappa-max", str(kappa),
        "--seed", "0", "--eval-seed", "0", "--out", str(out), "--force",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, load_manifest(out)


def median_ms(run, inputs, repeat: int) -> float:
    """Median ms of ``run(*inputs)`` over ``repeat`` runs after 10 warm-up runs (the library's timer)."""
    from datamix_cli.pipeline.latency import median_s

    return median_s(run, tuple(inputs), runs=repeat, warmup=10) * 1e3


def edge_timing(manifest, folder: Path, repeat: int) -> dict:
    """Median ms per group of k on onnxruntime with one thread, all measured in this one process."""
    import torch

    from datamix_cli.model.loading import ModelSource, load_model
    from exporters import get_exporter
    from partitioners.graph import trace_model
    from partitioners.partition import partition
    from partitioners.profile import profile_model

    onnx = get_exporter("onnx")
    model = load_model(ModelSource("examples/models.py:resnet", weights=CHECKPOINT))
    traced = trace_model(model)
    profile = profile_model(traced, (1, 1, 32, 32))
    parts = partition(traced, profile.cut(manifest.split["head_cut"]), profile.cut(manifest.split["tail_cut"]))
    up, down = manifest.split["uplink"]["shape"][1:], manifest.split["downlink"]["shape"][1:]
    x = np.random.default_rng(0).random((K, 1, 32, 32), dtype=np.float32)
    c = np.random.default_rng(1).dirichlet(np.ones(K), size=K).astype(np.float32)
    h = np.random.default_rng(2).random((K, *up), dtype=np.float32)
    z = np.random.default_rng(3).random((K, *down), dtype=np.float32)

    class Mix(torch.nn.Module):
        def forward(self, c, t):
            return (c @ t.reshape(t.shape[0], -1)).reshape(t.shape)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = {
            "whole": (model, (x,)),
            "head": (parts.head, (x,)),
            "tail": (parts.tail, (z,)),
            "mix": (Mix(), (c, h)),
            "demix": (Mix(), (c, z)),
        }
        runs = {}
        for name, (module, inputs) in plain.items():
            onnx.export(module.eval(), tuple(torch.from_numpy(a) for a in inputs), tmp / f"{name}.onnx", [f"in{i}" for i in range(len(inputs))], "out")
            runs[name] = (onnx.load(tmp / f"{name}.onnx", threads=1), inputs)
        runs["head+mix"] = (onnx.load(folder / "edge/head.onnx", threads=1), (x, c))
        runs["demix+tail"] = (onnx.load(folder / "edge/tail.onnx", threads=1), (z, c))
        return {name: median_ms(run, inputs, repeat) for name, (run, inputs) in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compare-kappa", type=float, default=50.0, help="also split with this kappa_max (0 = skip)")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    if not CHECKPOINT.exists():
        subprocess.run([sys.executable, "examples/train.py", "--model", "resnet", "--out", str(CHECKPOINT)], cwd=ROOT, check=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "split"
        seconds, manifest = run_split(folder, 20.0)
        acc, flops = manifest.accuracy, manifest.flops
        drop = 100 * (acc["original"] - acc["mixing_aware"])
        setting = f"ResNet, digits, budget 0.2, k={K}, kappa_max 20, n={acc['n']} held out, eval seed {acc['eval_seed']}, train seed 0"
        rows += [
            ("split: edge FLOPs share", f"{flops['edge_fraction']:.4f} ({setting})", "≤ 0.20"),
            (
                "split: accuracy original / no mixing / naive mixing / mixing-aware",
                f"{acc['original']:.4f} / {acc['split_without_mixing']:.4f} / {acc['naive_mixing']:.4f} / {acc['mixing_aware']:.4f} "
                f"(drop {drop:.2f} points; {setting})",
                "drop ≤ 1.0 point",
            ),
            ("split: whole `datamix split` wall time (fine-tune 12 epochs, ONNX+TFLite, verify)", f"{seconds:.1f} s", "≤ 180 s"),
        ]
        t = edge_timing(manifest, folder, args.repeat)
        edge_ms = t["head+mix"] + t["demix+tail"]
        in_graph = max(0.0, t["head+mix"] - t["head"]) + max(0.0, t["demix+tail"] - t["tail"])
        rows += [
            (
                "split: mix + de-mix time / edge parts time (onnxruntime, 1 thread, per group of 4)",
                f"{in_graph / edge_ms:.4f} in-graph ((head+mix − head) + (de-mix+tail − tail) = {in_graph:.4f} ms of {edge_ms:.3f} ms); "
                f"standalone MatMul graphs {(t['mix'] + t['demix']) / edge_ms:.4f} (mix {t['mix']:.4f} ms, de-mix {t['demix']:.4f} ms, incl. call overhead); "
                f"mixing FLOPs share of edge {(flops['mix'] + flops['demix']) / flops['edge']:.4f}",
                "≤ 0.02",
            ),
            (
                "split: edge latency ratio (head+mix + de-mix+tail) / whole model (onnxruntime, 1 thread)",
                f"{edge_ms / t['whole']:.3f} (edge {edge_ms:.3f} ms vs whole {t['whole']:.3f} ms per group of 4; FLOPs ratio {flops['edge_fraction']:.3f})",
                "report",
            ),
        ]
        if args.compare_kappa:
            _, other = run_split(Path(tmp) / "split-kappa", args.compare_kappa)
            a = other.accuracy
            rows.append(
                (
                    f"split: accuracy with kappa_max {args.compare_kappa:g} (original / naive / mixing-aware)",
                    f"{a['original']:.4f} / {a['naive_mixing']:.4f} / {a['mixing_aware']:.4f} "
                    f"(drop {100 * (a['original'] - a['mixing_aware']):.2f} points; otherwise as above)",
                    "why the default is 20",
                )
            )
    record(rows)


if __name__ == "__main__":
    main()
