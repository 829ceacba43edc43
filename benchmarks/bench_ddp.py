"""Fine-tuning under torchrun on the CPU: 2 gloo processes against 1 process, on digits.

    .venv/bin/python benchmarks/bench_ddp.py [--epochs 4]

Trains the small CNN on the fine-tuning part of digits (as tests/helpers
does), then runs the same ``datamix split`` (32×32, k = 4, batch 64, seed 0,
ONNX edge, TorchScript cloud) once as one process and once under
``torchrun --nproc-per-node 2`` (gloo; each process gets 1 thread, the
single process 2, so both use this machine's two cores). Reports mixing-aware
accuracy on the 359 held-out samples and the fine-tuning and wall times.
Target: the two accuracies within 1 point.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from _results import record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    from tests.helpers import train_on_digits
    from examples.models import small_cnn

    work = Path(tempfile.mkdtemp(prefix="datamix-ddp-"))
    acc = train_on_digits(small_cnn(), (1, 32, 32), epochs=8, out=work / "w.pt")
    print(f"small CNN: held-out accuracy {acc:.4f}", flush=True)
    bindir = Path(sys.executable).parent
    split = [str(bindir / "datamix"), "split", f"{ROOT / 'examples' / 'models.py'}:small_cnn", "--weights", str(work / "w.pt"),
             "--data", "digits", "--input-shape", "1,1,32,32", "--epochs", str(args.epochs), "--seed", "0", "--device", "cpu",
             "--formats", "onnx", "--cloud-formats", "torchscript", "--force", "--json"]
    runs = {
        "1 process": ([*split, "--out", str(work / "one")], {"OMP_NUM_THREADS": "2"}),
        "2 processes (torchrun, gloo)": ([str(bindir / "torchrun"), "--standalone", "--nproc-per-node", "2", *split, "--out", str(work / "two")],
                                         {"OMP_NUM_THREADS": "1"}),
    }
    results = {}
    for name, (command, env) in runs.items():
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
        if done.returncode:
            sys.exit(f"{name} failed: {done.stderr[-2000:]}")
        manifest = json.loads(done.stdout)
        results[name] = (manifest["accuracy"]["mixing_aware"], manifest["training"]["seconds"], time.perf_counter() - started)
        print(f"{name}: mixing-aware {results[name][0]:.4f}, fine-tuning {results[name][1]:.1f} s, wall {results[name][2]:.1f} s", flush=True)
    (a1, t1, w1), (a2, t2, w2) = results.values()
    record([(f"split under torchrun, 2 gloo processes vs 1 (digits, small CNN, k=4, {args.epochs} epochs, n=359)",
             f"mixing-aware {a2:.4f} vs {a1:.4f} (Δ {100 * (a2 - a1):+.2f} points); fine-tuning {t2:.1f} s vs {t1:.1f} s, wall {w2:.1f} s vs {w1:.1f} s",
             "accuracy within 1 point; times reported")])


if __name__ == "__main__":
    main()
