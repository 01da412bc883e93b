"""DeiT / ViT built for explanation, with exactly timm's state-dict keys (docs/method.md, section 4).

One module serves two forwards:

- the plain forward (``lrp=False``), equal to timm's ``VisionTransformer`` for the same weights;
- the explanation forward (``lrp=True``), whose backward is PA-LRP's rule set: Gamma rule on the
  patch-embedding conv (gamma 100) and on the head, fc1 and fc2 (gamma 0.05), identity rule on
  GELU, LayerNorm with a constant standard deviation, attention probabilities as constants with
  the gradient reaching V halved, everything else plain (epsilon).

The learned ``pos_embed`` can be replaced by a per-sample leaf (``pos_embed=``), which is how the
positional relevance is read (docs/method.md, section 3, additive PE).

Checkpoints are read by :func:`modules.checkpoints.read_checkpoint` (official DeiT ``.pth``, timm
state dicts, safetensors); :func:`modules.checkpoints.load_deit` builds timm's own
``VisionTransformer`` from the same files, and replaces this fork once the engine explains timm
models. Geometry is inferred from the weights; only the head count is not stored in a state dict, so it
comes from the config, an override, or DeiT's convention of 64 channels per head.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

import config
from .checkpoints import NAMED_SIZES, CheckpointError
from .checkpoints import read_checkpoint as _read_checkpoint
from .rules import (gamma_conv2d, gamma_linear, identity_act, layer_norm_const_std,
                    scale_grad)

__all__ = ["DeiTConfig", "DeiT", "load_deit", "NAMED_SIZES", "CheckpointError"]

LAYER_NORM_EPS = 1e-6

@dataclass
class DeiTConfig:
    """Geometry and preprocessing of a DeiT; the geometry is always given (inferred from a
    checkpoint by :func:`load_deit`), never a default."""

    img_size: tuple[int, int]
    patch_size: tuple[int, int]
    embed_dim: int
    depth: int
    num_heads: int
    in_chans: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    num_classes: int = 1000
    mean: tuple[float, float, float] = config.IMAGENET_MEAN
    std: tuple[float, float, float] = config.IMAGENET_STD
    class_names: list[str] | None = field(default=None, repr=False)

    def __post_init__(self):
        self.img_size = _pair(self.img_size)
        self.patch_size = _pair(self.patch_size)
        self.mean = tuple(self.mean)
        self.std = tuple(self.std)
        if self.embed_dim % self.num_heads:
            raise CheckpointError(
                f"width {self.embed_dim} is not divisible by {self.num_heads} heads; "
                "pass num_heads= that divides the width")

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])

    def to_dict(self) -> dict:
        out = asdict(self)
        out["img_size"], out["patch_size"] = list(self.img_size), list(self.patch_size)
        return out


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"expected an int or a pair, got {value}")
    return value


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        #: set by ``DeiT.forward(record_attention=True)``: (B, heads, N, N) probabilities.
        self.probs: torch.Tensor | None = None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, lrp: bool, record: bool) -> torch.Tensor:
        batch, tokens, dim = x.shape
        if lrp:
            # Attention probabilities are constants: q and k need no gradient, and only the
            # V rows of qkv carry relevance (docs/method.md, section 4). The gradient reaching V is halved.
            weight, bias = self.qkv.weight, self.qkv.bias
            with torch.no_grad():
                qk = F.linear(x, weight[: 2 * dim], None if bias is None else bias[: 2 * dim])
            v = F.linear(x, weight[2 * dim:], None if bias is None else bias[2 * dim:])
            q, k = qk.split(dim, dim=-1)
            q, k, v = self._heads(q), self._heads(k), self._heads(scale_grad(v, 0.5))
        else:
            q, k, v = self.qkv(x).view(
                batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if record:
            probs = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
            if probs.requires_grad:
                probs.retain_grad()
            self.probs = probs
            out = probs @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, lrp: bool) -> torch.Tensor:
        if not lrp:
            return self.fc2(F.gelu(self.fc1(x)))
        gamma = config.GAMMA_LINEAR
        h = gamma_linear(x, self.fc1.weight, self.fc1.bias, gamma, config.STABILIZER)
        h = identity_act(h, F.gelu)
        return gamma_linear(h, self.fc2.weight, self.fc2.bias, gamma, config.STABILIZER)


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor, lrp: bool) -> torch.Tensor:
    if lrp:
        return layer_norm_const_std(x, norm.weight, norm.bias, norm.eps)
    return norm(x)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, lrp: bool, record: bool) -> torch.Tensor:
        x = x + self.attn(_layer_norm(self.norm1, x, lrp), lrp, record)
        return x + self.mlp(_layer_norm(self.norm2, x, lrp), lrp)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: tuple[int, int], in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor, lrp: bool) -> torch.Tensor:
        if lrp:
            x = gamma_conv2d(images, self.proj.weight, self.proj.bias, config.GAMMA_CONV,
                             config.STABILIZER, stride=self.proj.stride)
        else:
            x = self.proj(images)
        return x.flatten(2).transpose(1, 2)


class DeiT(nn.Module):
    """DeiT without distillation token; ``state_dict()`` keys equal timm's VisionTransformer."""

    def __init__(self, cfg: DeiTConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, dim)
        gh, gw = cfg.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, gh * gw + 1, dim))
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(dim, cfg.num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    # geometry, derived from the config (never constants)
    @property
    def img_size(self) -> tuple[int, int]:
        return self.cfg.img_size

    @property
    def patch_size(self) -> tuple[int, int]:
        return self.cfg.patch_size

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.cfg.grid_size

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """[0,1] images -> the model's normalised input (its mean/std)."""
        mean = torch.tensor(self.cfg.mean, device=images01.device, dtype=images01.dtype)
        std = torch.tensor(self.cfg.std, device=images01.device, dtype=images01.dtype)
        return (images01 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    def forward(self, images: torch.Tensor, *, lrp: bool = False,
                pos_embed: torch.Tensor | None = None,
                record_attention: bool = False) -> torch.Tensor:
        """Logits for normalised (B, C, H, W) images.

        ``lrp``: use the PA-LRP rule set in the backward (docs/method.md, section 4).
        ``pos_embed``: a (B, N+1, D) or (1, N+1, D) tensor used instead of the parameter
        (the per-sample PE leaf of :func:`modules.positional.additive_pe_leaf`).
        ``record_attention``: keep each block's attention probabilities in ``attn.probs``
        (with their gradient retained), for the attention-based baselines.
        """
        height, width = images.shape[-2:]
        if (height, width) != self.img_size:
            raise ValueError(f"images are {height}x{width} but the model takes "
                             f"{self.img_size[0]}x{self.img_size[1]}; resize them first")
        x = self.patch_embed(images, lrp)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        x = x + (self.pos_embed if pos_embed is None else pos_embed)
        for block in self.blocks:
            x = block(x, lrp, record_attention)
        x = _layer_norm(self.norm, x, lrp)[:, 0]
        if lrp:
            return gamma_linear(x, self.head.weight, self.head.bias, config.GAMMA_LINEAR,
                                config.STABILIZER)
        return self.head(x)


# --- checkpoints --------------------------------------------------------------------------

_REQUIRED_KEYS = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight",
                  "head.weight")


def _infer_config(state: Mapping[str, torch.Tensor], file_cfg: dict, overrides: dict,
                  source: str) -> DeiTConfig:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{source} is not a DeiT/ViT checkpoint (missing {', '.join(missing)}); "
                              "pass an official DeiT .pth, a timm ViT state dict or a safetensors file")
    if "dist_token" in state or "head_dist.weight" in state:
        raise CheckpointError(f"{source} is a distilled DeiT (dist_token); pass the "
                              "non-distilled deit_*_patch16_224 weights")
    dim = state["cls_token"].shape[-1]
    patch = tuple(state["patch_embed.proj.weight"].shape[-2:])
    in_chans = state["patch_embed.proj.weight"].shape[1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    num_classes = state["head.weight"].shape[0]
    num_patches = state["pos_embed"].shape[1] - 1

    cfg = dict(file_cfg)
    cfg.pop("held_out_accuracy", None)
    size = overrides.pop("model_size", None)
    if size is not None:
        if size not in NAMED_SIZES:
            raise CheckpointError(f"unknown model size {size!r}; pass one of {sorted(NAMED_SIZES)}")
        expected = NAMED_SIZES[size]["embed_dim"]
        if expected != dim:
            actual = next((n for n, s in NAMED_SIZES.items() if s["embed_dim"] == dim), None)
            hint = f"--model-size {actual}" if actual else "no --model-size"
            raise CheckpointError(f"{source} has width {dim} but DeiT-{size.capitalize()} has "
                                  f"{expected}; pass {hint} (the size is inferred from the checkpoint)")
        cfg.setdefault("num_heads", NAMED_SIZES[size]["num_heads"])
    expected_classes = overrides.pop("num_classes", None)
    if expected_classes is not None and expected_classes != num_classes:
        raise CheckpointError(f"{source} has a {num_classes}-class head but {expected_classes} "
                              f"classes were expected; pass a checkpoint trained on these "
                              f"{expected_classes} classes")
    cfg.update(overrides)
    if "img_size" not in cfg:
        side = math.isqrt(num_patches)
        if side * side != num_patches:
            raise CheckpointError(f"{source} has {num_patches} patches, not a square grid; "
                                  "pass img_size=(H, W)")
        cfg["img_size"] = (side * patch[0], side * patch[1])
    cfg.setdefault("num_heads", max(1, dim // 64))
    cfg.update(patch_size=patch, in_chans=in_chans, embed_dim=dim, depth=depth,
               mlp_ratio=hidden / dim, num_classes=num_classes,
               qkv_bias="blocks.0.attn.qkv.bias" in state)
    known = DeiTConfig.__dataclass_fields__
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise CheckpointError(f"unknown DeiT setting(s) {unknown}; known: {sorted(known)}")
    result = DeiTConfig(**cfg)
    gh, gw = result.grid_size
    if gh * gw != num_patches:
        raise CheckpointError(f"{source} has {num_patches} patch positions but a "
                              f"{result.img_size[0]}x{result.img_size[1]} image with patch "
                              f"{patch[0]} gives {gh * gw}; pass the image size it was trained at")
    return result


def load_deit(checkpoint, **overrides) -> DeiT:
    """Build a :class:`DeiT` from a checkpoint path or a state dict, in eval mode.

    ``overrides`` set config values the weights do not store (``num_heads``, ``img_size``,
    ``mean``/``std``, ``class_names``) or check expectations: ``model_size`` ("tiny", "small",
    "base") and ``num_classes`` raise :class:`CheckpointError` with a fix when they disagree
    with the weights.
    """
    if isinstance(checkpoint, Mapping):
        state, file_cfg, source = dict(checkpoint), {}, "the state dict"
        if "model" in state and isinstance(state["model"], Mapping):
            state = dict(state["model"])
    else:
        path = Path(checkpoint)
        state, file_cfg = _read_checkpoint(path)
        source = str(path)
    cfg = _infer_config(state, file_cfg, dict(overrides), source)
    model = DeiT(cfg)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # timm keeps some empty/identity modules; drop what has no parameter here.
    own = set(model.state_dict())
    extra = sorted(k for k in state if k not in own)
    if extra:
        raise CheckpointError(f"{source} has weights this DeiT does not use ({', '.join(extra[:4])}"
                              f"{'...' if len(extra) > 4 else ''}); pass a plain DeiT/ViT checkpoint")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{source} does not fit the inferred DeiT ({first[-1].strip()}); "
                              "pass num_heads=/img_size= matching how it was trained") from None
    return model.eval()
