"""GPU check (issue 9): mixing-aware fine-tuning throughput against plain fine-tuning, and a
torchvision MobileNetV3-L split at 224² end to end.

    python benchmarks/bench_gpu.py [--out DIR] [--steps 30]

Needs CUDA and torchvision (nothing is downloaded: the models start from
random weights and learn a small task made here). Two parts:

1. **Throughput.** ``torchvision.models.NAME(num_classes=10)`` at 224², batch
   64 of in-memory host images moved to the GPU per step, Adam. *Plain*: the
   whole model, cross-entropy. *Mixing-aware*: ``datamix_cli.training.finetune.finetune``
   on the model cut at the 20 % FLOPs budget with k = 4 (head → mix →
   cloud → de-mix → tail, feature matching on: a frozen copy of the parts
   gives the targets each step), and without feature matching. Both read
   shuffled batches gathered from host memory. Images/s over the timed steps,
   after 5 warm-up steps, fp32 and bf16 autocast. Target: ratio ≥ 0.8.
2. **End to end.** MobileNetV3-L is trained for a few epochs on a folder of
   coloured digits (RGB PNGs, 256², written here) through ImageNet
   preprocessing, saved, then ``datamix split ... --preprocess imagenet
   --device cuda`` and ``datamix serve-local`` run on it; their wall times
   and the split's accuracy table are reported.
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
from _results import record  # noqa: E402


def throughput(name: str, steps: int, bf16: bool, batch: int = 64, k: int = 4, device: str = "cuda", size: int = 224) -> tuple[float, float, float]:
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision

    from datamix_cli.protocol.mixing import MixingConfig
    from datamix_cli.training.finetune import FinetuneConfig, finetune
    from partitioners.graph import trace_model
    from partitioners.partition import partition
    from partitioners.profile import profile_model
    from partitioners.select import choose_split

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    n = batch * (steps + 5)
    rng = np.random.default_rng(0)
    x = rng.random((n, 3, size, size), dtype=np.float32)
    y = rng.integers(0, 10, n)

    model = getattr(torchvision.models, name)(num_classes=10).to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    times = []
    order = rng.permutation(n)  # shuffled batches, gathered on the host: the same data path as fine-tuning's
    for step in range(steps + 5):
        sync()
        t0 = time.perf_counter()
        idx = order[step * batch : (step + 1) * batch]
        xb = torch.from_numpy(x[idx]).to(device, non_blocking=True)
        yb = torch.from_numpy(y[idx]).to(device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(xb).float(), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        times.append(time.perf_counter() - t0)
    plain = batch * steps / sum(times[5:])

    traced = trace_model(getattr(torchvision.models, name)(num_classes=10).eval())
    decision = choose_split(profile_model(traced, (1, 3, size, size)), 0.2, k)
    parts = partition(traced, decision.head_cut, decision.tail_cut)
    stamps = []

    def on_step(step, total, loss, acc):
        sync()
        stamps.append(time.perf_counter())

    rates = []
    for feature_match in (1.0, 0.0):  # the default, and without the frozen teacher's forward pass
        stamps.clear()
        config = FinetuneConfig(epochs=1, lr=1e-4, batch_size=batch, seed=0, device=device, bf16=bf16, workers=0, feature_match=feature_match)
        finetune(parts, x, y, MixingConfig(k=k), config, on_step)
        rates.append(batch * (len(stamps) - 5) / (stamps[-1] - stamps[4]))
    return plain, rates[0], rates[1]


def coloured_digits(root: Path, size: int = 256, limit: int | None = None) -> Path:
    """sklearn's digits as RGB PNGs: a random dark colour for the background, a bright one for the digit."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    big = F.interpolate(torch.from_numpy(digits.images[:limit, None] / 16.0), size=(size, size), mode="bilinear").numpy()[:, 0]
    for i, (image, label) in enumerate(zip(big[:limit], digits.target[:limit])):
        fg, bg = rng.uniform(0.6, 1.0, 3), rng.uniform(0.0, 0.3, 3)
        rgb = (image[..., None] * fg + (1 - image[..., None]) * bg) * 255
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb.round().astype(np.uint8), "RGB").save(folder / f"{i:04d}.png")
    return root


def train_mobilenet(folder: Path, weights: Path, epochs: int = 40, device: str = "cuda", target: float = 0.8) -> float:
    """Train MobileNetV3-L from scratch on the folder's fine-tuning part, with ImageNet preprocessing.

    Trains until the held-out accuracy reaches ``target`` (checked every 5 epochs) or ``epochs`` pass.
    BatchNorm statistics are recomputed over the training set before each check (torchvision's
    MobileNetV3 uses momentum 0.01, too slow for a few hundred steps).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision

    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.data.preprocessing import Preprocessing

    spec = Preprocessing.build((3, 224, 224), "imagenet")
    train, held = load_dataset(str(folder), (3, 224, 224), spec).split(0.2, 0)
    x, xh = np.asarray(train.x), np.asarray(held.x)
    torch.manual_seed(0)
    norm = torch.nn.Sequential(spec.normaliser((3, 224, 224)), torchvision.models.mobilenet_v3_large(num_classes=10)).to(device)
    opt = torch.optim.AdamW(norm.parameters(), 1e-3)
    acc = 0.0
    for epoch in range(epochs):
        norm.train()
        order = torch.randperm(len(x))
        for s in range(0, len(x) - 63, 64):
            idx = order[s : s + 64].numpy()
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = F.cross_entropy(norm(torch.from_numpy(x[idx]).to(device)).float(), torch.from_numpy(train.y[idx]).to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        if (epoch + 1) % 5 and epoch + 1 < epochs:
            continue
        with torch.no_grad():
            for m in norm.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.reset_running_stats()
                    m.momentum = None  # a cumulative average over the pass below
            for s in range(0, len(x), 128):
                norm(torch.from_numpy(x[s : s + 128]).to(device))
            norm.eval()
            pred = torch.cat([norm(torch.from_numpy(xh[s : s + 128]).to(device)).argmax(1).cpu() for s in range(0, len(xh), 128)])
        acc = float((pred.numpy() == held.y).mean())
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, held-out {acc:.3f}", flush=True)
        if acc >= target:
            break
    torch.save(norm[1].state_dict(), weights)
    return acc


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where to keep the split folder and logs")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", default="mobilenet_v3_large,resnet50", help="comma-separated; empty skips the throughput part")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a tiny run on the CPU that checks the script, records nothing")
    args = parser.parse_args()
    if args.smoke:
        return smoke()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs CUDA; nothing measured")
    gpu = torch.cuda.get_device_name(0)
    rows = []
    for name in filter(None, args.models.split(",")):
        for bf16 in (False, True):
            try:
                plain, mixed, no_teacher = throughput(name, args.steps, bf16)
            except Exception as exc:  # report and go on: one failure must not lose the other figures
                print(f"{name} bf16={bf16}: failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            label = f"{name} 224² batch 64 k=4 {'bf16' if bf16 else 'fp32'}"
            rows.append((f"GPU fine-tuning throughput, {label} ({gpu})",
                         f"mixing-aware {mixed:.0f} img/s vs plain {plain:.0f} img/s = {mixed / plain:.2f} "
                         f"(without feature matching {no_teacher:.0f} img/s = {no_teacher / plain:.2f})", "ratio >= 0.8"))
            print(rows[-1], flush=True)
    record(rows, device=gpu)
    rows = []
    if not args.skip_end_to_end:
        work = args.out or Path(tempfile.mkdtemp())
        work.mkdir(parents=True, exist_ok=True)
        folder = coloured_digits(work / "digits-rgb")
        t0 = time.perf_counter()
        acc = train_mobilenet(folder, work / "mnv3.pt")
        print(f"trained MobileNetV3-L: held-out {acc:.3f} in {time.perf_counter() - t0:.0f} s", flush=True)
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        cli = [sys.executable, "-m", "datamix_cli.main"]
        t0 = time.perf_counter()
        split = subprocess.run([*cli, "split", "torchvision.models:mobilenet_v3_large", "--model-kwargs", '{"num_classes": 10}',
                                "--weights", str(work / "mnv3.pt"), "--data", str(folder), "--input-shape", "1,3,224,224",
                                "--preprocess", "imagenet", "--device", "cuda", "--epochs", "3", "--batch-size", "64",
                                "--formats", "onnx", "--cloud-formats", "torchscript,pt2", "--out", str(work / "split"),
                                "--force", "--json"], env=env, capture_output=True, text=True)
        split_s = time.perf_counter() - t0
        if split.returncode:
            sys.exit(f"split failed: {split.stderr[-2000:]}")
        manifest = json.loads(split.stdout)
        t0 = time.perf_counter()
        local = subprocess.run([*cli, "serve-local", str(work / "split"), "--runtime", "onnx", "--samples", "128", "--json"],
                               env=env, capture_output=True, text=True)
        local_s = time.perf_counter() - t0
        if local.returncode:
            sys.exit(f"serve-local failed: {local.stderr[-2000:]}")
        report = json.loads(local.stdout)
        a = manifest["accuracy"]
        rows.append((f"torchvision MobileNetV3-L split end to end, 224², --preprocess imagenet --device cuda ({gpu})",
                     f"split {split_s:.0f} s (fine-tuning {manifest['training']['seconds']:.0f} s, 3 epochs, {len(manifest['artifacts'])} artifacts verified); "
                     f"accuracy original {a['original']:.3f} / mixing-aware {a['mixing_aware']:.3f}; serve-local onnx "
                     f"{'PASS' if report['passed'] else 'FAIL'} agreement {report['agreement']:.3f} in {local_s:.0f} s",
                     "works end to end, time reported"))
        print(rows[-1], flush=True)
    record(rows, device=gpu)


def smoke() -> None:
    """Every step of the script at toy size on the CPU (no figures recorded)."""
    work = Path(tempfile.mkdtemp())
    print(throughput("mobilenet_v3_large", 2, False, batch=8, device="cpu", size=64))
    folder = coloured_digits(work / "digits-rgb", size=72, limit=120)
    print("trained", train_mobilenet(folder, work / "mnv3.pt", epochs=1, device="cpu", target=0.0))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cli = [sys.executable, "-m", "datamix_cli.main"]
    split = subprocess.run([*cli, "split", "torchvision.models:mobilenet_v3_large", "--model-kwargs", '{"num_classes": 10}',
                            "--weights", str(work / "mnv3.pt"), "--data", str(folder), "--input-shape", "1,3,64,64",
                            "--preprocess", "imagenet", "--device", "cpu", "--epochs", "1", "--batch-size", "16", "--allow-low-accuracy",
                            "--formats", "onnx", "--cloud-formats", "torchscript,pt2", "--out", str(work / "split"), "--json"],
                           env=env, capture_output=True, text=True)
    print(split.returncode, split.stderr[-3000:])
    local = subprocess.run([*cli, "serve-local", str(work / "split"), "--runtime", "onnx", "--samples", "16", "--json"], env=env, capture_output=True, text=True)
    print(local.returncode, local.stdout[-1500:], local.stderr[-1500:])


if __name__ == "__main__":
    main()
