"""PA-LRP on timm's own vision transformers: every family, tiny random models built from configs.

Per family: the patched forward is the stock forward; exit restores the model exactly (forward,
parameter gradients, no attribute left); R(E) + R(P) = R(z) at the position add; batched equals
one by one. Slow float64 references: DeiT (tests/test_explain_image.py) and EVA-02 (here), seeded
R(target) = 1; the engine seeds R(target) = logit, compared through ``conftest.unit_seed``.
"""
import pytest
import timm
import torch

from conftest import unit_seed
from lrp_reference import slow_palrp_deit, slow_palrp_eva
from palrp.modules import explain_image
from palrp.modules.engine import lrp
from palrp.modules.family import supported_line
from palrp.modules.patching import UnsupportedModelError
from palrp.modules.rules import CONSERVATIVE_RULES, PAPER_RULES, UNIFORM_RULES, RuleSet

TINY = dict(pretrained=False, embed_dim=24, depth=2, num_heads=3, num_classes=5)

#: family -> (timm name, overrides, image side fed to the model)
FAMILIES = {
    "deit": ("deit_tiny_patch16_224", dict(img_size=32, patch_size=8), 32),
    "vit_avg_fc_norm": ("vit_small_patch16_224",
                        dict(img_size=32, patch_size=8, global_pool="avg", class_token=False), 32),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8), 32),
    "deit3_layerscale": ("deit3_small_patch16_224", dict(img_size=32, patch_size=8), 32),
    # built at 42 px (3x3), fed 56 px (4x4): pos_embed resampled in the forward
    "dinov2_dynamic": ("vit_small_patch14_dinov2",
                       dict(img_size=42, patch_size=14, dynamic_img_size=True), 56),
    "clip_quickgelu": ("vit_base_patch16_clip_quickgelu_224", dict(img_size=32, patch_size=8), 32),
    "registers": ("vit_small_patch14_reg4_dinov2", dict(img_size=28, patch_size=14), 28),
    "qk_norm": ("vit_small_patch16_224", dict(img_size=32, patch_size=8, qk_norm=True), 32),
    "eva02": ("eva02_tiny_patch14_224", dict(img_size=28, patch_size=14), 28),
    "eva02_swiglu_scale_mlp": ("eva02_tiny_patch14_224",
                               dict(img_size=28, patch_size=14, scale_mlp=True), 28),
}


def build(name, seed=0, **overrides):
    """A random timm model with every parameter perturbed (LayerScale, biases and norms far
    from their initial values, so that every rule is exercised), in eval mode."""
    torch.manual_seed(seed)
    model = timm.create_model(name, **{**TINY, **overrides}).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    name, overrides, side = FAMILIES[request.param]
    return request.param, build(name, **overrides), side


def _module_state(model):
    return [(name, sorted(vars(m)), m.training) for name, m in model.named_modules()]


def test_patched_forward_is_the_stock_forward_and_exit_restores_exactly(family):
    key, model, side = family
    torch.manual_seed(1)
    images = torch.randn(2, 3, side, side)
    model.train()                                     # the rules run the eval-mode model
    before_state = _module_state(model)
    model.eval()
    with torch.no_grad():
        stock = model(images)
    model.zero_grad()
    model(images).square().sum().backward()
    stock_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.train()
    with lrp(model) as state:
        with torch.no_grad():
            assert all(not m.training for m in model.modules())
            torch.testing.assert_close(model(images), stock, rtol=0, atol=0)
        assert state.parts[0].source.labels[0] == "pos_embed"
    assert _module_state(model) == before_state
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images), stock)
    model.zero_grad()
    model(images).square().sum().backward()
    for name, param in model.named_parameters():
        if name in stock_grads:
            assert torch.equal(param.grad, stock_grads[name]), name
    model.zero_grad()


def test_position_add_conserves_exactly(family):
    """R(E) + R(P) = R(z) per element at the patch tokens, z = E + P the tensor after the add
    (float64; E is made a leaf at the patch-embedding output)."""
    key, model, side = family
    model = model.double()
    try:
        torch.manual_seed(2)
        images = torch.randn(2, 3, side, side, dtype=torch.float64)
        captured = {}

        def leaf_embedding(module, inputs, output):
            captured["E"] = output.detach().requires_grad_(True)
            return captured["E"]

        def keep_z(module, inputs, output):
            output.retain_grad()
            captured["z"] = output

        handles = [model.patch_embed.register_forward_hook(leaf_embedding),
                   model.pos_drop.register_forward_hook(keep_z)]
        try:
            with lrp(model) as state:
                logits = model(images)
                seed = torch.zeros_like(logits)
                seed[:, 1] = 1.0 / logits[:, 1].detach()
                logits.backward(seed)
                (pos,) = state.parts[0].source.leaves()[:1]
        finally:
            for handle in handles:
                handle.remove()
        emb, z = captured["E"], captured["z"]
        patches = emb.grad.reshape(2, -1, emb.shape[-1]).shape[1]
        rel_e = (emb.detach() * emb.grad).reshape(2, patches, -1)
        rel_p = (pos.detach() * pos.grad)[:, -patches:]
        rel_z = (z.detach() * z.grad)[:, -patches:]
        torch.testing.assert_close(rel_e + rel_p, rel_z, rtol=1e-10, atol=1e-14)
        assert rel_p.abs().sum() > 0
    finally:
        model.float()


def test_batched_equals_one_by_one(family):
    key, model, side = family
    torch.manual_seed(3)
    images = torch.randn(3, 3, side, side)
    batched = explain_image(model, images)
    stream = batched.streams["pixel_values"]
    view = unit_seed(batched)
    prefix = stream.prefix
    grid = (side // model.patch_embed.patch_size[0]) ** 2
    assert stream.sinks.shape[0] == 3 and stream.sinks.shape[2] == prefix + grid
    assert batched.combined().shape == (3, side, side)
    torch.testing.assert_close(stream.positional, stream.sinks[:, :, prefix:].sum(1))
    for n in range(3):
        one = explain_image(model, images[n:n + 1])
        single = unit_seed(one)
        torch.testing.assert_close(view.pixel[n], single.pixel[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(view.positional[n], single.positional[0], rtol=1e-4,
                                   atol=1e-6)
        torch.testing.assert_close(batched.logits[n], one.logits[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 5e-6)])
def test_constant_attention_flash_backward_equals_the_explicit_one(family, dtype, tol,
                                                                    monkeypatch):
    """Under the constant attention rule, V's gradient on CPU flash attention is one more flash
    call (adapters.timm._transposed_attention); with the math backend forced it is the explicit
    ``A^T g``. The maps agree to ``tol`` of their largest entry, on every family (in float32,
    switching only the forward between the two stock kernels already moves them by up to
    1.4e-6 of it)."""
    import copy

    from torch.nn.attention import SDPBackend, sdpa_kernel

    import palrp.modules.adapters.timm as vit_lrp
    key, model, side = family
    model = copy.deepcopy(model).to(dtype)
    torch.manual_seed(7)
    images = torch.randn(2, 3, side, side, dtype=dtype)
    calls = []
    flash = vit_lrp._transposed_attention
    monkeypatch.setattr(vit_lrp, "_transposed_attention",
                        lambda *args: calls.append(1) or flash(*args))
    target = torch.tensor([1, 2])
    fused = explain_image(model, images, target=target, rules=PAPER_RULES)
    assert len(calls) == len(model.blocks)                    # every block took the flash path
    with sdpa_kernel(SDPBackend.MATH):
        explicit = explain_image(model, images, target=target, rules=PAPER_RULES)
    assert len(calls) == len(model.blocks)                    # and none here
    fused, explicit = unit_seed(fused), unit_seed(explicit)
    for got, want in ((fused.pixel, explicit.pixel), (fused.positional, explicit.positional)):
        peak = want.abs().max()
        assert peak > 0
        assert (got - want).abs().max() <= tol * peak, key


def test_stock_logits_and_prefix_tokens_reported():
    model = build("vit_small_patch14_reg4_dinov2", img_size=28, patch_size=14)
    images = torch.randn(2, 3, 28, 28)
    result = explain_image(model, images)
    torch.testing.assert_close(result.logits, model(images).detach(), rtol=0, atol=0)
    stream = result.streams["pixel_values"]
    assert stream.prefix == 5
    # no_embed_class: pos_embed skips the class and register tokens, which get no PE relevance
    assert torch.equal(stream.sinks[:, :, :5], torch.zeros(2, 1, 5))
    deit = build("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8)
    result = explain_image(deit, torch.randn(2, 3, 32, 32))
    stream = result.streams["pixel_values"]
    assert stream.prefix == 2
    assert stream.sinks[:, 0, :2].abs().sum() > 0          # class and distillation tokens


def test_deit_paper_and_conservative_rules_equal_the_slow_reference():
    model = build("deit_tiny_patch16_224", seed=4, img_size=32, patch_size=8).double()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for rules, v_scale in ((PAPER_RULES, 0.5), (CONSERVATIVE_RULES, 1.0)):
        result = explain_image(model, images, target=torch.tensor([1, 2]), rules=rules)
        assert result.families == ("vit",) and result.rules["vit"] == rules
        view = unit_seed(result)
        for n in range(2):
            pixel, pe = slow_palrp_deit(model, images[n:n + 1], int(result.target[n]),
                                        v_scale=v_scale)
            torch.testing.assert_close(view.pixel[n], pixel, rtol=1e-7, atol=1e-10)
            torch.testing.assert_close(view.positional[n, 0, 1:], pe, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("depth", [1, 2])
def test_eva02_equals_the_slow_reference(depth):
    model = build("eva02_tiny_patch14_224", seed=5, img_size=28, patch_size=14,
                  depth=depth).double()
    images = torch.randn(2, 3, 28, 28, dtype=torch.float64)
    result = explain_image(model, images, target=torch.tensor([0, 3]))
    assert result.families == ("eva",)
    assert result.rules["eva"] == UNIFORM_RULES                   # Eva's default
    labels = ["pos_embed"] + [f"{kind}_{b}" for b in range(depth) for kind in ("cos", "sin")]
    assert list(result.streams["pixel_values"].labels) == labels
    view = unit_seed(result)
    for n in range(2):
        pixel, pos, rope = slow_palrp_eva(model, images[n:n + 1], int(result.target[n]))
        torch.testing.assert_close(view.pixel[n], pixel, rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(view.positional[n, 0], pos, rtol=1e-7, atol=1e-12)
        for b, (cos, sin) in enumerate(rope):
            # rotary sinks: patch tokens only, the class token's entries are 0
            assert view.positional[n, 1 + 2 * b, 0] == 0
            torch.testing.assert_close(view.positional[n, 1 + 2 * b, 1:], cos,
                                       rtol=1e-7, atol=1e-12)
            torch.testing.assert_close(view.positional[n, 2 + 2 * b, 1:], sin,
                                       rtol=1e-7, atol=1e-12)
            assert cos.abs().sum() > 0 and sin.abs().sum() > 0


def test_eva02_under_the_constant_attention_rule_gives_rotary_sinks_nothing():
    model = build("eva02_tiny_patch14_224", img_size=28, patch_size=14)
    result = explain_image(model, torch.randn(1, 3, 28, 28), rules="paper")
    assert result.rules["eva"] == PAPER_RULES
    sinks = result.streams["pixel_values"].sinks
    assert torch.equal(sinks[:, 1:], torch.zeros_like(sinks[:, 1:]))
    assert sinks[:, 0].abs().sum() > 0


def test_rule_set_is_recorded_and_validated():
    model = build("deit_tiny_patch16_224", img_size=32, patch_size=8)
    result = explain_image(model, torch.randn(1, 3, 32, 32), rules="conservative")
    record = result.record()
    assert record["families"] == ["vit"]
    assert record["rules"] == {"vit": {"name": "conservative", "gamma_linear": 0.05,
                                       "gamma_conv": 100.0, "attention": "constant",
                                       "v_scale": 1.0, "stabiliser": 1e-6}}
    image = record["streams"]["pixel_values"]
    assert image["positional_sinks"] == ["pos_embed"] and image["prefix_tokens"] == 1
    assert RuleSet(gamma_linear=0.1).name == "custom"
    with pytest.raises(ValueError, match="v_scale applies to the 'constant'"):
        RuleSet(attention="uniform", v_scale=1.0)
    with pytest.raises(ValueError, match="unknown; choose one of"):
        RuleSet(attention="softmax")
    with pytest.raises(ValueError, match="unknown rule set"):
        explain_image(model, torch.randn(1, 3, 32, 32), rules="zennit")


@pytest.mark.parametrize("make, match", [
    (lambda: timm.create_model("pvt_v2_b0", pretrained=False, num_classes=3),
     "PyramidVisionTransformerV2 is not a model the engine explains; supported families: vit "),
    (lambda: timm.create_model("convnext_atto", pretrained=False, num_classes=3),
     "ConvNeXt is not a model the engine explains; supported families: vit "),
    (lambda: build("vit_small_patch16_224", img_size=32, patch_size=8, global_pool="prr"),
     "pools with a AttentionPoolPrr head"),
    (lambda: build("vit_small_patch16_224", img_size=32, patch_size=8, num_classes=0),
     "without a classifier head"),
])
def test_unsupported_models_get_one_line(make, match):
    model = make()
    with pytest.raises(UnsupportedModelError, match=match) as info:
        with lrp(model):
            pass
    assert "\n" not in str(info.value)
    assert all("forward" not in vars(m) for m in model.modules())


def test_unknown_module_inside_a_covered_class_is_refused():
    model = build("vit_small_patch16_224", img_size=32, patch_size=8)
    model.blocks[1].mlp.act = torch.nn.Tanh()
    with pytest.raises(UnsupportedModelError, match=r"does not cover Tanh \(at blocks.1.mlp.act\)"):
        explain_image(model, torch.randn(1, 3, 32, 32))
    assert "forward" not in vars(model.blocks[0].mlp.fc1)      # nothing was left patched
    assert supported_line().startswith("vit (")


def test_patch_embedding_gamma_on_patches_equals_the_slow_formula_with_an_uncovered_edge():
    """The patchify fast path of rules.gamma_conv2d (kernel == stride): an 18 px image with
    4 px patches leaves a 2 px edge the conv never sees, which gets no relevance."""
    from lrp_reference import slow_gamma_conv
    from palrp.modules.rules import gamma_conv2d
    torch.manual_seed(6)
    x = torch.randn(2, 3, 18, 18, dtype=torch.float64)
    weight, bias = torch.randn(5, 3, 4, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    z = gamma_conv2d(leaf, weight, bias, 100.0, stride=4)
    relevance = torch.randn_like(z)
    z.backward(relevance / z.detach())
    fast = leaf.detach() * leaf.grad
    slow = slow_gamma_conv(x, weight, bias, relevance, 100.0, 4, 0)
    torch.testing.assert_close(fast, slow, rtol=1e-8, atol=1e-11)
    assert torch.equal(fast[..., 16:, :], torch.zeros_like(fast[..., 16:, :]))
