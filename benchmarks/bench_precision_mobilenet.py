"""fp16 and int8 edge parts of a torchvision MobileNetV3 split: top-1 agreement of the edge chain with PyTorch, and
the chains' held-out accuracy, with post-training quantization and with quantization-aware epochs.

    make .tv-venv/.installed && .tv-venv/bin/python benchmarks/bench_precision_mobilenet.py [--epochs 8] [--split-epochs 12]
        [--qat-epochs 2] [--work DIR]

Needs torchvision, so it runs in .tv-venv. ``mobilenet_v3_small`` (10 classes, random init: nothing is downloaded)
is trained on the digits (3x32x32, 80 % of them, seeded), its batch-norm statistics recomputed on that data (reused
from DIR when there), then split three ways: `--edge-precision int8` (post-training quantization), int8 with
`--qat-epochs N` more epochs, and fp16; each with --split-epochs seeded mixing-aware epochs, ONNX and TFLite, the
default FLOPs budget, and --allow-mismatch so a miss is recorded rather than refused. The figures are the manifest's
`agreement` (the reduced head, the fp32 cloud and the reduced tail against the PyTorch parts, same C) and its
`accuracy` / `reference_accuracy` on the held-out labels. Target (issue 19): agreement >= 99 %.
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
    """The trained model's held-out accuracy; trained and saved to ``path`` unless an earlier run left it there."""
    import torch
    import torchvision

    from datamix_cli.data.datasets import load_dataset
    from examples.train import accuracy
    from examples.train import train as fit
    from tests.end_to_end.test_torchvision import recalibrate_batchnorm

    torch.manual_seed(0)
    train_set, held = load_dataset("digits", (3, 32, 32)).split(0.2, 0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10)
    if path.exists():
        model.load_state_dict(torch.load(path))
    else:
        fit(model, train_set.x, train_set.y, epochs, 3e-3, 64, 0)
        recalibrate_batchnorm(model, train_set.x)
        torch.save(model.state_dict(), path)
    return accuracy(model, held.x, held.y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="training epochs of the model itself")
    parser.add_argument("--split-epochs", type=int, default=12, help="mixing-aware fine-tuning epochs of each split")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/datamix-precision-mobilenet"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    weights = args.work / "mobilenet_v3_small_digits.pt"
    accuracy = train(args.epochs, weights)
    print(f"mobilenet_v3_small on digits: held-out accuracy {accuracy:.4f}", flush=True)
    rows = []
    for precision, qat in (("int8", 0), ("int8", args.qat_epochs), ("fp16", 0)):
        out = args.work / f"split-{precision}-qat{qat}"
        done = subprocess.run([str(Path(sys.executable).parent / "datamix"), "split", MODEL, "--model-kwargs", '{"num_classes": 10}', "--weights", str(weights),
                               "--data", "digits", "--input-shape", "1,3,32,32", "--epochs", str(args.split_epochs), "--seed", "0", "--formats", "onnx,tflite",
                               "--cloud-formats", "torchscript", "--edge-precision", precision, "--qat-epochs", str(qat), "--out", str(out), "--force",
                               "--allow-mismatch", "--json"], cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"split --edge-precision {precision} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
        manifest = json.loads(done.stdout[done.stdout.index("{"):])
        how = f"{args.split_epochs} mixing-aware epochs" + (f" + {qat} quantization-aware" if qat else "")
        for fmt in (f"onnx_{precision}", f"tflite_{precision}"):
            a = next(a["agreement"] for a in manifest["artifacts"] if a["format"] == fmt)
            line = f"{fmt}: agreement {a['top1']:.1%} on {a['inputs']}, accuracy {a['accuracy']:.1%} (PyTorch parts {a['reference_accuracy']:.1%}), max logit error {a['max_logit_error']:.3g}"
            print(f"{how}: {line}", flush=True)
            rows.append((f"{fmt} edge chain, torchvision mobilenet_v3_small on digits (held-out accuracy {accuracy:.1%}), cut {manifest['split']['head_cut']}, {how}",
                         line, "agreement >= 99 %"))
    record(rows)


if __name__ == "__main__":
    main()
