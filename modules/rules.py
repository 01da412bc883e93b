"""The few custom backward rules of PA-LRP, written as gradient x input (docs/method.md, section 1).

Everything else in the engine is plain autograd, which already *is* the epsilon rule with
epsilon 0. Each rule below is an autograd Function (or a one-line composition) whose backward
returns the gradient ``g_x`` such that ``x * g_x`` is the LRP relevance of the rule, given that
the relevance at the output is ``y * g_y``. Relevance is therefore read anywhere as
``t * t.grad``.

Rules:
- :func:`gamma_linear`, :func:`gamma_conv2d`: the generalized Gamma rule of zennit 0.5.1
  (docs/method.md, section 2, M7 and M8), fast: two extra products instead of four modified layers.
- :func:`identity_act`: the identity rule for elementwise activations (GELU, SiLU).
- :func:`scale_grad`: scales the gradient through a tensor; ``scale_grad(v, 0.5)`` is the halving
  of the DeiT ``A*V`` product, and halving both operands of a product is the uniform rule.
- :func:`layer_norm_const_std`, :func:`rms_norm_const`: normalisation with its statistic treated
  as a constant.
"""
from __future__ import annotations

from dataclasses import dataclass

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
    "RuleSet",
    "PAPER_RULES",
    "CONSERVATIVE_RULES",
    "UNIFORM_RULES",
]


def _gamma_input_gradient(z, grad_out, x, gamma: float, eps: float, abs_bias, ops):
    """Shared core of the generalized Gamma rule for any linear map ``z = W x + b``.

    With ``a = |W| |x|``, ``p = W+ x+ + W- x-`` and ``q = W- x+ + W+ x-`` one has ``p + q = W x``
    and ``p - q = a``, so the two denominators of docs/method.md (M7) are
    ``D+ = z + gamma (p + b+) = (1 + gamma/2) z + (gamma/2)(a + |b|)`` (used where ``z > 0``) and
    ``D- = z + gamma (q + b-) = (1 + gamma/2) z - (gamma/2)(a + |b|)`` (used where ``z < 0``).
    Both have the sign of z, so with the ``+eps*sign`` stabiliser
    ``S = R / D = |z| g / ((1 + gamma/2)|z| + (gamma/2)(a + |b|) + eps)`` on either side, and 0
    where ``z = 0`` (``R = z g`` is the output relevance, ``g`` the incoming gradient).
    ``S+`` and ``S-`` are S restricted to ``z > 0`` and ``z < 0``; the input relevance
    ``x+ (Wa^T S+ + Wb^T S-) + x- (Wb^T S+ + Wa^T S-)`` divided by x is
    ``(1 + gamma/2) W^T S + (gamma/2) sign(x) |W|^T (sign(z) S)``. Where ``x = 0`` the input
    relevance ``x * grad`` is 0 whatever this gradient is.

    ``ops`` supplies the three products with the layer's weight, the scales passed as the
    products' coefficients (never applied to a weight copy or to the activations):
    ``add_abs_forward(out, alpha)``: ``out += alpha |W| |x|`` in place (``per_output`` shapes a
    per-output-feature vector to broadcast against z), ``transpose_abs(s)``: a new
    ``|W|^T s``, ``add_transpose(out, s, beta, alpha)``: ``out = beta out + alpha W^T s`` in
    place, and ``input_sign()``: ``sign(x)``. The elementwise work on z and x is kept to a few
    passes in few buffers (one of z's size, two of x's, one of them the result), since on
    CPUs it, and above all the first touch of fresh memory, is what costs beyond the products.
    """
    half = 0.5 * gamma
    # one buffer of z's size: (1 + gamma/2)|z| + (gamma/2)|b| + eps, + (gamma/2) a in place,
    # then g / D, then sign(z) S = z g / D
    work = z.abs()
    torch.add(ops.per_output(abs_bias * half + eps), work, alpha=1.0 + half, out=work)
    ops.add_abs_forward(work, half)
    signed = torch.div(grad_out, work, out=work).mul_(z)         # S+ - S-
    grad = ops.transpose_abs(signed).mul_(ops.input_sign())
    # S = |z| g / D has the sign of g (D > 0) and the magnitude of sign(z) S
    scaled = torch.copysign(signed, grad_out, out=signed)       # S+ + S-
    return ops.add_transpose(grad, scaled, half, 1.0 + half)


class _LinearOps:
    """The products of :func:`_gamma_input_gradient` for ``F.linear`` (x as rows); ``|x|`` is
    made once and its buffer then holds ``sign(x)``."""

    def __init__(self, x, weight):
        self.x, self.weight, self.abs_weight = x, weight, weight.abs()
        self._abs_x = None

    def per_output(self, values):
        return values

    @staticmethod
    def _rows(t):
        return t.reshape(-1, t.shape[-1])

    def add_abs_forward(self, out, alpha):
        self._abs_x = self.x.abs()
        # view, not reshape: the product is accumulated into ``out`` itself
        out.view(-1, out.shape[-1]).addmm_(self._rows(self._abs_x), self.abs_weight.t(),
                                           alpha=alpha)

    def input_sign(self):
        return torch.sign(self.x, out=self._abs_x)

    def transpose_abs(self, s):
        return (self._rows(s) @ self.abs_weight).view(self.x.shape)

    def add_transpose(self, out, s, beta, alpha):
        out.view(-1, out.shape[-1]).addmm_(self._rows(s), self.weight, beta=beta, alpha=alpha)
        return out


class _Conv2dOps:
    """The products of :func:`_gamma_input_gradient` for ``F.conv2d`` (transposes are the
    input gradients of the convolution)."""

    def __init__(self, x, weight, conv):
        self.x, self.weight, self.abs_weight, self.conv = x, weight, weight.abs(), conv

    def per_output(self, values):
        return values.view(-1, 1, 1)

    def add_abs_forward(self, out, alpha):
        out.add_(F.conv2d(self.x.abs(), self.abs_weight, None, *self.conv), alpha=alpha)

    def input_sign(self):
        return torch.sign(self.x)

    def _back(self, s, weight):
        return conv2d_input(self.x.shape, weight, s, *self.conv)

    def transpose_abs(self, s):
        return self._back(s, self.abs_weight)

    def add_transpose(self, out, s, beta, alpha):
        return out.mul_(beta).add_(self._back(s, self.weight), alpha=alpha)


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
        grad_x = _gamma_input_gradient(z, grad_out, x, ctx.gamma, ctx.eps, bias.abs(),
                                       _LinearOps(x, weight))
        return grad_x, None, None, None, None


def gamma_linear(x, weight, bias=None, gamma: float = 0.05, eps: float = 1e-6):
    """``F.linear`` whose backward is the generalized Gamma rule (zennit 0.5.1 ``Gamma``).

    docs/method.md (M7): ``Wa = W + g max(W,0)``, ``Wb = W + g min(W,0)``, same for the bias;
    ``D+ = Wa x+ + ba + Wb x-`` for ``z > 0``, ``D- = Wb x+ + bb + Wa x-`` for ``z < 0``,
    stabilised by ``+eps*sign``; ``R_in = x+ (Wa^T S+ + Wb^T S-) + x- (Wb^T S+ + Wa^T S-)``.
    No gradient reaches the weight or the bias (explanations never need one).
    """
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return _GammaLinear.apply(x, weight, bias, float(gamma), float(eps))


def _pair_tuple(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _is_patchify(weight, stride, padding, dilation, groups) -> bool:
    """A conv whose windows tile the image without overlap (a ViT patch embedding): kernel ==
    stride, no padding, no dilation, one group. It is a linear map on the patches."""
    return (tuple(weight.shape[-2:]) == _pair_tuple(stride) and _pair_tuple(padding) == (0, 0)
            and _pair_tuple(dilation) == (1, 1) and groups == 1)


def _to_patches(x, patch):
    """(B, C, H, W) -> (B*gh*gw, C*ph*pw) rows of the covered patches (an edge the conv does
    not reach is dropped, as the conv drops it)."""
    (ph, pw), (b, c, h, w) = patch, x.shape
    gh, gw = h // ph, w // pw
    x = x[:, :, :gh * ph, :gw * pw].reshape(b, c, gh, ph, gw, pw)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c * ph * pw)


def _from_patches(rows, patch, shape):
    """Inverse of :func:`_to_patches`, zeros where no patch reaches."""
    (ph, pw), (b, c, h, w) = patch, shape
    gh, gw = h // ph, w // pw
    out = rows.reshape(b, gh, gw, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, gh * ph, gw * pw)
    if (gh * ph, gw * pw) != (h, w):
        out = F.pad(out, (0, w - gw * pw, 0, h - gh * ph))
    return out


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
        if _is_patchify(weight, *ctx.conv):
            # the same rule as products with the patch matrix (much faster than the
            # transposed convolutions on CPUs)
            patch = tuple(weight.shape[-2:])
            flat = lambda t: t.flatten(2).transpose(1, 2).reshape(-1, t.shape[1])
            rows = _to_patches(x, patch)
            grad_rows = _gamma_input_gradient(
                flat(z), flat(grad_out), rows, ctx.gamma, ctx.eps, bias.abs(),
                _LinearOps(rows, weight.reshape(weight.shape[0], -1)))
            grad_x = _from_patches(grad_rows, patch, x.shape)
        else:
            grad_x = _gamma_input_gradient(z, grad_out, x, ctx.gamma, ctx.eps, bias.abs(),
                                           _Conv2dOps(x, weight, ctx.conv))
        return grad_x, None, None, None, None, None, None, None, None


def gamma_conv2d(x, weight, bias=None, gamma: float = 100.0, eps: float = 1e-6,
                 stride=1, padding=0, dilation=1, groups=1):
    """``F.conv2d`` whose backward is the generalized Gamma rule (docs/method.md, M7, conv case).

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
        # g * y / x; where x == 0 (y == 0 too for GELU and SiLU) 0/0 becomes 0.
        return (grad_out * y).div_(x).nan_to_num_(nan=0.0), None


def identity_act(x: torch.Tensor, fn) -> torch.Tensor:
    """``fn(x)`` with the identity rule ``R_x = R_y`` (docs/method.md, M4): ``g_x = g_y * y / x``.

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


def scale_grad(x: torch.Tensor, scale) -> torch.Tensor:
    """Identity forward; the gradient (hence the relevance) reaching ``x`` is multiplied by
    ``scale``. ``scale_grad(v, 0.5)`` is the halving at DeiT's ``A*V`` (docs/method.md, section 4).
    ``scale`` may be a tensor broadcasting against ``x`` (a per-channel scale, e.g. halving only
    the rotary dims of a query projection)."""
    return _ScaleGrad.apply(x, scale if torch.is_tensor(scale) else float(scale))


def uniform_product(a: torch.Tensor, b: torch.Tensor, op=torch.mul) -> torch.Tensor:
    """``op(a, b)`` for a bilinear ``op`` (elementwise or matmul) under the uniform rule:
    each operand receives half of the output relevance (docs/method.md, M5)."""
    return op(scale_grad(a, 0.5), scale_grad(b, 0.5))


class _LayerNormConstStd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        out, _, rstd = torch.native_layer_norm(x, x.shape[-1:], weight, bias, eps)
        ctx.save_for_backward(weight, rstd)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        weight, rstd = ctx.saved_tensors
        scaled = grad_out * weight if weight is not None else grad_out.clone()
        scaled.mul_(rstd)
        return scaled.sub_(scaled.mean(dim=-1, keepdim=True)), None, None, None


def layer_norm_const_std(x, weight, bias, eps: float):
    """LayerNorm whose standard deviation is a constant; the centring and the affine map stay
    plain, i.e. the epsilon rule (docs/method.md, M3 and M6). With ``r = 1/std`` fixed the layer is
    ``y = w r (x - mean(x)) + b``, so the input gradient is ``v - mean(v)`` with ``v = w r g``.
    The forward is the fused native LayerNorm."""
    return _LayerNormConstStd.apply(x, weight, bias, eps)


def rms_norm_const(x, weight, eps: float):
    """RMSNorm whose root mean square is a constant, i.e. the identity rule (docs/method.md, M6).
    Computed in float32 like the stock Llama RMSNorm, then cast back."""
    dtype = x.dtype
    x32 = x.float()
    rms = torch.rsqrt(x32.detach().pow(2).mean(dim=-1, keepdim=True) + eps)
    return weight * (x32 * rms).to(dtype)


# --- the rule set of an explanation ---------------------------------------------------------

ATTENTION_RULES = ("constant", "uniform")


@dataclass(frozen=True)
class RuleSet:
    """The constants and choices of the vision rules, recorded with every result
    (docs/method.md; docs/vision_families.md has which set is each family's default).

    - ``gamma_linear``: Gamma of the MLP linears and the classifier head(s) (paper: 0.05);
    - ``gamma_conv``: Gamma of the patch-embedding conv (paper: 100);
    - ``attention``: ``"constant"`` -- the paper's vision rule: the attention probabilities are
      constants (no relevance reaches Q, K or the softmax) and the relevance reaching V is
      scaled by ``v_scale``; or ``"uniform"`` -- the AttnLRP rule of the text engine: uniform
      rule on ``Q K^T`` and on ``A V`` (half to each operand), softmax plain gradient x input.
      A model with rotary position (EVA-02) needs ``"uniform"`` for its rotary sinks to receive
      relevance: under ``"constant"`` nothing reaches q and k, hence nothing reaches cos/sin;
    - ``v_scale`` (``"constant"`` only): 0.5 is the paper's (it keeps half of each attention
      branch's relevance, as the original code does); 1.0 keeps all of it (CP-LRP as LXT
      applies it to ViTs: the conservative variant). Under ``"uniform"`` V's share is the
      rule's half by construction, so ``v_scale`` must stay 0.5;
    - ``stabiliser``: the ``+eps * sign`` of the Gamma denominators (1e-6).
    """

    gamma_linear: float = 0.05
    gamma_conv: float = 100.0
    attention: str = "constant"
    v_scale: float = 0.5
    stabiliser: float = 1e-6

    def __post_init__(self):
        if self.attention not in ATTENTION_RULES:
            raise ValueError(f"attention rule {self.attention!r} is unknown; choose one of "
                             f"{ATTENTION_RULES}")
        if self.attention == "uniform" and self.v_scale != 0.5:
            raise ValueError("v_scale applies to the 'constant' attention rule only (the "
                             "uniform rule gives V half by construction); leave it at 0.5")
        for name in ("gamma_linear", "gamma_conv", "v_scale", "stabiliser"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def name(self) -> str:
        """``paper`` (the paper's vision set), ``conservative`` (V keeps all),
        ``uniform`` (AttnLRP attention) or ``custom``."""
        if self == PAPER_RULES:
            return "paper"
        if self == CONSERVATIVE_RULES:
            return "conservative"
        if self == UNIFORM_RULES:
            return "uniform"
        return "custom"

    def to_dict(self) -> dict:
        """JSON-ready record: the name and every constant."""
        return {"name": self.name, "gamma_linear": float(self.gamma_linear),
                "gamma_conv": float(self.gamma_conv), "attention": self.attention,
                "v_scale": float(self.v_scale), "stabiliser": float(self.stabiliser)}

    @classmethod
    def named(cls, name: str) -> "RuleSet":
        """``"paper"``, ``"conservative"`` or ``"uniform"``."""
        presets = {"paper": PAPER_RULES, "conservative": CONSERVATIVE_RULES,
                   "uniform": UNIFORM_RULES}
        if name not in presets:
            raise ValueError(f"unknown rule set {name!r}; choose one of {sorted(presets)}")
        return presets[name]


#: The paper's vision rules (its ``full_lrp_GammaLinear_POS_ENC_gammaConv``).
PAPER_RULES = RuleSet()
#: CP-LRP as LXT applies it to ViTs: attention constant, all of V's relevance kept.
CONSERVATIVE_RULES = RuleSet(v_scale=1.0)
#: AttnLRP attention (uniform on Q K^T and A V), the default for rotary (EVA-02) models.
UNIFORM_RULES = RuleSet(attention="uniform")
