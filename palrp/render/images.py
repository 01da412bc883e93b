"""Heatmap figures for vision explanations (the paper's Figure 1 layout), with colour bars.

Two kinds of map, told apart by their values:

- a map with no negative value (PA-LRP, AttnLRP and PE-only clamped at 0, rollout, attention
  maps) is min-max normalised per image, as the segmentation benchmark normalises maps before
  thresholding (``palrp.metrics.segmentation.minmax_normalize``), and drawn with JET on [0, 1];
- a signed map (gradient x input, integrated gradients, unclamped pixel relevance) is divided
  by its per-image max |value| and drawn with a diverging colormap centred at 0 (red positive,
  blue negative, white 0) on [-1, 1], so that "no relevance" stays uncoloured.

Each heatmap column gets a colour bar saying which scale it uses. Matplotlib is imported
lazily, with the non-interactive Agg backend, so headless runs work.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from palrp.metrics.segmentation import minmax_normalize
from palrp.modules.targets import index_from_spec

__all__ = ["imagenet_class_names", "class_names", "class_name", "class_index", "pyplot",
           "is_signed", "display_style", "scaled_for_display", "save_map_grid"]

#: Colormaps: min-max normalised non-negative maps, and signed maps centred at 0.
SEQUENTIAL_CMAP = "jet"
DIVERGING_CMAP = "RdBu_r"


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, as shipped inside torchvision (no download)."""
    from torchvision.models import ResNet50_Weights
    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def class_names(model) -> list[str] | None:
    """The class names of a model: those it carries (``pretrained_cfg["label_names"]``, set from
    a checkpoint's ``class_names``; :func:`palrp.loaders.vision_model.class_names`), the ImageNet names
    for a 1000-class head, else None."""
    from palrp.loaders.vision_model import class_names as carried
    names = carried(model)
    if names:
        return [str(n) for n in names]
    if getattr(model, "num_classes", None) == 1000:
        return imagenet_class_names()
    return None


def class_name(model, index: int) -> str:
    """A readable name for class ``index``: from :func:`class_names`, else ``class <index>``."""
    names = class_names(model)
    if names and 0 <= index < len(names):
        return names[index]
    return f"class {index}"


def class_index(model, spec: str | int) -> int:
    """A class given as an index (``"3"``) or a name (case-insensitive, e.g. ``"tabby"``) ->
    its index, by :func:`palrp.modules.targets.index_from_spec` over :func:`class_names`.
    Raises ValueError naming the problem (unknown or ambiguous name, index out of range)."""
    return index_from_spec(spec, int(model.num_classes), class_names(model), "classes")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (headless runs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def is_signed(maps: torch.Tensor) -> bool:
    """True if any value of ``maps`` is negative: the map is drawn centred at 0."""
    return bool((maps < 0).any())


def display_style(signed: bool) -> dict:
    """How a column is drawn: colormap, value range, ticks and the colour bar's label."""
    if signed:
        return {"cmap": DIVERGING_CMAP, "vmin": -1.0, "vmax": 1.0,
                "ticks": [-1, -0.5, 0, 0.5, 1], "label": "signed: relevance / max |relevance|"}
    return {"cmap": SEQUENTIAL_CMAP, "vmin": 0.0, "vmax": 1.0,
            "ticks": [0, 0.25, 0.5, 0.75, 1], "label": "min-max normalised"}


def scaled_for_display(maps: torch.Tensor) -> tuple[np.ndarray, bool]:
    """(B, H, W) maps -> (values, signed): a signed map divided by its per-image max |value|
    (in [-1, 1], 0 stays 0), else the per-image min-max normalisation (in [0, 1]). A map that
    is all zero gives zeros, never NaN."""
    maps = maps.detach().float().cpu()
    if not is_signed(maps):
        return minmax_normalize(maps).numpy(), False
    peak = maps.abs().flatten(1).max(dim=1).values.view(-1, 1, 1)
    return (maps / torch.where(peak > 0, peak, torch.ones_like(peak))).numpy(), True


def save_map_grid(path, images01: torch.Tensor, columns: dict[str, torch.Tensor],
                  row_titles: list[str] | None = None, extra: dict[str, torch.Tensor] | None = None,
                  alpha: float = 0.55, title: str | None = None, panel_inches: float = 2.3,
                  dpi: int = 110) -> Path:
    """Write a PNG with one row per image: the image, then each (B, H, W) map of ``columns``
    over a grey copy of the image (scaled as the module docstring says, with a colour bar under
    each column), then the ``extra`` columns (e.g. a ground-truth mask) shown as they are.
    ``title``: a heading over the figure; ``panel_inches``: the side of one panel."""
    plt = pyplot()
    images = images01.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
    rows = images.shape[0]
    extra = extra or {}
    titles = ["image", *columns, *extra]
    font = max(8.0, 3.6 * panel_inches)
    line = font / 72                        # one line of text, in inches
    bar_height = 0.9 * line                 # the colour-bar row
    height = (rows * (panel_inches + 1.6 * line) + bar_height + 3.2 * line
              + (2.0 * line if title else 0))
    fig, grid = plt.subplots(rows + 1, len(titles), squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": [panel_inches] * rows + [bar_height]},
                             figsize=((panel_inches + 0.15) * len(titles), height))
    axes, bars = grid[:rows], grid[rows]
    scaled = {name: scaled_for_display(maps) for name, maps in columns.items()}
    for r in range(rows):
        grey = images[r].mean(-1)
        axes[r, 0].imshow(images[r])
        if row_titles:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=font)
        for c, name in enumerate(columns, start=1):
            values, signed = scaled[name]
            style = display_style(signed)
            axes[r, c].imshow(grey, cmap="gray")
            axes[r, c].imshow(values[r], alpha=alpha, cmap=style["cmap"], vmin=style["vmin"],
                              vmax=style["vmax"])
        for c, name in enumerate(extra, start=1 + len(columns)):
            shown = np.asarray(extra[name][r].detach().cpu().float())
            unit = shown.size and 0 <= shown.min() and shown.max() <= 1   # a mask: 0 black, 1 white
            axes[r, c].imshow(shown, cmap="gray", **({"vmin": 0, "vmax": 1} if unit else {}))
        for c, heading in enumerate(titles):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(heading, fontsize=font)
    map_columns = dict(enumerate(columns, start=1))
    for c, bar_ax in enumerate(bars):
        if c not in map_columns:
            bar_ax.set_axis_off()
            continue
        style = display_style(scaled[map_columns[c]][1])
        mappable = plt.cm.ScalarMappable(
            cmap=style["cmap"], norm=plt.Normalize(vmin=style["vmin"], vmax=style["vmax"]))
        bar = fig.colorbar(mappable, cax=bar_ax, orientation="horizontal", ticks=style["ticks"])
        bar.set_label(style["label"], fontsize=font * 0.8)
        bar.ax.tick_params(labelsize=font * 0.7)
    if title:
        fig.suptitle(title, fontsize=font * 1.15)
    path = Path(path)
    from palrp.runtime.store import atomic_output
    with atomic_output(path, suffix=path.suffix or ".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return path
