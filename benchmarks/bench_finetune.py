"""Does the default split land within 1 point of the original, every time? 3 unseeded `datamix split` runs
(no --seed: C, batch order and the validation split's C stream from OS entropy) per model, default options.

    .venv/bin/python benchmarks/bench_finetune.py [--runs 3] [--models resnet,mobilenet_v2] [--formats onnx] [--extra "--validation 0"]

``--extra`` passes options to every `datamix split` (``--validation 0``: the last epoch ships, as in datamix 0.1, the
baseline to set the default against in the same session).

Target (issue 18, scope 0): every run loses <= 1 point of held-out accuracy against the original model; the spread
(min / mean / max of the loss), the epoch that shipped and why are reported. The checkpoints are trained by
examples/train.py (seed 0) when missing; the ResNet one ships with the repository. Export is limited to ONNX by
default to keep the runs short (the fine-tuning, what this measures, is the same).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def checkpoint(model: str) -> Path:
    path = ROOT / "examples" / "checkpoints" / f"{model}_digits.pt"
    if not path.exists():
        subprocess.run([sys.executable, "examples/train.py", "--model", model, "--data", "digits", "--out", str(path)], cwd=ROOT, check=True)
    return path


def split_once(model: str, weights: Path, out: Path, formats: str, extra: list[str]) -> dict:
    cmd = [str(BIN / "datamix"), "split", f"examples/models.py:{model}", "--weights", str(weights), "--data", "digits",
           "--input-shape", "1,1,32,32", "--formats", formats, "--out", str(out), "--json", *extra]
    manifest = json.loads(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    acc, training = manifest["accuracy"], manifest["training"]
    return {"original": acc["original"], "mixing_aware": acc["mixing_aware"], "loss": 100 * (acc["original"] - acc["mixing_aware"]),
            "shipped": training["shipped_epoch"], "epochs_run": len(training["history"]), "seconds": training["seconds"], "n": acc["n"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="resnet,mobilenet_v2")
    parser.add_argument("--formats", default="onnx")
    parser.add_argument("--extra", default="", help="more `datamix split` options, e.g. '--validation 0'")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            weights = checkpoint(model)
            runs = [split_once(model, weights, Path(tmp) / f"{model}-{i}", args.formats, args.extra.split()) for i in range(args.runs)]
            for r in runs:
                print(json.dumps({"model": model, **r}))
            losses = [r["loss"] for r in runs]
            shipped = ", ".join(f"{r['shipped']}/{r['epochs_run']}" for r in runs)
            accuracies = ", ".join(f"{r['mixing_aware']:.4f}" for r in runs)
            seconds = ", ".join(f"{r['seconds']:.0f}" for r in runs)
            figure = (f"loss vs original min {min(losses):.2f} / mean {statistics.mean(losses):.2f} / max {max(losses):.2f} points "
                      f"(original {runs[0]['original']:.4f}, mixing-aware {accuracies}; "
                      f"epoch shipped / epochs run {shipped}; fine-tuning {seconds} s; "
                      f"n={runs[0]['n']} held out, unseeded, --epochs 12 --validation 0.1 --patience 3 unless {args.extra or 'changed'})")
            setting = f"split {args.extra}" if args.extra else "default split"
            rows.append((f"{setting} of {model} on digits, {args.runs} unseeded runs", figure, "every run ≤ 1 point"))
    record(rows)


if __name__ == "__main__":
    main()
