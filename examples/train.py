"""Train an example model on a built-in dataset and save its state_dict.

    python examples/train.py --model resnet --data digits --out examples/checkpoints/resnet_digits.pt

Deterministic for a given --seed; a few epochs on two CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datamix_cli.data.datasets import load_dataset  # noqa: E402
from examples.models import EXAMPLES  # noqa: E402


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, batch: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    xs, ys = torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(y))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * -(-len(ys) // batch))
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(ys), generator=generator)
        total, correct = 0.0, 0
        for start in range(0, len(ys), batch):
            idx = order[start : start + batch]
            logits = model(xs[idx])
            loss = nn.functional.cross_entropy(logits, ys[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == ys[idx]).sum().item()
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(ys):.4f}, train accuracy {correct / len(ys):.3f}")
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((model(torch.from_numpy(np.asarray(x))).argmax(1).numpy() == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(EXAMPLES), default="resnet")
    parser.add_argument("--data", default="digits", help="digits, faces, x.npz or a folder of class sub-folders")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", type=float, default=0.2, help="share of the data held out for evaluation")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    factory, sample_shape = EXAMPLES[args.model]
    dataset = load_dataset(args.data, sample_shape)
    train_set, held_out = dataset.split(args.holdout, args.seed)
    model = factory(num_classes=len(dataset.classes), in_channels=sample_shape[0])
    started = time.perf_counter()
    train(model, train_set.x, train_set.y, args.epochs, args.lr, args.batch_size, args.seed)
    print(
        f"{args.model} on {args.data}: held-out accuracy {accuracy(model, held_out.x, held_out.y):.4f} "
        f"(n={len(held_out.y)}, seed {args.seed}), trained in {time.perf_counter() - started:.1f} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    torch.save(model.state_dict(), partial)
    partial.replace(args.out)
    print(f"saved state_dict to {args.out}")


if __name__ == "__main__":
    main()
