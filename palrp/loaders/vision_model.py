"""Geometry and preprocessing of a timm vision transformer, read from the model itself.

Every value here comes from the model object (its ``patch_embed``, its prefix tokens, its
``pretrained_cfg``), never from constants: a DINOv2 at 518 px with patch 14 and four register
tokens, a CLIP ViT with CLIP's mean/std or a DeiT at 224 px all answer for themselves. The
helpers accept timm's ``VisionTransformer`` (and ``VisionTransformerDistilled``), timm's ``Eva``
and any model with the same attribute names (``patch_embed.proj``, ``cls_token``,
``num_prefix_tokens``). See docs/vision_families.md for the families.

- :func:`patch_size`, :func:`grid_size` (aware of ``dynamic_img_size``), :func:`image_size`,
  :func:`num_prefix_tokens` (class, distillation and register tokens), :func:`has_class_token`:
  the timm adapter's own readers (``palrp.modules.adapters.timm``), used here and by the
  baselines;
- :func:`data_config` (timm's ``resolve_model_data_config`` with the input size the model was
  built at), :func:`normalize` ([0, 1] pixels -> the model's input);
- :func:`eval_transform` (:class:`EvalTransform`) / :func:`load_image`: a photo (and, if given,
  its mask) -> [0, 1] pixels at the model's input size, as timm's eval transform computes it
  (in timm's default ``center`` mode the short side is resized to ``size / crop_pct`` with the
  config's interpolation and the centre cropped, keeping the aspect ratio).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

# the geometry is the engine's (the timm adapter is the one place that knows timm's internals)
from palrp.modules.adapters.timm import (dynamic_image_size, grid_size, has_class_token,
                                         image_size, num_prefix_tokens, pair, patch_embed_of,
                                         patch_size)

__all__ = ["patch_size", "image_size", "grid_size", "num_prefix_tokens", "has_class_token",
           "dynamic_image_size", "data_config", "normalize", "EvalTransform", "eval_transform",
           "load_image", "class_names", "pair"]


def data_config(model) -> dict:
    """timm's ``resolve_model_data_config`` for the model: ``input_size`` (C, H, W),
    ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``.

    The input size is the one the model was built at (``timm.create_model(..., img_size=64)``
    keeps the 224 of its pretrained config otherwise); mean/std come from the model's
    ``pretrained_cfg`` (e.g. CLIP's for a CLIP ViT, or what :func:`palrp.modules.load_deit` read from
    the checkpoint).
    """
    from timm.data import resolve_model_data_config
    resolved = dict(resolve_model_data_config(model))
    try:
        height, width = image_size(model)
    except ValueError:
        pass
    else:
        channels = int(patch_embed_of(model).proj.in_channels)
        resolved["input_size"] = (channels, height, width)
    resolved["mean"] = tuple(float(v) for v in resolved["mean"])
    resolved["std"] = tuple(float(v) for v in resolved["std"])
    return resolved


def normalize(model, images01: torch.Tensor) -> torch.Tensor:
    """[0, 1] (B, C, H, W) pixels -> the model's normalised input, ``(x - mean) / std`` with the
    mean/std of :func:`data_config`."""
    cfg = data_config(model)
    mean = torch.tensor(cfg["mean"], device=images01.device, dtype=images01.dtype)
    std = torch.tensor(cfg["std"], device=images01.device, dtype=images01.dtype)
    if mean.numel() != images01.shape[1]:
        raise ValueError(f"images have {images01.shape[1]} channels but the model's mean/std "
                         f"have {mean.numel()}; pass {mean.numel()}-channel images")
    return (images01 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


_PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5,
                 "lanczos": 1}
_CROP_MODES = ("center", "squash", "border")


class EvalTransform:
    """timm's eval transform of one model as a picklable callable (so DataLoader workers can
    take it): ``transform(image)`` -> (C, H, W) float pixels in [0, 1];
    ``transform(image, mask)`` -> ``(pixels, mask)`` with the mask (an (H, W) {0, 1} array or
    ``L``-mode PIL image of the image's size) put through the *same* resize and crop with
    nearest-neighbour interpolation, as an int64 (H, W) tensor, so that mask and image stay
    aligned pixel for pixel.

    The geometry is timm's ``transforms_imagenet_eval`` (as torchvision's ``Resize`` and
    ``CenterCrop`` compute it), for ``scale = floor(size / crop_pct)`` per side:

    - ``center`` (timm's default): keep the aspect ratio; a square target resizes the short side
      to ``scale`` (the long side to ``int(scale * long / short)``), a non-square one scales both
      sides by the smaller of the two ratios (rounded); then a centre crop of ``size`` at offset
      ``round((resized - size) / 2)``;
    - ``squash``: resize to exactly ``scale`` on both sides (aspect not kept), then centre crop;
    - ``border``: scale the *long* side to ``scale`` (aspect kept), then centre-crop or pad to
      ``size``; the image is padded with the mean colour, the mask with background (0).

    Not normalised: apply :func:`normalize` (or the data config's mean/std) to the batch.
    """

    def __init__(self, size: Sequence[int], crop_pct: float, interpolation: str,
                 crop_mode: str = "center", fill: Sequence[int] = (0, 0, 0)):
        self.size = pair(size)
        self.crop_pct = float(crop_pct)
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct {self.crop_pct} is outside (0, 1]; pass a fraction such "
                             "as 0.875")
        if interpolation not in _PIL_RESAMPLE:
            raise ValueError(f"interpolation {interpolation!r} is not one of "
                             f"{', '.join(_PIL_RESAMPLE)}; set the model's "
                             "pretrained_cfg['interpolation'] to one of them")
        self.interpolation = str(interpolation)
        self.crop_mode = str(crop_mode or "center")
        if self.crop_mode not in _CROP_MODES:
            raise ValueError(f"crop_mode {self.crop_mode!r} is not one of "
                             f"{', '.join(_CROP_MODES)}; set the model's pretrained_cfg['crop_mode']")
        self.fill = tuple(int(v) for v in fill)
        self.scale = tuple(math.floor(t / self.crop_pct) for t in self.size)

    def describe(self) -> dict:
        """What the transform does, for a run's record: input size, interpolation, crop."""
        return {"input_size": list(self.size), "interpolation": self.interpolation,
                "crop_pct": self.crop_pct, "crop_mode": self.crop_mode}

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a ``width x height`` image after the resize step."""
        scale_h, scale_w = self.scale
        if self.crop_mode == "squash":
            return scale_w, scale_h
        if self.crop_mode == "center" and scale_h == scale_w:
            short, long = (width, height) if width <= height else (height, width)
            new_long = int(scale_h * long / short)
            return (scale_h, new_long) if width <= height else (new_long, scale_h)
        ratio_h, ratio_w = height / scale_h, width / scale_w
        ratio = max(ratio_h, ratio_w) if self.crop_mode == "border" else min(ratio_h, ratio_w)
        return round(width / ratio), round(height / ratio)

    def crop_offset(self, width: int, height: int) -> tuple[int, int]:
        """(left, top) of the centre crop in a resized ``width x height`` image; negative where
        the image is smaller than the crop (padded on both sides, the extra pixel after)."""
        def offset(have: int, want: int) -> int:
            if have < want:
                return -((want - have) // 2)
            return int(round((have - want) / 2.0))
        return offset(width, self.size[1]), offset(height, self.size[0])

    def _geometry(self, image, resample: int, fill):
        from PIL import Image
        new_w, new_h = self.resized_size(*image.size)
        if (new_w, new_h) != image.size:
            image = image.resize((new_w, new_h), resample)
        left, top = self.crop_offset(new_w, new_h)
        canvas = Image.new(image.mode, (self.size[1], self.size[0]), fill)
        canvas.paste(image, (-left, -top))
        return canvas

    def __call__(self, image, mask=None):
        from PIL import Image

        from palrp.data.images import to_rgb
        image = to_rgb(image)
        out = self._geometry(image, _PIL_RESAMPLE[self.interpolation],
                             self.fill if self.crop_mode == "border" else (0, 0, 0))
        pixels = torch.frombuffer(bytearray(out.tobytes()), dtype=torch.uint8)
        pixels = pixels.view(self.size[0], self.size[1], 3).permute(2, 0, 1).float() / 255.0
        if mask is None:
            return pixels
        if not isinstance(mask, Image.Image):
            import numpy as np
            mask = Image.fromarray(np.asarray(mask).astype(np.uint8))
        if mask.size != image.size:
            raise ValueError(f"the mask is {mask.size[0]}x{mask.size[1]} (W x H) but its image is "
                             f"{image.size[0]}x{image.size[1]}; give a mask of the image's size")
        mask = self._geometry(mask.convert("L"), _PIL_RESAMPLE["nearest"], 0)
        values = torch.frombuffer(bytearray(mask.tobytes()), dtype=torch.uint8)
        return pixels, values.view(self.size[0], self.size[1]).long()

    def __repr__(self) -> str:
        return (f"EvalTransform(size={self.size}, crop_pct={self.crop_pct}, "
                f"interpolation={self.interpolation!r}, crop_mode={self.crop_mode!r})")


def eval_transform(model, size: Sequence[int] | int | None = None,
                   crop_pct: float | None = None) -> EvalTransform:
    """timm's eval transform for the model (:class:`EvalTransform`): PIL image -> (C, H, W)
    float pixels in [0, 1], keeping the aspect ratio in timm's default ``center`` mode.

    Interpolation, crop fraction and crop mode come from the model's :func:`data_config`:
    resize so that the image covers ``floor(size / crop_pct)`` (the short side when the target
    is square) with that interpolation, then centre-crop ``size``. ``size`` defaults to the data
    config's input size, ``crop_pct`` to its crop fraction (pass 1.0 to keep the whole short
    side). Not normalised: apply :func:`normalize` to the batch. Called with a mask too,
    ``transform(image, mask)``, the mask gets the same geometry (nearest neighbour).
    """
    cfg = data_config(model)
    target = pair(size) if size is not None else tuple(cfg["input_size"][1:])
    pct = float(crop_pct if crop_pct is not None else cfg.get("crop_pct") or 1.0)
    fill = [round(255 * v) for v in cfg["mean"]]
    return EvalTransform(target, pct, str(cfg.get("interpolation") or "bicubic"),
                         cfg.get("crop_mode") or "center", fill)


def load_image(path: Path | str, model, size=None, crop_pct: float | None = None) -> torch.Tensor:
    """An image file -> (1, 3, H, W) [0, 1] pixels through :func:`eval_transform`, the file read
    as a viewer shows it (:func:`palrp.data.images.open_image`: EXIF orientation, 16-bit scaled
    by its bit depth, palette, transparency composited on white, CMYK, grayscale).

    Raises ``FileNotFoundError`` or ``ValueError`` (an unreadable file, an image over the
    decompression-bomb limit) with one line."""
    from palrp.data.images import open_image
    transform = eval_transform(model, size, crop_pct)
    return transform(open_image(path))[None]


def class_names(model) -> list[str] | None:
    """The model's class names if it carries them (``pretrained_cfg["label_names"]``, as set by
    :func:`palrp.modules.load_deit` from a checkpoint's config), else None."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("label_names") if isinstance(cfg, dict) else None
    if names:
        return list(names)
    legacy = getattr(getattr(model, "cfg", None), "class_names", None)
    return list(legacy) if legacy else None
