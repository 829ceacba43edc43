"""The audit's picture: original | what the cloud receives | separated feature | best reconstruction."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datamix_cli.privacy.scene import Scene


def _show(array: np.ndarray) -> np.ndarray:
    """A 2-D picture of a sample or a feature map (first channel), scaled to [0, 1]."""
    image = array[0] if array.ndim == 3 else array.reshape(1, -1) if array.ndim == 1 else array
    if image.ndim == 1:
        image = image[None]
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo + 1e-12)


def plot_grid(scene: Scene, separated, reconstructions: dict, path: Path, rows: int = 6) -> None:
    """original | what the cloud receives | separated feature | best reconstruction, for a few samples."""
    from datamix_cli.errors import require
    from datamix_cli.artifacts.staging import save_figure

    require("matplotlib", "plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datamix_cli.privacy.metrics import image_metrics

    rows = min(rows, len(scene.x))
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2 * rows), squeeze=False)
    titles = ("original", "cloud receives (mixture)", "separated feature", "best reconstruction")
    k = scene.k
    for i in range(rows):
        cells = [scene.x[i], scene.mixtures[scene.sent_order[i]], separated[i] if separated is not None else None]
        # Sample i's own reconstruction by the views paired with samples, or that of any mixture of its group.
        candidates = [reconstructions[view][i] for view in ("separated", "group", "optimisation") if reconstructions.get(view) is not None]
        for view in ("mixtures", "adaptive"):
            if view in reconstructions:
                candidates += list(reconstructions[view][(i // k) * k : (i // k + 1) * k])
        best = max(candidates, key=lambda rec: image_metrics(rec, scene.x[i])[0], default=None)
        cells.append(best)
        for j, cell in enumerate(cells):
            ax = axes[i][j]
            ax.axis("off")
            if cell is not None:
                ax.imshow(_show(cell), cmap="gray", vmin=0, vmax=1, aspect="auto" if cell.ndim < 3 else "equal")
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
