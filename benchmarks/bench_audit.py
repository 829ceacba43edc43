"""Hardening knobs and their price: sweep head depth, k, alpha, noise and shuffling on digits and faces.

    .venv/bin/python benchmarks/bench_audit.py [--datasets digits,faces] [--samples 64]

For each setting (one knob changed from the default at a time) the ResNet
example is split (mixing-aware fine-tuning with the default schedule, seeds 0)
and audited. Records edge FLOPs share, accuracy, and the audit's figures in
benchmarks/RESULTS.md, writes benchmarks/audit_sweep.json and plots the
privacy / accuracy / edge-cost trade-off to benchmarks/audit_tradeoff.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _results import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
SETTINGS = {
    "default (budget 0.2, k 4, alpha 1)": [],
    "deeper head (budget 0.4)": ["--budget", "0.4"],
    "k 2": ["--k", "2"],
    "k 8": ["--k", "8", "--kappa-max", "50"],
    "alpha 0.3": ["--alpha", "0.3", "--kappa-max", "50"],
    "alpha 3": ["--alpha", "3", "--kappa-max", "50"],
    "noise 0.5": ["--noise", "0.5"],
    "shuffle": ["--shuffle"],
}


def checkpoint(dataset: str) -> Path:
    path = ROOT / f"examples/checkpoints/resnet_{dataset}.pt"
    if not path.exists():
        epochs = "8" if dataset == "digits" else "30"
        subprocess.run([sys.executable, "examples/train.py", "--model", "resnet", "--data", dataset, "--epochs", epochs, "--out", str(path)], cwd=ROOT, check=True)
    return path


def run(dataset: str, name: str, extra: list[str], samples: int, tmp: Path) -> dict:
    datamix = str(Path(sys.executable).parent / "datamix")
    out = tmp / f"{dataset}-{len(name)}-{abs(hash(name))}"
    classes = {"digits": 10, "faces": 2}[dataset]
    split = [datamix, "split", "examples/models.py:resnet", "--weights", str(checkpoint(dataset)), "--model-kwargs", json.dumps({"num_classes": classes}),
             "--data", dataset, "--input-shape", "1,1,32,32", "--seed", "0", "--out", str(out), "--force", "--json", *extra]
    manifest = json.loads(subprocess.run(split, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    audit = [datamix, "audit", str(out), "--samples", str(samples), "--json"]
    report = json.loads(subprocess.run(audit, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    return {
        "dataset": dataset,
        "setting": name,
        "edge_fraction": manifest["flops"]["edge_fraction"],
        "accuracy_original": manifest["accuracy"]["original"],
        "accuracy_mixing_aware": manifest["accuracy"]["mixing_aware"],
        "n_eval": manifest["accuracy"]["n"],
        "amari": (report["separation"]["amari_index"] or {}).get("mean"),
        "ica_corr": report["separation"]["matched_abs_corr"]["mean"],
        "single_mixture_corr": report["separation"]["single_mixture_abs_corr"]["mean"],
        "ssim_baseline": report["inversion"]["unmixed_baseline"]["ssim"]["mean"],
        "ssim_mixtures": report["inversion"]["mixtures"]["ssim"]["mean"],
        "ssim_ica": report["inversion"]["separated"]["ssim"]["mean"],
        "psnr_mixtures": report["inversion"]["mixtures"]["psnr_db"]["mean"],
        "label_chance": report["label"]["chance"],
        "label_baseline": report["label"]["unmixed_baseline"],
        "label_mixtures": report["label"]["mixtures"],
        "label_ica": report["label"]["separated"],
        "verdict": report["verdict"]["status"],
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for r in (r for r in rows if r["dataset"] == dataset):
            leak = max(r["ssim_mixtures"], r["ssim_ica"])
            ax.scatter(leak, 100 * r["accuracy_mixing_aware"], s=40 + 600 * r["edge_fraction"], alpha=0.6)
            ax.annotate(r["setting"].split(" (")[0], (leak, 100 * r["accuracy_mixing_aware"]), fontsize=7)
        ax.axvline(0.3, color="red", linestyle="--", linewidth=1, label="recognisable (SSIM 0.3)")
        ax.axvline(0.25, color="green", linestyle=":", linewidth=1, label="resists below 0.25")
        ax.set_xlabel("best attack mean SSIM (mixtures or ICA), lower = more private")
        ax.set_ylabel("mixing-aware accuracy %")
        ax.set_title(f"{dataset}: privacy / accuracy; marker size = edge FLOPs share")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="digits,faces")
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets.split(","):
            for name, extra in SETTINGS.items():
                rows.append(run(dataset, name, extra, args.samples, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    (HERE / "audit_sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, HERE / "audit_tradeoff.png")
    record(
        [
            (
                f"audit sweep {r['dataset']}: {r['setting']}",
                f"edge {r['edge_fraction']:.3f}; acc {r['accuracy_mixing_aware']:.3f} (orig {r['accuracy_original']:.3f}, n={r['n_eval']}); "
                f"Amari {r['amari'] if r['amari'] is None else round(r['amari'], 3)}; ICA abs-corr {r['ica_corr']:.2f} vs single mixture {r['single_mixture_corr']:.2f}; "
                f"SSIM baseline/mixtures/ICA {r['ssim_baseline']:.2f}/{r['ssim_mixtures']:.2f}/{r['ssim_ica']:.2f}; "
                f"label chance/baseline/mixtures/ICA {r['label_chance']:.2f}/{r['label_baseline']:.2f}/{r['label_mixtures']:.2f}/{r['label_ica']:.2f}; verdict {r['verdict']}",
                "trade-off (issue 5)",
            )
            for r in rows
        ]
    )


if __name__ == "__main__":
    main()
