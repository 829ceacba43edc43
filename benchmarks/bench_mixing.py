"""Mixing distributions on the test suite's small CNN: Dirichlet rows against Haar-orthogonal C.

    .venv/bin/python benchmarks/bench_mixing.py

Trains the small CNN on the fine-tuning part of digits (8 epochs, seed 0, as
tests/conftest.py does), then splits it (budget 0.2, post-ReLU cut, 32x32,
seeds 0) with: Dirichlet k = 4 and 4 epochs (the test fixture), orthogonal
k = 4 and 4 epochs, orthogonal k = 16 and 12 epochs. Reports the accuracy
table of each; figures quoted in the README and the tests' docstrings.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _results import record  # noqa: E402


def main() -> None:
    import torch

    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.model.loading import ModelSource
    from datamix_cli.protocol.mixing import MixingConfig
    from datamix_cli.pipeline.export import ExportConfig
    from datamix_cli.pipeline.split import SplitConfig, run_split
    from datamix_cli.training.finetune import FinetuneConfig
    from examples.models import small_cnn
    from examples.train import train

    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_set, _ = load_dataset("digits", (1, 32, 32)).split(0.2, 0)
        model = small_cnn()
        train(model, train_set.x, train_set.y, epochs=8, lr=3e-3, batch=64, seed=0)
        torch.save(model.state_dict(), tmp / "w.pt")
        source = ModelSource(str(ROOT / "examples/models.py") + ":small_cnn", weights=tmp / "w.pt")
        for name, mixing, epochs in (
            ("dirichlet k=4", MixingConfig(k=4), 4),
            ("orthogonal k=4", MixingConfig(k=4, distribution="orthogonal"), 4),
            ("orthogonal k=16", MixingConfig(k=16, distribution="orthogonal"), 12),
        ):
            result = run_split(SplitConfig(source=source, data="digits", out=tmp / name.replace(" ", "-"), input_shape=(1, 1, 32, 32),
                                           export=ExportConfig(formats=("onnx",)), mixing=mixing, training=FinetuneConfig(epochs=epochs, seed=0)))
            a = result.manifest.accuracy
            rows.append((
                f"mixing {name}, {epochs} epochs: accuracy original / no mixing / naive / mixing-aware",
                f"{a['original']:.4f} / {a['split_without_mixing']:.4f} / {a['naive_mixing']:.4f} / {a['mixing_aware']:.4f} "
                f"(small CNN, digits 32x32, head cut {result.manifest.split['head_cut']}, n={a['n']}, seeds 0)",
                "report",
            ))
    record(rows)


if __name__ == "__main__":
    main()
