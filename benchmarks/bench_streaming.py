"""Streaming: peak memory of ``datamix split`` on an image folder of 20,000 images against 2,000.

    .venv/bin/python benchmarks/bench_streaming.py [--large 20000] [--small 2000]

Writes two folders of 32×32 RGB PNGs (scikit-learn's digits, each copy in
fresh random colours), trains the small CNN on 1,000 of them, then runs
``datamix split`` on each folder in its own process (1 epoch, ONNX edge,
TorchScript cloud, ``--workers 0`` so one process holds everything) and
reads that process's peak RSS (``ru_maxrss``). Target: large ≤ 1.5 × small.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _results import record  # noqa: E402


def make_folder(root: Path, n: int, size: int = 32) -> Path:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    big = F.interpolate(torch.from_numpy(digits.images[:, None] / 16.0), size=(size, size), mode="bilinear").numpy()[:, 0]
    rng = np.random.default_rng(n)
    for i in range(n):
        j = i % len(big)
        fg, bg = rng.uniform(0.6, 1.0, 3), rng.uniform(0.0, 0.3, 3)
        rgb = (big[j][..., None] * fg + (1 - big[j][..., None]) * bg) * 255
        folder = root / str(digits.target[j])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb.round().astype(np.uint8), "RGB").save(folder / f"{i:06d}.png")
    return root


def train_weights(folder: Path, out: Path) -> float:
    import numpy as np
    import torch

    from datamix_cli.data.datasets import load_dataset
    from examples.models import small_cnn
    from examples.train import accuracy, train

    torch.manual_seed(0)
    train_set, held = load_dataset(str(folder), (3, 32, 32)).split(0.2, 0)
    model = small_cnn(num_classes=10, in_channels=3)
    train(model, np.asarray(train_set.x[:1000]), train_set.y[:1000], epochs=8, lr=3e-3, batch=64, seed=0)
    torch.save(model.state_dict(), out)
    return accuracy(model, np.asarray(held.x[:400]), held.y[:400])


def peak_rss_of_split(folder: Path, weights: Path, out: Path) -> tuple[float, float, dict]:
    """(peak RSS in MiB, seconds, manifest) of one ``datamix split`` in a fresh child process."""
    script = (
        "import resource, subprocess, sys, json;"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "print(json.dumps({'rc': r.returncode, 'err': r.stderr[-2000:], 'out': r.stdout,"
        " 'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
    )
    command = [
        sys.executable, "-m", "datamix_cli.main", "split", f"{ROOT / 'examples' / 'models.py'}:small_cnn", "--weights", str(weights),
        "--model-kwargs", '{"num_classes": 10, "in_channels": 3}', "--data", str(folder), "--input-shape", "1,3,32,32",
        "--epochs", "1", "--workers", "0", "--formats", "onnx", "--cloud-formats", "torchscript", "--seed", "0",
        "--out", str(out), "--force", "--json",
    ]
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = json.loads(subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, env=env, check=True).stdout)
    if result["rc"]:
        sys.exit(f"split failed on {folder}: {result['err']}")
    return result["maxrss_kib"] / 1024, time.perf_counter() - started, json.loads(result["out"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=20000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="datamix-streaming-"))
    small, large = make_folder(work / "small", args.small), make_folder(work / "large", args.large)
    acc = train_weights(small, work / "w.pt")
    print(f"small CNN trained on 1,000 images: held-out accuracy {acc:.3f}", flush=True)
    figures = {}
    for name, folder in (("small", small), ("large", large)):
        rss, seconds, manifest = peak_rss_of_split(folder, work / "w.pt", work / f"split-{name}")
        figures[name] = rss
        a = manifest["accuracy"]
        print(f"{name}: {len(list(folder.rglob('*.png')))} images, peak RSS {rss:.0f} MiB, {seconds:.0f} s, "
              f"accuracy original {a['original']:.3f} mixing-aware {a['mixing_aware']:.3f}", flush=True)
    ratio = figures["large"] / figures["small"]
    record([(f"split peak RSS, image folder {args.large} vs {args.small} images (32×32 RGB, --workers 0)",
             f"{figures['large']:.0f} MiB vs {figures['small']:.0f} MiB = {ratio:.2f}×", "<= 1.5×")])


if __name__ == "__main__":
    main()
