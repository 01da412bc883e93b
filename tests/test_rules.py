"""Each custom rule of modules/rules.py against a slow, explicit formula (docs/method.md, section 2)."""
import pytest
import torch
import torch.nn.functional as F

from lrp_reference import slow_gamma_conv, slow_gamma_linear
from palrp.modules.rules import (gamma_conv2d, gamma_linear, identity_act, layer_norm_const_std,
                           rms_norm_const, scale_grad, uniform_product)



@pytest.fixture(autouse=True)
def float64():
    """The slow formulas are compared in float64; the default is restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _fast_relevance(fn, x, relevance, *args):
    """Relevance at x when ``relevance`` is placed at the output: x * grad with g = R / z."""
    x = x.clone().requires_grad_(True)
    z = fn(x, *args)
    safe = torch.where(z == 0, torch.ones_like(z), z)
    grad_out = torch.where(z == 0, torch.zeros_like(z), relevance / safe)
    (grad,) = torch.autograd.grad(z, x, grad_out)
    return x.detach() * grad


@pytest.mark.parametrize("gamma", [0.05, 0.25, 100.0])
def test_gamma_linear_matches_slow_formula(gamma):
    torch.manual_seed(0)
    x = torch.randn(5, 7)
    x[0, :3] = 0.0                                    # x == 0 entries
    weight, bias = torch.randn(6, 7), torch.randn(6)
    relevance = torch.randn(5, 6)
    fast = _fast_relevance(lambda t: gamma_linear(t, weight, bias, gamma), x, relevance)
    slow = slow_gamma_linear(x, weight, bias, relevance, gamma)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-12)
    assert torch.count_nonzero(fast[0, :3]) == 0


def test_gamma_linear_zero_output_gets_no_relevance_and_stabiliser():
    # Output 0 exactly (z = 0): neither S+ nor S- applies; the input gets nothing from it.
    x = torch.tensor([[1.0, -1.0]])
    weight = torch.tensor([[1.0, 1.0], [2.0, 0.5]])
    bias = torch.tensor([0.0, 0.0])
    relevance = torch.tensor([[5.0, 1.0]])
    fast = _fast_relevance(lambda t: gamma_linear(t, weight, bias, 0.05), x, relevance)
    slow = slow_gamma_linear(x, weight, bias, relevance, 0.05)
    torch.testing.assert_close(fast, slow)
    # Only output 1 (z = 1.5) carries relevance: D+ = (1.05*2*1 + 0.5*(-1)) = 1.6 (+1e-6).
    d_pos = 2.1 - 0.5 + 1e-6
    expected = torch.tensor([[1.0 * 2.1 / d_pos, -1.0 * 0.5 / d_pos]])
    torch.testing.assert_close(fast, expected)


def test_gamma_linear_batched_leading_dims_and_no_weight_grad():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, requires_grad=True)
    weight = torch.randn(5, 4, requires_grad=True)
    bias = torch.randn(5, requires_grad=True)
    z = gamma_linear(x, weight, bias, 0.05)
    torch.testing.assert_close(z, F.linear(x, weight, bias))
    relevance = torch.randn(2, 3, 5)
    z.backward(relevance / z.detach())
    slow = slow_gamma_linear(x.detach().reshape(6, 4), weight.detach(), bias.detach(),
                             relevance.reshape(6, 5), 0.05)
    torch.testing.assert_close((x.detach() * x.grad).reshape(6, 4), slow)
    # the rule's backward gives the weight and the bias no gradient at all (not even zeros)
    assert weight.grad is None and bias.grad is None
    w_conv = torch.randn(3, 2, 2, 2, requires_grad=True)
    b_conv = torch.randn(3, requires_grad=True)
    images = torch.randn(1, 2, 4, 4, requires_grad=True)
    gamma_conv2d(images, w_conv, b_conv, 100.0, stride=2).sum().backward()
    assert images.grad is not None and w_conv.grad is None and b_conv.grad is None


@pytest.mark.parametrize("stride,padding", [(4, 0), (2, 1)])
def test_gamma_conv_matches_slow_formula(stride, padding):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 8, 8)
    x[0, 0, :2, :2] = 0.0
    weight, bias = torch.randn(5, 3, 4, 4), torch.randn(5)
    z = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    relevance = torch.randn_like(z)
    fast = _fast_relevance(
        lambda t: gamma_conv2d(t, weight, bias, 100.0, stride=stride, padding=padding), x,
        relevance)
    slow = slow_gamma_conv(x, weight, bias, relevance, 100.0, stride, padding)
    torch.testing.assert_close(fast, slow, rtol=1e-8, atol=1e-11)


def test_identity_rule_passes_relevance_unchanged():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 4.0])
    relevance = torch.tensor([1.0, -2.0, 3.0, 0.5, 7.0])
    for fn in (F.gelu, F.silu):
        fast = _fast_relevance(lambda t: identity_act(t, fn), x, relevance)
        expected = torch.where(fn(x) == 0, torch.zeros_like(x), relevance)
        torch.testing.assert_close(fast, expected)


def test_scale_grad_and_uniform_rule():
    torch.manual_seed(3)
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(4, 2, requires_grad=True)
    y = uniform_product(a, b, torch.matmul)
    torch.testing.assert_close(y, a @ b)
    relevance = torch.randn(3, 2)
    ga, gb = torch.autograd.grad(y, (a, b), relevance / y)
    # each operand receives exactly half of the output relevance
    torch.testing.assert_close((a * ga).sum(), 0.5 * relevance.sum())
    torch.testing.assert_close((b * gb).sum(), 0.5 * relevance.sum())
    v = torch.randn(5, requires_grad=True)
    (gv,) = torch.autograd.grad(scale_grad(v, 0.5).sum(), v)
    torch.testing.assert_close(gv, torch.full((5,), 0.5))


def test_norms_forward_equal_stock_and_statistic_is_constant():
    torch.manual_seed(4)
    x = torch.randn(2, 3, 8, requires_grad=True)
    w, b = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(layer_norm_const_std(x, w, b, 1e-6),
                               F.layer_norm(x, (8,), w, b, 1e-6))
    # With std constant, LayerNorm is affine in x: the epsilon rule on an affine map.
    y = layer_norm_const_std(x, w, b, 1e-6)
    relevance = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, x, relevance / y)
    xd = x.detach()
    std = (xd.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
    centring = torch.eye(8) - torch.full((8, 8), 1 / 8)
    expected = xd * (((relevance / y.detach()) * w / std) @ centring)
    torch.testing.assert_close(xd * g, expected)
    # RMSNorm with constant RMS is the identity rule: R_in = R_out - 0 (no bias).
    yr = rms_norm_const(x, w, 1e-6)
    (gr,) = torch.autograd.grad(yr, x, relevance / yr)
    torch.testing.assert_close(xd * gr, relevance)
