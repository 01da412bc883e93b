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
    "gamma_linear",
    "gamma_conv2d",
    "identity_act",
    "scale_grad",
    "uniform_product",
    "layer_norm_const_std",
    "rms_norm_const",
]


def _gamma_input_gradient(z, abs_term, abs_bias, grad_out, gamma: float, eps: float,
                          transpose, transpose_abs, x):
    """Shared core of the generalized Gamma rule for any linear map ``z = W x + b``.

    With ``a = |W| |x|``, ``p = W+ x+ + W- x-`` and ``q = W- x+ + W+ x-`` one has ``p + q = W x``
    and ``p - q = a``, so the two denominators of SPEC section 2 are
    ``D+ = z + gamma (p + b+) = (1 + gamma/2) z + (gamma/2)(a + |b|)`` (used where ``z > 0``) and
    ``D- = z + gamma (q + b-) = (1 + gamma/2) z - (gamma/2)(a + |b|)`` (used where ``z < 0``).
    Both have the sign of z, so with the ``+eps*sign`` stabiliser
    ``S = R / D = |z| g / ((1 + gamma/2)|z| + (gamma/2)(a + |b|) + eps)`` on either side, and 0
    where ``z = 0`` (``R = z g`` is the output relevance, ``g`` the incoming gradient).
    ``S+`` and ``S-`` are S restricted to ``z > 0`` and ``z < 0``; the input relevance
    ``x+ (Wa^T S+ + Wb^T S-) + x- (Wb^T S+ + Wa^T S-)`` divided by x is
    ``(1 + gamma/2) W^T S + (gamma/2) sign(x) |W|^T (sign(z) S)``, and 0 where ``x = 0``.

    ``transpose(s)`` applies ``W^T``, ``transpose_abs(s)`` applies ``|W|^T``; ``abs_term`` is
    ``a`` and ``abs_bias`` is ``|b|`` (broadcastable to z), both computed by the caller.
    Only elementwise work on z and x is done here, in as few passes as possible.
    """
    half = 0.5 * gamma
    abs_z = z.abs()
    denominator = abs_term.add_(abs_bias).mul_(half).add_(eps).add_(abs_z, alpha=1.0 + half)
    scaled = (abs_z * grad_out).div_(denominator)               # S = S+ + S-
    signed = scaled * torch.sign(z)                             # S+ - S-
    total = transpose(scaled)
    diff = transpose_abs(signed)
    grad_x = torch.addcmul(total.mul_(1.0 + half), torch.sign(x), diff, value=half)
    return grad_x.masked_fill_(x == 0, 0.0)


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
        grad_x = _gamma_input_gradient(
            z, abs_term, bias.abs(), grad_out, ctx.gamma, ctx.eps,
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

        def back(s, w):
            return conv2d_input(x.shape, w, s, stride, padding, dilation, groups)

        grad_x = _gamma_input_gradient(
            z, abs_term, bias.abs().view(1, -1, 1, 1), grad_out, ctx.gamma, ctx.eps,
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
