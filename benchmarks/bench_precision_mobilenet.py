"""fp16 and int8 edge parts of a torchvision MobileNetV3 split: top-1 agreement of the edge chain with PyTorch.

    make .tv-venv/.installed && .tv-venv/bin/python benchmarks/bench_precision_mobilenet.py [--epochs 8] [--work DIR]

Needs torchvision, so it runs in .tv-venv. ``mobilenet_v3_small`` (10 classes, random init: nothing is downloaded)
is trained on the digits (3x32x32, 80 % of them, seeded), its batch-norm statistics recomputed on that data, then
split per precision (`--edge-precision int8` and `fp16`, one seeded fine-tuning epoch, ONNX and TFLite, the default
FLOPs budget) with --allow-mismatch so a miss is recorded rather than refused. The figures are the manifest's
`agreement` (the reduced head, the fp32 cloud and the reduced tail against the PyTorch parts, same C).
Target (issue 19): agreement >= 99 %.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _results import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = "torchvision.models:mobilenet_v3_small"


def train(epochs: int, path: Path) -> float:
    import torch
    import torchvision

    from datamix_cli.data.datasets import load_dataset
    from examples.train import accuracy
    from examples.train import train as fit
    from tests.end_to_end.test_torchvision import recalibrate_batchnorm

    torch.manual_seed(0)
    train_set, held = load_dataset("digits", (3, 32, 32)).split(0.2, 0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10)
    fit(model, train_set.x, train_set.y, epochs, 3e-3, 64, 0)
    recalibrate_batchnorm(model, train_set.x)
    torch.save(model.state_dict(), path)
    return accuracy(model, held.x, held.y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("/tmp/datamix-precision-mobilenet"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    weights = args.work / "mobilenet_v3_small_digits.pt"
    accuracy = train(args.epochs, weights)
    print(f"mobilenet_v3_small on digits: held-out accuracy {accuracy:.4f}", flush=True)
    rows = []
    for precision in ("int8", "fp16"):
        out = args.work / f"split-{precision}"
        done = subprocess.run([str(Path(sys.executable).parent / "datamix"), "split", MODEL, "--model-kwargs", '{"num_classes": 10}', "--weights", str(weights),
                               "--data", "digits", "--input-shape", "1,3,32,32", "--epochs", "1", "--seed", "0", "--formats", "onnx,tflite",
                               "--edge-precision", precision, "--out", str(out), "--force", "--allow-mismatch", "--json"],
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"split --edge-precision {precision} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
        manifest = json.loads(done.stdout[done.stdout.index("{"):])
        for fmt in (f"onnx_{precision}", f"tflite_{precision}"):
            agreement = next(a["agreement"] for a in manifest["artifacts"] if a["format"] == fmt)
            rows.append((f"{fmt} edge chain, torchvision mobilenet_v3_small on digits (held-out accuracy {accuracy:.1%}), cut {manifest['split']['head_cut']}",
                         f"top-1 agreement {agreement['top1']:.1%} on {agreement['inputs']} held-out inputs, max logit error {agreement['max_logit_error']:.3g}",
                         "agreement >= 99 %"))
    record(rows)


if __name__ == "__main__":
    main()
