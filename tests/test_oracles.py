"""Peer libraries as oracles: zennit's generalized Gamma rule for modules/rules.py, Captum's
IntegratedGradients and InputXGradient for the gradient baselines (baselines/attribution.py).

zennit 0.5.1 and captum 0.9.0 are test dependencies (requirements-test.txt). zennit's rule is a
backward hook that maps the output relevance (the incoming gradient) to the input relevance; ours
returns a gradient g with ``x * g`` the input relevance when ``R / z`` is the incoming gradient.
"""
import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients
from zennit.rules import Gamma

from palrp.baselines.attribution import IG_STEPS
from palrp.baselines.registry import explain_batch
from conftest import make_timm_vit
from palrp.loaders import vision_model
from palrp.loaders.checkpoints import load_deit
from palrp.modules.rules import gamma_conv2d, gamma_linear

STABILIZER = 1e-6


def _zennit_relevance(layer, x, relevance, gamma):
    handle = Gamma(gamma=gamma, stabilizer=STABILIZER).register(layer)
    try:
        x = x.clone().requires_grad_(True)
        out = layer(x)
        (rel,) = torch.autograd.grad(out, x, relevance)
    finally:
        handle.remove()
    return rel


def _ours(fn, x, relevance):
    x = x.clone().requires_grad_(True)
    z = fn(x)
    (grad,) = torch.autograd.grad(z, x, relevance / z.detach())
    return x.detach() * grad


def _close_relative(ours, oracle, tol):
    error = float((ours - oracle).abs().max() / oracle.abs().max())
    assert error < tol, f"max |difference| / max |relevance| = {error:.3g}"


@pytest.mark.parametrize("gamma", [0.05, 100.0])
def test_gamma_linear_equals_zennit(gamma):
    torch.manual_seed(0)
    layer = torch.nn.Linear(7, 6).double()
    x = torch.randn(5, 7, dtype=torch.float64)
    x[0, :3] = 0.0
    relevance = torch.randn(5, 6, dtype=torch.float64)
    ours = _ours(lambda t: gamma_linear(t, layer.weight.detach(), layer.bias.detach(), gamma,
                                        STABILIZER), x, relevance)
    _close_relative(ours, _zennit_relevance(layer, x, relevance, gamma), 1e-14)


@pytest.mark.parametrize("gamma", [0.05, 100.0])
@pytest.mark.parametrize("stride,padding", [(4, 0), (2, 1)])
def test_gamma_conv2d_equals_zennit(gamma, stride, padding):
    torch.manual_seed(1)
    layer = torch.nn.Conv2d(3, 5, 4, stride=stride, padding=padding).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        relevance = torch.randn_like(layer(x))
    ours = _ours(lambda t: gamma_conv2d(t, layer.weight.detach(), layer.bias.detach(), gamma,
                                        STABILIZER, stride=stride, padding=padding), x, relevance)
    _close_relative(ours, _zennit_relevance(layer, x, relevance, gamma), 1e-14)


@pytest.fixture(scope="module")
def deit():
    model = load_deit(make_timm_vit(img_size=32, patch_size=8, seed=2).state_dict(), num_heads=3)
    return model.double().eval()


def _plain(model):
    """The model as a plain function of the images (what Captum differentiates)."""
    return lambda images: model(images)


def test_gradient_baselines_equal_captum(deit):
    torch.manual_seed(3)
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([0, 2, 4])
    ours = explain_batch(deit, images, ["grad_x_input", "integrated_gradients"], target)
    leaf = images.clone().requires_grad_(True)
    ixg = InputXGradient(_plain(deit)).attribute(leaf, target=target).sum(dim=1)
    torch.testing.assert_close(ours["grad_x_input"], ixg, rtol=1e-7, atol=1e-9)
    black = vision_model.normalize(deit, torch.zeros_like(images))
    ig = IntegratedGradients(_plain(deit)).attribute(
        leaf, baselines=black, target=target, n_steps=IG_STEPS, method="riemann_middle")
    torch.testing.assert_close(ours["integrated_gradients"], ig.sum(dim=1), rtol=1e-7, atol=1e-9)
