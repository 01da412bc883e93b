"""Images given as sub-images (``Family.pixel_layout == "tiles"``): Idefics3's and SmolVLM's
``pixel_values`` are (B, N, C, H, W), each sample's image split by the processor into a grid of
crops plus a downscaled copy of the whole image, padded with all-zero sub-images to the batch's
largest N. The vision tower sees only the real sub-images, (R, C, H, W) (R = the number of
sub-images with a nonzero value, in batch order), so its positional leaf (the learned table's
output) is (R, patches, D).

The stream reports the N sub-images of a sample side by side, a (C, H, N W) strip: the relevance
of each pixel value is gradient x input on the 5-D pixels, the per-patch relevance is row-major
over the strip's (H / P, N W / P) grid, and the positional sinks are laid on the same grid
(padding sub-images: 0). Which crop of the original image a sub-image is (the processor's
``rows`` x ``cols`` split) is the processor's business; the strip keeps the model's order.
"""
from __future__ import annotations

import torch

from ..explanation import Stream

__all__ = ["real_tiles", "positions", "image_stream"]


def real_tiles(pixels: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: the sub-images the model encodes (not all zero), as its forward decides."""
    return (pixels.detach() != 0).flatten(2).any(-1)


def _geometry(part):
    config = part.module.config
    patch = config.patch_size
    return int(patch if isinstance(patch, int) else patch[0])


def positions(part, pixels: torch.Tensor) -> int:
    """The positional leaf's positions: the patches of one sub-image."""
    patch = _geometry(part)
    return (pixels.shape[-2] // patch) * (pixels.shape[-1] // patch)


def image_stream(part, call: dict, channels: torch.Tensor, sinks, labels) -> Stream:
    """``channels`` (B, N, C, H, W) relevance of each pixel value, ``sinks`` (R, K, patches)
    per real sub-image or None -> the strip stream of the module docstring."""
    pixels = call["pixel_values"]
    batch, count, c, height, width = channels.shape
    patch = _geometry(part)
    gh, gw = height // patch, width // patch
    strip = channels.permute(0, 2, 3, 1, 4).reshape(batch, c, height, count * width)
    laid = None
    if sinks is not None:
        real = real_tiles(pixels)
        full = sinks.new_zeros(batch, count, sinks.shape[1], gh * gw)
        full[real] = sinks
        laid = full.reshape(batch, count, -1, gh, gw).permute(0, 2, 3, 1, 4).reshape(
            batch, -1, gh * count * gw)
    return Stream.image(channels=strip, sinks=laid, labels=labels, prefix=0,
                        grid=(gh, count * gw), patch_size=(patch, patch),
                        combination=part.family.combination, family=part.family.name)
