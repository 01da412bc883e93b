"""Heatmap figures for vision explanations (the paper's Figure 1 layout).

Matplotlib is imported lazily, with the non-interactive Agg backend, so headless runs work.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metrics.segmentation import minmax_normalize

__all__ = ["imagenet_class_names", "class_name", "pyplot", "save_map_grid"]


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, as shipped inside torchvision (no download)."""
    from torchvision.models import ResNet50_Weights
    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def class_name(model, index: int) -> str:
    """A readable name for class ``index`` of a DeiT: its config's names, ImageNet names for a
    1000-class head, else ``class <index>``."""
    names = getattr(model.cfg, "class_names", None)
    if names and index < len(names):
        return str(names[index])
    if model.num_classes == 1000:
        return imagenet_class_names()[index]
    return f"class {index}"


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (headless runs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_map_grid(path, images01: torch.Tensor, columns: dict[str, torch.Tensor],
                  row_titles: list[str] | None = None, extra: dict[str, torch.Tensor] | None = None,
                  alpha: float = 0.55) -> Path:
    """Write a PNG with one row per image: the image, then each (B, H, W) map of ``columns``
    as a min-max normalised heatmap over a grey copy of the image, then the ``extra`` columns
    (e.g. a ground-truth mask) shown as they are."""
    plt = pyplot()
    images = images01.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
    rows = images.shape[0]
    extra = extra or {}
    titles = ["image", *columns, *extra]
    fig, axes = plt.subplots(rows, len(titles), figsize=(2.3 * len(titles), 2.4 * rows),
                             squeeze=False)
    normalised = {k: minmax_normalize(v.detach().float().cpu()).numpy() for k, v in columns.items()}
    for r in range(rows):
        grey = images[r].mean(-1)
        axes[r, 0].imshow(images[r])
        if row_titles:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=8)
        for c, name in enumerate(columns, start=1):
            axes[r, c].imshow(grey, cmap="gray")
            axes[r, c].imshow(normalised[name][r], cmap="jet", alpha=alpha, vmin=0, vmax=1)
        for c, name in enumerate(extra, start=1 + len(columns)):
            axes[r, c].imshow(np.asarray(extra[name][r].detach().cpu().float()), cmap="gray")
        for c, title in enumerate(titles):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
