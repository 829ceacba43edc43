"""Deployment: Triton against `datamix serve` on loopback, and the cloud formats against each other.

    .venv/bin/python benchmarks/bench_deploy.py [--split DIR] [--requests 100] [--clients 16]

Measurements, not pass/fail (issue 10), all in one run on this machine:
* Triton (the server bundled in nvidia-pytriton, `.triton-venv`, made by
  `make test`) serving the repository of `datamix export triton`, against
  `datamix serve` on the same split: 16 concurrent edge clients, each sending
  one group of k mixtures per request with the same client code, binary
  tensors. Throughput and p50/p95 latency per request, and the average batch
  Triton's dynamic batcher formed (from its statistics endpoint). On this
  machine Triton runs the model through the Python stand-in of its
  onnxruntime backend (tests/helpers/triton_backends): a GPU or container deployment
  runs the C++ backend instead, so the Triton figure here is a floor.
* Cloud part alone on the CPU, in-process, batch of 16 mixtures:
  TorchScript (`cloud.pt`), `torch.export` (`cloud.pt2`) and AOTInductor
  (`cloud.aoti.pt2`), samples/s, median of interleaved rounds.
Without --split, the ResNet example is split first with all three cloud formats.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from _results import record  # noqa: E402

CHECKPOINT = ROOT / "examples/checkpoints/resnet_digits.pt"


def make_split(out: Path) -> None:
    if not CHECKPOINT.exists():
        subprocess.run([sys.executable, "examples/train.py", "--model", "resnet", "--out", str(CHECKPOINT)], cwd=ROOT, check=True)
    cmd = [str(Path(sys.executable).parent / "datamix"), "split", "examples/models.py:resnet", "--weights", str(CHECKPOINT), "--data", "digits",
           "--input-shape", "1,1,32,32", "--out", str(out), "--force", "--seed", "0", "--cloud-formats", "torchscript,pt2,aoti"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def load_test(url: str, folder: Path, x: np.ndarray, clients: int, requests: int) -> dict:
    """``clients`` threads, each an edge client sending ``requests`` requests of one group."""
    from datamix_cli.serving.client import EdgeClient, OipClient

    k = json.loads((folder / "manifest.json").read_text())["protocol"]["k"]
    latencies, errors = [], []

    def worker(i: int) -> None:
        edge, oip = EdgeClient(folder, "onnx"), OipClient(url)
        try:
            for j in range(requests):
                start = (i * requests + j) * k % (len(x) - k)
                t0 = time.perf_counter()
                edge.run(oip, x[start : start + k], groups_per_request=1)
                latencies.append((time.perf_counter() - t0) * 1e3)
        except Exception as exc:  # reported below
            errors.append(repr(exc))
        finally:
            oip.close()

    warm = OipClient(url)
    EdgeClient(folder, "onnx").run(warm, x[: 4 * k], groups_per_request=1)
    warm.close()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return {
        "samples_per_s": clients * requests * k / seconds,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "errors": len(errors),
    }


def triton_batch_stats(url: str, model: str) -> float:
    with urllib.request.urlopen(f"{url}/v2/models/{model}/stats") as response:
        stats = json.loads(response.read())["model_stats"][0]
    return stats["inference_count"] / max(stats["execution_count"], 1)


def cloud_formats(folder: Path, rounds: int = 5, batch: int = 16, calls: int = 50) -> dict:
    from datamix_cli.artifacts.manifest import load_manifest
    from exporters import get_exporter

    manifest = load_manifest(folder)
    runs = {a["format"]: get_exporter(a["format"]).load(folder / a["path"]) for a in manifest.artifacts if a["role"] == "cloud"}
    x = np.random.default_rng(0).standard_normal((batch, *manifest.split["uplink"]["shape"][1:])).astype(np.float32)
    rates = {name: [] for name in runs}
    for run in runs.values():
        run(x)  # warm-up
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                run(x)
            rates[name].append(batch * calls / (time.perf_counter() - t0))
    return {name: float(np.median(r)) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", type=Path)
    parser.add_argument("--requests", type=int, default=100, help="requests per client")
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()

    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.serving.deploy.triton import TritonConfig, export_triton
    from datamix_cli.serving.loopback import ServerProcess, free_port
    from tests.helpers.triton_server import TritonServer, unavailable_reason

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = args.split or tmp / "split"
        if args.split is None:
            make_split(folder)
        x = load_dataset("digits", (1, 32, 32)).x
        formats = cloud_formats(folder)
        base = formats["torchscript"]
        shown = ", ".join(f"{name} {rate:.0f} ({rate / base:.2f}×)" for name, rate in sorted(formats.items()))
        rows.append(("cloud part alone, CPU, batch 16 mixtures: samples/s (ratio to TorchScript)", f"{shown}; ResNet digits split", "report"))
        with ServerProcess(folder, free_port(), ("--max-batch", "256")) as server:
            server.wait_ready(60)
            serve = load_test(server.url, folder, x, args.clients, args.requests)
        reason = unavailable_reason()
        if reason:
            print(f"Triton not measured: {reason}")
        else:
            repo = export_triton(TritonConfig(folder, tmp / "repo", max_batch=64)).out
            with TritonServer(repo, free_port(), free_port(), free_port()) as triton:
                triton.wait_ready()
                tri = load_test(triton.url, folder, x, args.clients, args.requests)
                batch = triton_batch_stats(triton.url, json.loads((folder / "manifest.json").read_text())["model"]["name"])
            rows.append(
                (
                    f"Triton (ONNX via the Python stand-in backend, dynamic batching) / datamix serve (TorchScript): throughput, {args.clients} clients × {args.requests} requests of one group of 4, loopback",
                    f"{tri['samples_per_s'] / serve['samples_per_s']:.2f} (Triton {tri['samples_per_s']:.0f} samples/s, p50/p95 {tri['p50_ms']:.1f}/{tri['p95_ms']:.1f} ms, "
                    f"mean batch formed {batch:.1f} mixtures, {tri['errors']} errors; serve {serve['samples_per_s']:.0f} samples/s, "
                    f"p50/p95 {serve['p50_ms']:.1f}/{serve['p95_ms']:.1f} ms, {serve['errors']} errors)",
                    "report",
                )
            )
    record(rows)


if __name__ == "__main__":
    main()
