"""Every baseline on every timm family (tiny random models from configs): attention recorded from
the stock attention and restored, the readout (class-token row / mean over patch rows) and the
prefix tokens taken from the model, Chefer's rules generalised (LayerScale, prefix tokens,
qk_norm, distillation head, average pool) and refused where undefined, batched == one by one."""
import pytest
import timm
import torch

from palrp.loaders import vision_model as vm
from palrp.modules.patching import UnsupportedModelError
from palrp.baselines import explain_batch
from palrp.baselines.attention import (raw_attention, raw_attention_from, readout_weights,
                                 record_attention, rollout, rollout_from_attention,
                                 upsample_grid)
from palrp.baselines.chefer_lrp import (_readout_relevance, attention_relevance, block_relevance,
                                  chefer_attention_relevance, mlp_relevance, residual_relevance)

BASELINES = ["rollout", "raw_attn", "attn_gradcam", "partial_lrp", "transformer_attribution",
             "grad_x_input", "integrated_gradients"]
CHEFER = ["partial_lrp", "transformer_attribution"]

SMALL = dict(embed_dim=24, num_heads=3, depth=2, num_classes=5)
FAMILIES = {
    # name: (timm name, create kwargs, image size)
    "vit_cls": ("vit_small_patch16_224", dict(img_size=32, patch_size=8, **SMALL), 32),
    "vit_avg_fc_norm": ("vit_small_patch16_224", dict(img_size=32, patch_size=8, class_token=False,
                                                      global_pool="avg", **SMALL), 32),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, **SMALL), 32),
    "deit3_layerscale": ("deit3_small_patch16_224", dict(img_size=32, patch_size=8, **SMALL), 32),
    "dinov2_dynamic": ("vit_small_patch14_dinov2",
                       dict(img_size=28, dynamic_img_size=True, **SMALL), (42, 56)),
    "clip_quickgelu": ("vit_base_patch16_clip_quickgelu_224", dict(img_size=32, patch_size=8, **SMALL), 32),
    "reg4_dinov2": ("vit_small_patch14_reg4_dinov2", dict(img_size=28, **SMALL), 28),
    "qk_norm": ("vit_small_patch16_224", dict(img_size=32, patch_size=8, qk_norm=True, **SMALL), 32),
    "eva02": ("eva02_tiny_patch14_224", dict(img_size=28, depth=2, num_classes=5), 28),
}


def build(family, dtype=torch.float64):
    name, kwargs, _ = FAMILIES[family]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs)
    with torch.no_grad():   # non-trivial biases, norms, LayerScale and prefix tokens
        for pname, param in model.named_parameters():
            if pname.endswith("bias") or "norm" in pname or pname.endswith("gamma") \
                    or "token" in pname:
                param.add_(0.2 * torch.randn_like(param))
    return model.eval().to(dtype)


def images_for(family, batch=2, dtype=torch.float64):
    size = FAMILIES[family][2]
    size = (size, size) if isinstance(size, int) else size
    torch.manual_seed(1)
    return torch.randn(batch, 3, *size, dtype=dtype)


@pytest.fixture(scope="module")
def models():
    return {family: build(family) for family in FAMILIES}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_baseline_batched_equals_one_by_one(models, family):
    model, images = models[family], images_for(family)
    names = [n for n in BASELINES if family != "eva02" or n not in CHEFER]
    nonzero = dict.fromkeys(names, False)
    # every class as the target: attention GradCAM is clamped at 0 and may vanish for some
    for target in range(5):
        batched = explain_batch(model, images, names, target=target)
        singles = [explain_batch(model, images[n:n + 1], names, target=target)
                   for n in range(len(images))]
        for name in names:
            assert batched[name].shape == (len(images), *images.shape[-2:]), name
            assert torch.isfinite(batched[name]).all(), name
            nonzero[name] |= bool(batched[name].abs().sum() > 0)
            for n in range(len(images)):
                torch.testing.assert_close(batched[name][n], singles[n][name][0],
                                           rtol=1e-8, atol=1e-11, msg=f"{family} {name}")
    assert all(nonzero.values()), nonzero


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_recording_is_the_stock_attention_and_restores(models, family):
    model, images = models[family], images_for(family)
    with torch.no_grad():
        stock = model(images)
    fused = [block.attn.fused_attn for block in model.blocks]
    logits, _, probs, grads = record_attention(model, images, gradients=True)
    torch.testing.assert_close(logits, stock, rtol=1e-10, atol=1e-10)
    tokens = vm.num_prefix_tokens(model) + vm.grid_size(model, images)[0] * vm.grid_size(model, images)[1]
    heads = model.blocks[0].attn.num_heads
    for p, g in zip(probs, grads):
        assert p.shape == g.shape == (len(images), heads, tokens, tokens)
        torch.testing.assert_close(p.sum(-1), torch.ones_like(p.sum(-1)))
    # restored: no instance attribute left, the stock forward and its gradients unchanged
    assert [block.attn.fused_attn for block in model.blocks] == fused
    assert all("forward" not in vars(block.attn.attn_drop) for block in model.blocks)
    with torch.no_grad():
        torch.testing.assert_close(model(images), stock, rtol=0, atol=0)


def test_recorded_probabilities_equal_a_written_out_attention(models):
    """qk_norm: the recorded probabilities are softmax(q_norm(q) k_norm(k)^T * scale) of the
    block's input, computed here from the block's weights."""
    model, images = models["qk_norm"], images_for("qk_norm")
    inputs = []
    handle = model.blocks[1].register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    _, _, probs, _ = record_attention(model, images)
    handle.remove()
    attn, block = model.blocks[1].attn, model.blocks[1]
    h = block.norm1(inputs[0])
    q, k, _ = attn.qkv(h).reshape(2, -1, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    expected = torch.softmax(attn.q_norm(q) @ attn.k_norm(k).transpose(-2, -1) * attn.scale, -1)
    torch.testing.assert_close(probs[1], expected.detach())


@pytest.mark.parametrize("family", ["reg4_dinov2", "deit_distilled", "vit_avg_fc_norm", "eva02"])
def test_readout_row_and_prefix_columns(models, family):
    """Rollout and raw attention read the class-token row (or the mean over the patch rows of
    an average-pool model) and drop every prefix column."""
    model, images = models[family], images_for(family)
    _, _, probs, _ = record_attention(model, images)
    prefix = vm.num_prefix_tokens(model)
    eye = torch.eye(probs[0].shape[-1], dtype=probs[0].dtype)
    joint = eye
    for p in probs:
        a = p.mean(1) + eye
        joint = (a / a.sum(-1, keepdim=True)) @ joint
    if vm.has_class_token(model) and model.global_pool == "token":
        row, last = joint[:, 0, prefix:], probs[-1].mean(1)[:, 0, prefix:]
    else:
        row, last = joint[:, prefix:, prefix:].mean(1), probs[-1].mean(1)[:, prefix:, prefix:].mean(1)
    grid, patch = vm.grid_size(model, images), vm.patch_size(model)
    up = lambda r: upsample_grid(r.reshape(-1, *grid), patch, tuple(images.shape[-2:]))
    torch.testing.assert_close(rollout(model, images), up(row))
    torch.testing.assert_close(raw_attention(model, images), up(last))
    weights = readout_weights(model, probs[0].shape[-1], dtype=probs[0].dtype)
    torch.testing.assert_close(rollout_from_attention(probs, weights, prefix), row)
    torch.testing.assert_close(raw_attention_from(probs[-1], weights, prefix), last)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"eva02"}))
def test_chefer_readout_conserves_the_seed(models, family):
    """Through the classifier(s) and the pooling the seeded relevance 1 arrives whole at the
    final tokens: at the class token (and the distillation token, by the add rule over the two
    heads), or spread over the averaged patch tokens."""
    model, images = models[family], images_for(family)
    tokens, head_in = [], [[], []]
    handles = [model.norm.register_forward_hook(lambda _m, _a, out: tokens.append(out)),
               model.head.register_forward_pre_hook(lambda _m, a: head_in[0].append(a[0]))]
    if hasattr(model, "head_dist"):
        handles.append(model.head_dist.register_forward_pre_hook(lambda _m, a: head_in[1].append(a[0])))
    with torch.no_grad():
        logits = model(images)
    for handle in handles:
        handle.remove()
    target = logits.argmax(-1)
    relevance = _readout_relevance(model, tokens[0], [h for h in head_in if h], logits, target)
    torch.testing.assert_close(relevance.sum((1, 2)), torch.ones(len(images), dtype=relevance.dtype))
    prefix = vm.num_prefix_tokens(model)
    if model.global_pool == "token":
        used = 2 if family == "deit_distilled" else 1
        assert relevance[:, used:].abs().sum() == 0 and relevance[:, :used].abs().sum() > 0
    else:
        assert relevance[:, :prefix].abs().sum() == 0


def test_chefer_block_with_layerscale_and_qk_norm_by_the_rules():
    """A block with LayerScale and qk_norm: the residual rule sees the branch after LayerScale,
    LayerScale / q_norm / k_norm are identity rules (composition written out here)."""
    torch.manual_seed(2)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32,
                              patch_size=8, qk_norm=True, init_values=0.5, **SMALL).double()
    block = model.blocks[0]
    with torch.no_grad():
        block.ls1.gamma.uniform_(-1, 1), block.ls2.gamma.uniform_(-1, 1)
        block.attn.q_norm.weight.uniform_(0.5, 2), block.attn.k_norm.bias.normal_()
    x, relevance = torch.randn(2, 17, 24, dtype=torch.float64), torch.randn(2, 17, 24, dtype=torch.float64)
    with torch.no_grad():
        got_x, got_a = block_relevance(block, x, relevance)
        attn_out = block.ls1(block.attn(block.norm1(x)))
        mid = x + attn_out
        r_mid, r_mlp = residual_relevance(mid, block.ls2(block.mlp(block.norm2(mid))), relevance)
        r_mid = r_mid + mlp_relevance(block.mlp, block.norm2(mid), r_mlp)
        r_x, r_attn = residual_relevance(x, attn_out, r_mid)
        r_h1, r_a = attention_relevance(block.attn, block.norm1(x), r_attn)
        # the probabilities the rule used are the stock (qk-normed) ones
        _, _, probs, _ = record_attention(model, torch.randn(1, 3, 32, 32, dtype=torch.float64))
    torch.testing.assert_close(got_a, r_a)
    torch.testing.assert_close(got_x, r_x + r_h1)
    assert probs[0].shape[-1] == 17


def test_unsupported_models_are_refused_with_one_line(models):
    images = images_for("eva02")
    for name in CHEFER:
        with pytest.raises(UnsupportedModelError, match=r"not defined for a Eva; supported "
                                                        r"families: vit \(timm VisionTransformer"):
            explain_batch(models["eva02"], images, [name])
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=28,
                             embed_dim=12, depths=(1,), num_heads=(1,), window_size=7).eval()
    with pytest.raises(UnsupportedModelError, match="the attention baselines: not defined for a "
                                                    "SwinTransformer; supported families: vit"):
        record_attention(swin, torch.randn(1, 3, 28, 28))
    pooled = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32,
                               patch_size=8, global_pool="map", **SMALL).eval()
    with pytest.raises(ValueError, match="pools with 'map'"):
        rollout(pooled, torch.randn(1, 3, 32, 32))
    # Chefer's LRP reads the class-token row or the patch mean, as the attention baselines do
    with pytest.raises(ValueError, match="pools with 'map'"):
        chefer_attention_relevance(pooled, torch.randn(1, 3, 32, 32))


def test_integrated_gradients_baseline_uses_the_model_mean_std(models):
    """The black image in the model's own normalisation (CLIP's mean/std here): completeness
    against f(x) - f(black)."""
    from palrp.baselines.attribution import integrated_gradients
    model = models["clip_quickgelu"]
    assert vm.data_config(model)["mean"] != pytest.approx((0.485, 0.456, 0.406))
    images = vm.normalize(model, torch.rand(2, 3, 32, 32, dtype=torch.float64))
    black = vm.normalize(model, torch.zeros_like(images))
    with torch.no_grad():
        target = model(images).argmax(-1)
        gap = (model(images) - model(black)).gather(1, target[:, None])[:, 0]
    got = integrated_gradients(model, images, target, steps=64).sum((1, 2))
    torch.testing.assert_close(got, gap, rtol=2e-3, atol=1e-6)
