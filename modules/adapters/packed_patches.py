"""Images given as packed patch rows (``Family.pixel_layout == "patches"``): Qwen2-VL's and
Qwen2.5-VL's ``pixel_values`` are not (B, C, H, W) but one row per patch of every image of the
batch, ``(sum_i t_i h_i w_i, C * T * P * P)`` (``T`` frames of a ``P x P`` patch), with
``image_grid_thw`` (one ``(t, h, w)`` row per image) giving each image's grid of patches. The
image processor orders each image's rows block-major over the ``m x m`` spatial-merge blocks
(``m = spatial_merge_size``): ``(t, h/m, w/m, m, m)``, the order the vision tower's 2-D RoPE
position ids and its patch merger assume.

The relevance of each pixel value is gradient x input on the rows, as for any image stream;
here it is laid back on the image grid (each patch's ``P x P`` pixels at its row and column,
the ``T`` frames and ``t`` temporal patches of a still image summed), so the stream is an
ordinary image stream: (B, C, h P, w P) channels, per-patch relevance row-major over the
(h, w) grid, positional sinks per patch in the same order. One image per sample, all of one
grid (a batch of differently sized images is explained one sample at a time).
"""
from __future__ import annotations

import torch

from ..explanation import Stream

__all__ = ["checked_pixels", "rows_to_images", "tokens_to_grid", "positions", "image_stream",
           "layout"]


def layout(config) -> dict:
    """The vision config's patch geometry: channels, frames per patch, patch side, merge."""
    patch = config.patch_size
    return {"channels": int(getattr(config, "in_channels", getattr(config, "in_chans", 3))),
            "frames": int(config.temporal_patch_size),
            "patch": int(patch if isinstance(patch, int) else patch[0]),
            "merge": int(config.spatial_merge_size)}


def checked_pixels(pixels, call: dict, config, batch: int) -> torch.Tensor:
    """The packed rows, checked against ``image_grid_thw`` and the vision config (one line
    on a mismatch, before the forward)."""
    pixels = torch.as_tensor(pixels)
    if call.get("pixel_values_videos") is not None:
        raise ValueError("videos are not explained (their frames would be a stream of their "
                         "own): pass images only")
    grid = call.get("image_grid_thw")
    if grid is None:
        raise ValueError("packed patch rows (pixel_values) need image_grid_thw: pass what the "
                         "model's processor returns")
    grid = torch.as_tensor(grid)
    geo = layout(config)
    width = geo["channels"] * geo["frames"] * geo["patch"] ** 2
    if pixels.dim() != 2 or not pixels.is_floating_point() or pixels.shape[1] != width:
        raise ValueError(f"pixel_values must be float packed patch rows (patches, {width}) for "
                         f"this vision tower, got {tuple(pixels.shape)} {pixels.dtype}")
    if grid.dim() != 2 or grid.shape[1] != 3:
        raise ValueError(f"image_grid_thw must be (images, 3), got {tuple(grid.shape)}")
    if int(grid.prod(-1).sum()) != pixels.shape[0]:
        raise ValueError(f"image_grid_thw counts {int(grid.prod(-1).sum())} patches, "
                         f"pixel_values has {pixels.shape[0]} rows")
    if grid.shape[0] != batch:
        raise ValueError(f"{grid.shape[0]} images for {batch} samples: explain one image per "
                         "sample")
    if bool((grid != grid[:1]).any()):
        raise ValueError("the images of this batch have different grids "
                         f"{grid.tolist()}: explain them one sample at a time")
    return pixels


def rows_to_images(rows: torch.Tensor, grid_thw: torch.Tensor, config) -> torch.Tensor:
    """(patches, C T P P) rows -> (images, C, h P, w P): each patch's pixels placed at its
    row and column, frames and temporal patches summed (divide by ``t T`` for their mean)."""
    geo = layout(config)
    c, frames, p, m = geo["channels"], geo["frames"], geo["patch"], geo["merge"]
    out, start = [], 0
    for t, h, w in grid_thw.tolist():
        n = t * h * w
        x = rows[start:start + n].reshape(t, h // m, w // m, m, m, c, frames, p, p)
        x = x.sum(dim=(0, 6))                               # (h/m, w/m, m, m, C, P, P)
        x = x.permute(4, 0, 2, 5, 1, 3, 6).reshape(c, h * p, w * p)
        out.append(x)
        start += n
    return torch.stack(out)


def tokens_to_grid(values: torch.Tensor, grid_thw: torch.Tensor, config) -> torch.Tensor:
    """(..., patches) per packed patch -> (images, ..., h w) per patch row-major (temporal
    patches summed)."""
    m = layout(config)["merge"]
    out, start = [], 0
    for t, h, w in grid_thw.tolist():
        n = t * h * w
        x = values[..., start:start + n]
        lead = x.shape[:-1]
        x = x.reshape(*lead, t, h // m, w // m, m, m).sum(len(lead))
        x = x.movedim(len(lead) + 2, len(lead) + 1).reshape(*lead, h * w)
        out.append(x)
        start += n
    return torch.stack(out)


def positions(part, rows: torch.Tensor) -> int:
    """The positional leaves' positions: one per packed patch row."""
    return rows.shape[0]


def image_stream(part, call: dict, channels: torch.Tensor, sinks, labels) -> Stream:
    """The image stream of packed rows: ``channels`` (patches, C T P P) relevance of each
    pixel value, ``sinks`` (1, K, patches) positional relevance per packed patch or None."""
    config = part.module.config
    grid_thw = torch.as_tensor(call["image_grid_thw"])
    _, h, w = grid_thw[0].tolist()
    images = rows_to_images(channels, grid_thw, config)
    per_image = None if sinks is None else tokens_to_grid(sinks[0], grid_thw, config)
    p = layout(config)["patch"]
    return Stream.image(channels=images, sinks=per_image, labels=labels, prefix=0,
                        grid=(h, w), patch_size=(p, p), combination=part.family.combination,
                        family=part.family.name)
