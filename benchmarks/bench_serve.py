"""Loopback serving: DataMix throughput against plain split inference, and per-stage latency.

    .venv/bin/python benchmarks/bench_serve.py [--split DIR] [--samples 400]

Targets (issue 4), same run, same server, onnxruntime edge with one thread:
* throughput in samples/s of the DataMix split (k = 4, mixing on, one group
  per request) over plain split inference of the same parts (no mixing, no
  decoys, the same 4 samples per request): ratio >= 0.8;
* per-stage latency p50/p95 from `serve-local` on the ResNet example.
Without --split, the ResNet example is split first (about a minute).
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


def make_split(out: Path) -> None:
    if not CHECKPOINT.exists():
        subprocess.run([sys.executable, "examples/train.py", "--model", "resnet", "--out", str(CHECKPOINT)], cwd=ROOT, check=True)
    cmd = [str(Path(sys.executable).parent / "datamix"), "split", "examples/models.py:resnet", "--weights", str(CHECKPOINT),
           "--data", "digits", "--input-shape", "1,1,32,32", "--out", str(out), "--force"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def plain_parts(manifest, tmp: Path):
    """Head and tail without mixing, exported from the same architecture and cuts (timing only)."""
    import torch

    from datamix_cli.model.loading import ModelSource, load_model
    from exporters import get_exporter
    from partitioners.graph import trace_model
    from partitioners.partition import partition
    from partitioners.profile import profile_model

    model = load_model(ModelSource(manifest.model["source"], weights=Path(manifest.model["weights"])))
    traced = trace_model(model)
    profile = profile_model(traced, (1, *manifest.model["input_shape"][1:]))
    parts = partition(traced, profile.cut(manifest.split["head_cut"]), profile.cut(manifest.split["tail_cut"]))
    k = manifest.protocol["k"]
    onnx = get_exporter("onnx")
    onnx.export(parts.head, (torch.zeros(k, *manifest.model["input_shape"][1:]),), tmp / "head.onnx", ["x"], "h")
    onnx.export(parts.tail, (torch.zeros(k, *manifest.split["downlink"]["shape"][1:]),), tmp / "tail.onnx", ["z"], "y")
    return onnx.load(tmp / "head.onnx", threads=1), onnx.load(tmp / "tail.onnx", threads=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", type=Path)
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args()

    from datamix_cli.serving.client import EdgeClient, OipClient
    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.serving.loopback import LoopbackConfig, ServerProcess, free_port, run_serve_local
    from datamix_cli.artifacts.manifest import load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = args.split or tmp / "split"
        if args.split is None:
            make_split(folder)
        manifest = load_manifest(folder)
        k = manifest.protocol["k"]
        edge = EdgeClient(folder, "onnx")
        x = load_dataset("digits", edge.input_shape).x[: args.samples - args.samples % k]
        head, tail = plain_parts(manifest, tmp)
        name, uplink = manifest.model["name"], manifest.split["uplink"]["name"]
        with ServerProcess(folder, free_port()) as server:
            server.wait_ready(60)
            oip = OipClient(server.url)
            edge.run(oip, x[: 8 * k])  # warm-up both paths
            for start in range(0, 8 * k, k):
                oip.infer(name, uplink, head(x[start : start + k]))
            rates = {"datamix": [], "plain": []}
            for _ in range(3):  # interleaved rounds: the machine is shared and noisy
                t0 = time.perf_counter()
                edge.run(oip, x, groups_per_request=1)
                rates["datamix"].append(len(x) / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                for start in range(0, len(x), k):
                    out, _ = oip.infer(name, uplink, head(x[start : start + k]))
                    tail(out)
                rates["plain"].append(len(x) / (time.perf_counter() - t0))
            oip.close()
        datamix, plain = np.median(rates["datamix"]), np.median(rates["plain"])
        report = run_serve_local(LoopbackConfig(folder=folder, runtime="onnx", samples=200))
    stages = ", ".join(f"{s} {v['p50']:.2f}/{v['p95']:.2f}" for s, v in report["latency_ms"].items())
    record(
        [
            (
                "serve: loopback throughput DataMix (k=4, mixing, 1 group/request) / plain split (same parts, 4 samples/request, no mixing)",
                f"{datamix / plain:.3f} ({datamix:.0f} vs {plain:.0f} samples/s, median of 3 interleaved rounds of {len(x)} samples, ResNet digits split)",
                "≥ 0.8",
            ),
            (
                "serve-local: per-stage latency p50/p95 ms per request of one group of 4 (ResNet digits split, onnx edge)",
                f"{stages}; agreement {report['agreement']:.4f}, accuracy {report['accuracy']:.4f}, "
                f"bytes up/down per sample {report['bytes_up_per_sample']:.0f}/{report['bytes_down_per_sample']:.0f}",
                "report",
            ),
        ]
    )


if __name__ == "__main__":
    main()
