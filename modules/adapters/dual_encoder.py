"""The score of a dual encoder (transformers ``CLIPModel``): the glue between its two towers,
``logit_ij = scale * <u_i / |u_i|, v_j / |v_j|>`` (+ a bias), with ``u`` the projected image
features and ``v`` the projected text features (docs/method.md, "Image-text scores").

Rules: the projections, the scale and the bias plain (epsilon); each vector norm a constant of
the backward (as LayerNorm's standard deviation, M6: the division is then a linear scale, so
``R(u) = R(u / |u|)``); the product of the two normalised embeddings the uniform rule (M5): it
is a bilinear product of two operands that both carry relevance (the image's and the text's),
so each receives half. The glue is inline code of the model's forward, so a torch function mode
(:class:`_ScoreGlue`) is active while the composite's own forward runs and is suspended inside
its towers (their own families' rules apply there): in the glue it makes the divisor of a
division by a (..., 1) norm a constant and halves the gradient of both operands of a matrix
product of two tensors that carry relevance. Nothing of the stock code is copied or replaced,
and the forward values are unchanged.
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from ..rules import uniform_product

__all__ = ["install"]

_MATMUL = frozenset({torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm})
_DIVIDE = frozenset({torch.div, torch.Tensor.div, torch.Tensor.__truediv__})


class _ScoreGlue(TorchFunctionMode):
    def __init__(self, depth: list):
        super().__init__()
        self.depth = depth

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth[0] == 0 and torch.is_grad_enabled() and len(args) >= 2:
            a, b = args[0], args[1]
            both = torch.is_tensor(a) and torch.is_tensor(b)
            if func in _MATMUL and both and a.requires_grad and b.requires_grad:
                return uniform_product(a, b, torch.matmul)
            if func in _DIVIDE and both and b.requires_grad and b.dim() >= 1 \
                    and b.shape[-1] == 1 and a.shape[-1] > 1:
                return func(a, b.detach(), *args[2:], **kwargs)
        return func(*args, **kwargs)


def install(patcher, part, towers) -> None:
    """The composite's forward runs under :class:`_ScoreGlue`; ``towers`` (its parts' root
    modules) suspend it while they run."""
    depth = [0]

    def make_root(original):
        def forward(*args, **kwargs):
            with _ScoreGlue(depth):
                return original(*args, **kwargs)
        return forward

    def make_tower(original):
        def forward(*args, **kwargs):
            depth[0] += 1
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= 1
        return forward

    patcher.wrap_forward(part.module, make_root)
    for tower in towers:
        patcher.wrap_forward(tower, make_tower)
