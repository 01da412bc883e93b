"""The few custom backward rules of PA-LRP, written as gradient x input (SPEC section 0).

Everything else in the engine is plain autograd, which already *is* the epsilon rule with
epsilon 0. Each rule below is an autograd Function (or a one-line composition) whose backward
returns the gradient ``g_x`` such that ``x * g_x`` is the LRP relevance of the rule, given that
the relevance at the output is ``y * g_y``. Relevance is therefore read anywhere as
``t * t.grad``.

Rules:
- :func:`gamma_linear`, :func:`gamma_conv2d`: the generalized Gamma rule of zennit 0.5.1
  (SPEC section 2), fast: two extra products instead of four modified layers.
- :func:`identity_act`: the identity rule for elementwise activations (GELU, SiLU).
- :func:`scale_grad`: scales the gradient through a tensor; ``scale_grad(v, 0.5)`` is the halving
  of the DeiT ``A*V`` product, and halving both operands of a product is the uniform rule.
- :func:`layer_norm_const_std`, :func:`rms_norm_const`: normalisation with its statistic treated
  as a constant.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input

__all__ = [
    "stabilize",
    "gamma_linear",
    "gamma_conv2d",
    "identity_act",
    "scale_grad",
    "uniform_product",
    "layer_norm_const_std",
    "rms_norm_const",
]


def stabilize(denominator: torch.Tensor, eps: float) -> torch.Tensor:
    """zennit's stabiliser: ``d + eps * sign(d)``, with the sign of 0 taken as +."""
    sign = torch.where(denominator >= 0, 1.0, -1.0).to(denominator.dtype)
    return denominator + eps * sign


def _gamma_input_gradient(
    z: torch.Tensor,
    abs_term: torch.Tensor,
    bias_pos: torch.Tensor | float,
    bias_neg: torch.Tensor | float,
    grad_out: torch.Tensor,
    gamma: float,
    eps: float,
    transpose,
    transpose_abs,
    x: torch.Tensor,
) -> torch.Tensor:
    """Shared core of the generalized Gamma rule for any linear map ``z = W x + b``.

    With ``p = W+ x+ + W- x-`` and ``q = W- x+ + W+ x-`` (so ``p + q = z - b`` and
    ``p - q = |W| |x|``), the two denominators of SPEC section 2 are
    ``D+ = z + gamma (p + b+)`` and ``D- = z + gamma (q + b-)``. The relevance
    ``R = z * grad_out`` is divided by ``D+`` where ``z > 0`` and by ``D-`` where ``z < 0``,
    giving ``S+`` and ``S-`` (disjoint supports). The input relevance
    ``x+ (Wa^T S+ + Wb^T S-) + x- (Wb^T S+ + Wa^T S-)`` then only needs
    ``u + v = W^T (S+ + S-)`` and ``u - v = |W|^T (S+ - S-)`` with
    ``u = W+^T S+ + W-^T S-`` and ``v = W-^T S+ + W+^T S-``:
    ``R_in / x = (1+gamma) u + v`` where ``x > 0`` and ``u + (1+gamma) v`` where ``x < 0``.

    ``transpose(s)`` applies ``W^T``, ``transpose_abs(s)`` applies ``|W|^T``; ``abs_term`` is
    ``|W| |x|`` computed by the caller.
    """
    wx = z - bias_pos - bias_neg  # W x (no bias); b = b+ + b-
    p = 0.5 * (wx + abs_term)
    q = 0.5 * (wx - abs_term)
    relevance = z * grad_out
    d_pos = stabilize(z + gamma * (p + bias_pos), eps)
    d_neg = stabilize(z + gamma * (q + bias_neg), eps)
    s_pos = torch.where(z > 0, relevance / d_pos, torch.zeros_like(relevance))
    s_neg = torch.where(z < 0, relevance / d_neg, torch.zeros_like(relevance))
    total = transpose(s_pos + s_neg)        # u + v
    diff = transpose_abs(s_pos - s_neg)     # u - v
    u = 0.5 * (total + diff)
    v = 0.5 * (total - diff)
    grad_pos = (1.0 + gamma) * u + v
    grad_neg = u + (1.0 + gamma) * v
    return torch.where(x > 0, grad_pos, torch.where(x < 0, grad_neg, torch.zeros_like(grad_pos)))


def _split_bias(bias: torch.Tensor | None, shape_fn):
    if bias is None:
        return 0.0, 0.0
    return shape_fn(bias.clamp(min=0)), shape_fn(bias.clamp(max=0))


class _GammaLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, eps):
        z = F.linear(x, weight, bias)
        ctx.save_for_backward(x, weight, bias, z)
        ctx.gamma, ctx.eps = gamma, eps
        return z

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, z = ctx.saved_tensors
        abs_w = weight.abs()
        abs_term = F.linear(x.abs(), abs_w)
        b_pos, b_neg = _split_bias(bias, lambda b: b)
        grad_x = _gamma_input_gradient(
            z, abs_term, b_pos, b_neg, grad_out, ctx.gamma, ctx.eps,
            transpose=lambda s: s @ weight,
            transpose_abs=lambda s: s @ abs_w,
            x=x,
        )
        return grad_x, None, None, None, None


def gamma_linear(x, weight, bias=None, gamma: float = 0.05, eps: float = 1e-6):
    """``F.linear`` whose backward is the generalized Gamma rule (zennit 0.5.1 ``Gamma``).

    SPEC section 2: ``Wa = W + g max(W,0)``, ``Wb = W + g min(W,0)``, same for the bias;
    ``D+ = Wa x+ + ba + Wb x-`` for ``z > 0``, ``D- = Wb x+ + bb + Wa x-`` for ``z < 0``,
    stabilised by ``+eps*sign``; ``R_in = x+ (Wa^T S+ + Wb^T S-) + x- (Wb^T S+ + Wa^T S-)``.
    No gradient reaches the weight or the bias (explanations never need one).
    """
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return _GammaLinear.apply(x, weight, bias, float(gamma), float(eps))


class _GammaConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, eps, stride, padding, dilation, groups):
        z = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        ctx.save_for_backward(x, weight, bias, z)
        ctx.gamma, ctx.eps = gamma, eps
        ctx.conv = (stride, padding, dilation, groups)
        return z

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, z = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        abs_w = weight.abs()
        abs_term = F.conv2d(x.abs(), abs_w, None, stride, padding, dilation, groups)
        b_pos, b_neg = _split_bias(bias, lambda b: b.view(1, -1, 1, 1))

        def back(s, w):
            return conv2d_input(x.shape, w, s, stride, padding, dilation, groups)

        grad_x = _gamma_input_gradient(
            z, abs_term, b_pos, b_neg, grad_out, ctx.gamma, ctx.eps,
            transpose=lambda s: back(s, weight),
            transpose_abs=lambda s: back(s, abs_w),
            x=x,
        )
        return grad_x, None, None, None, None, None, None, None, None


def gamma_conv2d(x, weight, bias=None, gamma: float = 100.0, eps: float = 1e-6,
                 stride=1, padding=0, dilation=1, groups=1):
    """``F.conv2d`` whose backward is the generalized Gamma rule (SPEC section 2, conv case).

    The same formula as :func:`gamma_linear` with the products being convolutions and the
    transposes being transposed convolutions.
    """
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return _GammaConv2d.apply(x, weight, bias, float(gamma), float(eps),
                              stride, padding, dilation, groups)


class _IdentityAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn):
        y = fn(x)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        x, y = ctx.saved_tensors
        nonzero = x != 0
        ratio = torch.where(nonzero, y / torch.where(nonzero, x, torch.ones_like(x)),
                            torch.zeros_like(x))
        return grad_out * ratio, None


def identity_act(x: torch.Tensor, fn) -> torch.Tensor:
    """``fn(x)`` with the identity rule ``R_x = R_y`` (SPEC section 0): ``g_x = g_y * y / x``.

    Used for GELU (DeiT) and SiLU (Llama). Where ``x == 0`` the relevance is 0 and so is the
    returned gradient.
    """
    return _IdentityAct.apply(x, fn)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the gradient (hence the relevance) reaching ``x`` is multiplied by
    ``scale``. ``scale_grad(v, 0.5)`` is the halving at DeiT's ``A*V`` (SPEC section 2)."""
    return _ScaleGrad.apply(x, float(scale))


def uniform_product(a: torch.Tensor, b: torch.Tensor, op=torch.mul) -> torch.Tensor:
    """``op(a, b)`` for a bilinear ``op`` (elementwise or matmul) under the uniform rule:
    each operand receives half of the output relevance (SPEC section 0)."""
    return op(scale_grad(a, 0.5), scale_grad(b, 0.5))


def layer_norm_const_std(x, weight, bias, eps: float):
    """LayerNorm whose standard deviation is a constant (detached); the centring and the
    affine map stay plain, i.e. the epsilon rule (SPEC section 2)."""
    centred = x - x.mean(dim=-1, keepdim=True)
    std = torch.sqrt(centred.detach().pow(2).mean(dim=-1, keepdim=True) + eps)
    out = centred / std
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def rms_norm_const(x, weight, eps: float):
    """RMSNorm whose root mean square is a constant, i.e. the identity rule (SPEC section 3).
    Computed in float32 like the stock Llama RMSNorm, then cast back."""
    dtype = x.dtype
    x32 = x.float()
    rms = torch.rsqrt(x32.detach().pow(2).mean(dim=-1, keepdim=True) + eps)
    return weight * (x32 * rms).to(dtype)
