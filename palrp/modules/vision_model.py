"""Geometry and preprocessing of a timm vision transformer, read from the model itself.

Every value here comes from the model object (its ``patch_embed``, its prefix tokens, its
``pretrained_cfg``), never from constants: a DINOv2 at 518 px with patch 14 and four register
tokens, a CLIP ViT with CLIP's mean/std or a DeiT at 224 px all answer for themselves. The
helpers accept timm's ``VisionTransformer`` (and ``VisionTransformerDistilled``), timm's ``Eva``
and any model with the same attribute names (``patch_embed.proj``, ``cls_token``,
``num_prefix_tokens``). See docs/vision_families.md for the families.

- :func:`patch_size`, :func:`grid_size` (aware of ``dynamic_img_size``), :func:`image_size`;
- :func:`num_prefix_tokens` (class, distillation and register tokens), :func:`has_class_token`;
- :func:`data_config` (timm's ``resolve_model_data_config`` with the input size the model was
  built at), :func:`normalize` ([0, 1] pixels -> the model's input);
- :func:`eval_transform` / :func:`load_image`: a photo -> [0, 1] pixels at the model's input
  size, keeping the aspect ratio (short side resized to ``size / crop_pct``, centre crop), as
  timm's eval transform does.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import torch

__all__ = ["patch_size", "image_size", "grid_size", "num_prefix_tokens", "has_class_token",
           "dynamic_image_size", "data_config", "normalize", "eval_transform", "load_image",
           "class_names"]


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"expected an int or an (H, W) pair, got {value}")
    return value


def _patch_embed(model):
    embed = getattr(model, "patch_embed", None)
    if embed is None or not hasattr(embed, "proj"):
        raise ValueError(f"{type(model).__name__} has no patch_embed.proj; pass a timm "
                         "VisionTransformer or Eva model")
    return embed


def patch_size(model) -> tuple[int, int]:
    """(ph, pw) of the patch-embedding conv."""
    embed = _patch_embed(model)
    size = getattr(embed, "patch_size", None)
    return _pair(size if size is not None else embed.proj.kernel_size)


def image_size(model) -> tuple[int, int]:
    """(H, W) the model was built at (its ``patch_embed.img_size``; the position table's size)."""
    embed = _patch_embed(model)
    size = getattr(embed, "img_size", None)
    if size is None:
        size = getattr(model, "img_size", None)
    if size is None:
        raise ValueError(f"{type(model).__name__} records no image size; build it with img_size=")
    return _pair(size)


def dynamic_image_size(model) -> bool:
    """Whether the model takes other image sizes than it was built at (timm's
    ``dynamic_img_size``: the position table is resampled to the new grid in the forward)."""
    return bool(getattr(model, "dynamic_img_size", False))


def grid_size(model, images_or_size=None) -> tuple[int, int]:
    """(gh, gw) patch grid for a batch of images, an (H, W) size, or (None) the built size.

    A model without ``dynamic_img_size`` accepts only its built size; a dynamic one any size
    its patch embedding accepts (divisible by the patch, or padded with ``dynamic_img_pad``).
    Raises ``ValueError`` with one line otherwise.
    """
    built = image_size(model)
    if images_or_size is None:
        size = built
    elif isinstance(images_or_size, torch.Tensor):
        size = tuple(images_or_size.shape[-2:])
    else:
        size = _pair(images_or_size)
    ph, pw = patch_size(model)
    if not dynamic_image_size(model):
        if size != built:
            raise ValueError(f"images are {size[0]}x{size[1]} but the model takes "
                             f"{built[0]}x{built[1]}; resize them (or build the timm model with "
                             "dynamic_img_size=True)")
        return (size[0] // ph, size[1] // pw)
    if getattr(_patch_embed(model), "dynamic_img_pad", False):
        return (math.ceil(size[0] / ph), math.ceil(size[1] / pw))
    if size[0] % ph or size[1] % pw:
        raise ValueError(f"images are {size[0]}x{size[1]}, not a multiple of the model's "
                         f"{ph}x{pw} patches; resize or crop them to a multiple")
    return (size[0] // ph, size[1] // pw)


def has_class_token(model) -> bool:
    """Whether the sequence starts with a class token (False for average-pool models built
    with ``class_token=False``)."""
    flag = getattr(model, "has_class_token", None)
    if flag is not None:
        return bool(flag)
    return getattr(model, "cls_token", None) is not None


def num_prefix_tokens(model) -> int:
    """Tokens before the patch tokens: class token, distillation token, register tokens
    (0 for a model with neither class nor register tokens)."""
    count = getattr(model, "num_prefix_tokens", None)
    if count is not None:
        return int(count)
    count = int(has_class_token(model))
    count += int(getattr(model, "dist_token", None) is not None)
    reg = getattr(model, "reg_token", None)
    return count + (0 if reg is None else int(reg.shape[1]))


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
        channels = int(_patch_embed(model).proj.in_channels)
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


def eval_transform(model, size: Sequence[int] | int | None = None,
                   crop_pct: float | None = None) -> Callable:
    """PIL image -> (C, H, W) float pixels in [0, 1] for the model, keeping the aspect ratio.

    As timm's eval transform (``crop_mode="center"``): resize so that the image covers
    ``floor(size / crop_pct)`` on both sides (the short side when the target is square) with the
    data config's interpolation, then centre-crop ``size``. ``size`` defaults to the data
    config's input size, ``crop_pct`` to its crop fraction (pass 1.0 to keep the whole short
    side). Not normalised: apply :func:`normalize` to the batch.
    """
    cfg = data_config(model)
    target = _pair(size) if size is not None else tuple(cfg["input_size"][1:])
    pct = float(crop_pct if crop_pct is not None else cfg["crop_pct"] or 1.0)
    if not 0 < pct <= 1:
        raise ValueError(f"crop_pct {pct} is outside (0, 1]; pass a fraction such as 0.875")
    resample = _PIL_RESAMPLE.get(str(cfg["interpolation"]), _PIL_RESAMPLE["bicubic"])
    scale_h, scale_w = (math.floor(t / pct) for t in target)

    def transform(image) -> torch.Tensor:
        image = image.convert("RGB")
        width, height = image.size
        ratio = max(scale_h / height, scale_w / width)
        new_w, new_h = max(target[1], round(width * ratio)), max(target[0], round(height * ratio))
        image = image.resize((new_w, new_h), resample)
        left, top = (new_w - target[1]) // 2, (new_h - target[0]) // 2
        image = image.crop((left, top, left + target[1], top + target[0]))
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        return pixels.view(target[0], target[1], 3).permute(2, 0, 1).float() / 255.0

    return transform


def load_image(path: Path | str, model, size=None, crop_pct: float | None = None) -> torch.Tensor:
    """An image file -> (1, 3, H, W) [0, 1] pixels through :func:`eval_transform`.

    Raises ``FileNotFoundError`` or ``ValueError`` (an unreadable file) with one line."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    transform = eval_transform(model, size, crop_pct)
    try:
        with Image.open(path) as image:
            return transform(image)[None]
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read {path} as an image ({exc.__class__.__name__}); "
                         "pass a PNG/JPEG/BMP/TIFF/WebP file") from None


def class_names(model) -> list[str] | None:
    """The model's class names if it carries them (``pretrained_cfg["label_names"]``, as set by
    :func:`palrp.modules.load_deit` from a checkpoint's config), else None."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("label_names") if isinstance(cfg, dict) else None
    if names:
        return list(names)
    legacy = getattr(getattr(model, "cfg", None), "class_names", None)
    return list(legacy) if legacy else None
