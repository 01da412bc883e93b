"""Swin V2's window attention (transformers ``Swinv2SelfAttention``), which transformers 5.24
still computes inline (not on the attention interface):

    s = logit_scale * normalize(q) normalize(k)^T + 16 sigmoid(MLP(coords))[index] (+ mask),
    out = softmax(s) v

Rules (docs/method.md, section 5 and "Relative position bias"): each normalisation's norm a
constant of the backward (as LayerNorm's standard deviation, M6: ``q / |q|`` is then a linear
scale of q); the uniform rule (M5) on both matrix products, ``q^ k^T`` and ``A v``; the logit
scale, the masks and the softmax plain; the continuous position bias, as added to the scores,
the block's positional leaf (M15, on the input patch grid, read per key as Swin's table bias:
:func:`palrp.modules.adapters.hf_relative_bias.window_bias`, which calls
:func:`palrp.modules.adapters.windows.bias_on_patch_grid`).

Why a torch function mode: the products, the normalisations and the bias are inline code of
the module's forward, and copying that forward would fork the stock code. While the module's
stock forward runs, :class:`_CosineWindowAttention` sees its torch calls and changes only the
backward of four of them (``F.normalize``: the norm detached, same values; ``matmul`` of two
tensors that carry relevance: both gradients halved; the addition of the bias: the addend
replaced by the leaf with its values), so the forward is the stock one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..rules import uniform_product
from .hf_relative_bias import bias_label, window_bias

__all__ = ["factories"]

_MATMUL = frozenset({torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__})
_MUL = frozenset({torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__})
_ADD = frozenset({torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__})
_UNSQUEEZE = frozenset({torch.unsqueeze, torch.Tensor.unsqueeze})


def factories(part) -> dict:
    return {"cosine_window_attention": _cosine_window_attention(part)}


class _CosineWindowAttention(TorchFunctionMode):
    """Active during one ``Swinv2SelfAttention`` forward (see the module docstring). The bias is
    followed by identity from the sigmoid of the MLP's table to the addition: ``sigmoid`` ->
    ``* 16`` -> ``unsqueeze(0)`` -> ``scores + bias``."""

    def __init__(self, make_leaf):
        super().__init__()
        self.make_leaf = make_leaf
        self.chain: list = []

    def _follows(self, value) -> bool:
        return bool(self.chain) and value is self.chain[-1]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.normalize:
            x = args[0]
            p, dim, eps = kwargs.get("p", 2.0), kwargs.get("dim", 1), kwargs.get("eps", 1e-12)
            if len(args) > 1:
                p = args[1]
            if len(args) > 2:
                dim = args[2]
            norm = x.norm(p, dim, keepdim=True).clamp_min(eps).expand_as(x)
            return x / norm.detach()
        if func in _MATMUL and len(args) == 2 and all(torch.is_tensor(a) and a.requires_grad
                                                      for a in args):
            return uniform_product(args[0], args[1], torch.matmul)
        out = func(*args, **kwargs)
        if func is torch.sigmoid:
            self.chain = [out]
        elif func in _MUL and any(self._follows(a) for a in args):
            self.chain.append(out)
        elif func in _UNSQUEEZE and self._follows(args[0]) and len(self.chain) == 2:
            self.chain.append(out)
        elif func in _ADD and len(self.chain) == 3 and len(args) == 2 and self._follows(args[1]):
            out = args[0] + self.make_leaf(self.chain[1])
            self.chain = []
        return out


def _constant(bias):
    """The bias as a constant (AttnLRP: no positional leaf), in the shape the model adds."""
    return bias.detach().unsqueeze(0)


def _cosine_window_attention(part):
    def make(module, original):
        layer = part.parents[part.parents[module]]

        def make_leaf(bias):                    # bias: (heads, w^2, w^2) as the model adds it
            return window_bias(part, bias.unsqueeze(0), layer,
                                    bias_label(part, "cosine_window_attention", module))

        def forward(*args, **kwargs):
            with _CosineWindowAttention(make_leaf if part.source.attribute else _constant):
                return original(*args, **kwargs)
        return forward
    return make
