"""Vision baselines and the method registry (docs/method.md, section 6): hand-made cases with known
answers, Chefer's rules on hand-computable tensors, partial LRP and Transformer Attribution
against a per-sample reference written here in the style of the original (autograd ``gradprop``
per layer, unbatched, a loop over heads), gradient checks, batched == one by one. The models are
timm's own VisionTransformer (tests/test_baselines_families.py covers the other families)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from timm.layers import Mlp
from timm.models.vision_transformer import Attention

from conftest import make_timm_vit
from palrp.loaders import vision_model
from palrp.modules import explain
from palrp.modules.positional import VISION_PAPER, combine
from palrp.baselines import METHODS, available_methods, display_name, explain_batch
from palrp.baselines import registry
from palrp.baselines.attention import (attention_gradcam, attention_gradcam_from, raw_attention,
                                 raw_attention_from, record_attention, rollout,
                                 rollout_from_attention, upsample_grid)
from palrp.baselines.attribution import (gradient_x_input, integrated_gradients, partial_lrp,
                                   partial_lrp_grid, transformer_attribution,
                                   transformer_attribution_grid)
from palrp.baselines.chefer_lrp import (attention_relevance, block_relevance,
                                  chefer_attention_relevance, linear_relevance, mlp_relevance,
                                  product_relevance, residual_relevance)

D64 = torch.float64


@pytest.fixture(scope="module")
def deit64():
    """A tiny float64 timm DeiT: 32 px, patch 8 (4x4 grid), width 24, 3 heads, 2 blocks, 5 classes."""
    return make_timm_vit(seed=5).double()


def _restored(model):
    """No patch left on the attention modules after a recording."""
    return all("forward" not in vars(block.attn.attn_drop) and "fused_attn" in vars(block.attn)
               for block in model.blocks)


@pytest.fixture(scope="module")
def images64():
    torch.manual_seed(11)
    return torch.randn(3, 3, 32, 32, dtype=D64)


# --- attention baselines on given matrices --------------------------------------------------

def test_rollout_single_block_by_hand():
    # one block, one head, CLS + 2 patches; CLS row of A + I is [1.5, .25, .25] -> / 2
    probs = torch.tensor([[[[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]]])
    torch.testing.assert_close(rollout_from_attention([probs]), torch.tensor([[0.125, 0.125]]))


def test_rollout_on_given_attention_matrices_matches_numpy():
    rng = np.random.default_rng(0)
    batch, heads, tokens, depth = 2, 3, 5, 3
    logits = rng.normal(size=(depth, batch, heads, tokens, tokens))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = np.zeros((batch, tokens - 1))
    for b in range(batch):
        joint = np.eye(tokens)
        for layer in range(depth):                       # from the first block up
            a = probs[layer, b].mean(0) + np.eye(tokens)
            a = a / a.sum(1, keepdims=True)
            joint = a @ joint
        expected[b] = joint[0, 1:]
    got = rollout_from_attention([torch.from_numpy(p) for p in probs])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_raw_attention_and_gradcam_by_hand():
    probs = torch.zeros(1, 2, 3, 3)
    probs[0, 0, 0] = torch.tensor([0.2, 0.3, 0.5])
    probs[0, 1, 0] = torch.tensor([0.6, 0.1, 0.3])
    torch.testing.assert_close(raw_attention_from(probs), torch.tensor([[0.2, 0.4]]))
    grads = torch.full((1, 2, 3, 3), 7.0)                   # only the CLS row's patch columns count
    grads[0, 0, 0] = torch.tensor([9.0, 1.0, 3.0])           # head 0 weight: mean(1, 3) = 2
    grads[0, 1, 0] = torch.tensor([9.0, -2.0, 0.0])          # head 1 weight: mean(-2, 0) = -1
    # head 0: 2 * [.3, .5] = [.6, 1.0]; head 1: -1 * [.1, .3]; mean [.25, .35]
    torch.testing.assert_close(attention_gradcam_from(probs, grads), torch.tensor([[0.25, 0.35]]))
    grads[0, 1, 0] = torch.tensor([0.0, -20.0, -20.0])       # mean goes negative -> clamped
    torch.testing.assert_close(attention_gradcam_from(probs, grads), torch.tensor([[0.0, 0.0]]))


def test_upsample_grid_is_bilinear_and_pads_uncovered_pixels():
    grid = torch.arange(6.0).reshape(1, 2, 3)
    up = upsample_grid(grid, (4, 4), (8, 12))
    torch.testing.assert_close(up, F.interpolate(grid[:, None], scale_factor=4, mode="bilinear")[:, 0])
    padded = upsample_grid(grid, (4, 4), (10, 13))
    assert padded.shape == (1, 10, 13)
    torch.testing.assert_close(padded[:, :8, :12], up)
    assert padded[:, 8:].abs().sum() == 0 and padded[:, :, 12:].abs().sum() == 0


def test_model_level_attention_baselines_use_the_model_attention(deit64, images64):
    fused = [block.attn.fused_attn for block in deit64.blocks]
    _, _, probs, _ = record_attention(deit64, images64)
    assert _restored(deit64) and [b.attn.fused_attn for b in deit64.blocks] == fused
    up = lambda cls: upsample_grid(cls.reshape(-1, 4, 4), (8, 8), (32, 32))
    torch.testing.assert_close(rollout(deit64, images64), up(rollout_from_attention(probs)))
    torch.testing.assert_close(raw_attention(deit64, images64), up(raw_attention_from(probs[-1])))
    target = torch.tensor([0, 1, 4])
    _, _, probs, grads = record_attention(deit64, images64, target, gradients=True)
    torch.testing.assert_close(attention_gradcam(deit64, images64, target),
                               up(attention_gradcam_from(probs[-1], grads[-1])))
    # the probabilities and the plain gradient of the target logit at them, against a forward
    # written out here
    ref_logits, ref_probs, _ = _ref_forward(deit64, images64[1])
    torch.testing.assert_close(probs[-1][1], torch.stack(ref_probs[-1]))
    ref_grads = torch.autograd.grad(ref_logits[1], ref_probs[-1])
    torch.testing.assert_close(grads[-1][1], torch.stack(ref_grads))


# --- Chefer's rules on hand-computable tensors -----------------------------------------------

def test_linear_alpha1_beta0_without_bias_by_hand():
    # W+ = [[1,0],[2,1]], W- = [[0,-1],[0,0]], x+ = [1,0], x- = [0,-2]
    # W+x+ + W-x- = [1 + 2, 2 + 0] = [3, 2]; R = [3, 1] -> S = [1, .5]
    # R_in = x+ * (W+^T S) + x- * (W-^T S) = [1,0]*[2,.5] + [0,-2]*[0,-1] = [2, 2]
    x = torch.tensor([[1.0, -2.0]])
    weight = torch.tensor([[1.0, -1.0], [2.0, 1.0]])
    got = linear_relevance(x, weight, torch.tensor([[3.0, 1.0]]))
    torch.testing.assert_close(got, torch.tensor([[2.0, 2.0]]))
    # batched over (B, N, in) with a zero denominator: that output passes nothing
    x = torch.tensor([[[1.0, -2.0], [1.0, 0.0]]])
    got = linear_relevance(x, torch.tensor([[0.0, 1.0]]), torch.tensor([[[5.0], [5.0]]]))
    torch.testing.assert_close(got, torch.zeros(1, 2, 2))


def test_residual_add_normalisation_by_hand():
    # sample 0: a = [1,2], b = [1,-1], R = [2,3]: S = R/(a+b) = [1,3], a_part = [1,6] (sum 7),
    # b_part = [1,-3] (sum -2); sum R = 5 -> a total 7/9*5, b total 2/9*5:
    # R_a = a_part * 5/9, R_b = b_part * (10/9)/(-2) = b_part * -5/9.
    # sample 1 (a = [1,1], b = [1,1], R = [4,0]) is scaled on its own sums only.
    a = torch.tensor([[1.0, 2.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    relevance = torch.tensor([[2.0, 3.0], [4.0, 0.0]])
    r_a, r_b = residual_relevance(a, b, relevance)
    torch.testing.assert_close(r_a, torch.tensor([[5 / 9, 30 / 9], [2.0, 0.0]]))
    torch.testing.assert_close(r_b, torch.tensor([[-5 / 9, 15 / 9], [2.0, 0.0]]))
    torch.testing.assert_close((r_a + r_b).sum(1), relevance.sum(1))


def test_attention_product_gives_each_operand_half_by_hand():
    # Z = [1, 2] @ [3, 4]^T = 11, R = 11 -> S = 1; x * (S y^T) = [3, 8]; y * (x^T S) = [3, 8]
    x, y = torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[3.0], [4.0]]])
    r_x, r_y = product_relevance(x, y, torch.tensor([[[11.0]]]))
    torch.testing.assert_close(r_x, torch.tensor([[[1.5, 4.0]]]))
    torch.testing.assert_close(r_y, torch.tensor([[[1.5], [4.0]]]))


def _gelu(u):
    return 0.5 * u * (1 + math.erf(u / math.sqrt(2)))


def test_gelu_identity_in_the_mlp_by_hand():
    # h = [1, -2], fc1 = diag(1, -1): every fc1 output has one contributor, so the fc1 rule
    # passes relevance straight through. fc2 = [1, 1] (bias ignored by the rule):
    # R at gelu output = g / (g1 + g2) with g = gelu([1, 2]); identity: the same at its input.
    mlp = Mlp(in_features=2, hidden_features=2, out_features=1)
    with torch.no_grad():
        mlp.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        mlp.fc1.bias.zero_()
        mlp.fc2.weight.copy_(torch.tensor([[1.0, 1.0]]))
        mlp.fc2.bias.fill_(5.0)
    g1, g2 = _gelu(1.0), _gelu(2.0)
    got = mlp_relevance(mlp, torch.tensor([[1.0, -2.0]]), torch.tensor([[1.0]]))
    torch.testing.assert_close(got, torch.tensor([[g1 / (g1 + g2), g2 / (g1 + g2)]]))


def test_softmax_identity_and_attention_halving_by_hand():
    # width 1, one head, two tokens h = [1, 2]; q = k = v = h (qkv weights 1, proj 1), scale 1.
    attn = Attention(dim=1, num_heads=1, qkv_bias=True)
    with torch.no_grad():
        attn.qkv.weight.fill_(1.0)
        attn.qkv.bias.zero_()
        attn.proj.weight.fill_(1.0)
        attn.proj.bias.fill_(3.0)                        # ignored by the alpha1beta0 rule
    h = torch.tensor([[[1.0], [2.0]]], dtype=D64)
    attn = attn.double()
    r_h, r_probs = attention_relevance(attn, h, torch.tensor([[[1.0], [1.0]]], dtype=D64))
    e = np.exp
    a = np.array([[e(1), e(2)] / (e(1) + e(2)), [e(2), e(4)] / (e(2) + e(4))])
    z = a @ np.array([1.0, 2.0])                          # context; R_ctx = R = [1, 1]
    r_a = 0.5 * a * np.array([1.0, 2.0])[None] / z[:, None]      # A * (S v^T) / 2
    np.testing.assert_allclose(r_probs[0, 0].numpy(), r_a, rtol=1e-7)
    # softmax identity: the scores q k^T get R_A; halving: R_q = row sums / 2, R_k = column
    # sums / 2; R_v = column sums of R_A (the other half of R); qkv passes each on to h.
    r_q, r_k, r_v = r_a.sum(1) / 2, r_a.sum(0) / 2, r_a.sum(0)
    np.testing.assert_allclose(r_h[0, :, 0].numpy(), r_q + r_k + r_v, rtol=1e-7)
    np.testing.assert_allclose(r_h.sum().item(), 2.0, rtol=1e-7)   # conserved here


def test_block_wiring_layernorm_identity(deit64):
    """The block rule is the two residual rules, with each LayerNorm's output relevance passed
    to its input unchanged and the branches re-joined by summing."""
    torch.manual_seed(3)
    block = deit64.blocks[0]
    x, relevance = torch.randn(2, 17, 24, dtype=D64), torch.randn(2, 17, 24, dtype=D64)
    with torch.no_grad():
        got_x, got_a = block_relevance(block, x, relevance)
        attn_out = block.attn(block.norm1(x))
        mid = x + attn_out
        mlp_out = block.mlp(block.norm2(mid))
        r_mid, r_mlp = residual_relevance(mid, mlp_out, relevance)
        r_mid = r_mid + mlp_relevance(block.mlp, block.norm2(mid), r_mlp)
        r_x, r_attn = residual_relevance(x, attn_out, r_mid)
        r_h1, r_a = attention_relevance(block.attn, block.norm1(x), r_attn)
    torch.testing.assert_close(got_a, r_a)
    torch.testing.assert_close(got_x, r_x + r_h1)


# --- partial LRP and Transformer Attribution vs a per-sample reference -----------------------

def _safe(a, b):
    return a / (b + 1e-9) * (b != 0)


def _gradprop(fn, inputs, relevance):
    """Chefer's RelPropSimple: X * grad(Z, X, R / Z) for each input, by autograd."""
    inputs = [t.detach().requires_grad_(True) for t in inputs]
    with torch.enable_grad():
        z = fn(*inputs)
        grads = torch.autograd.grad(z, inputs, _safe(relevance, z.detach()))
    return [t.detach() * g for t, g in zip(inputs, grads)]


def _ref_linear(x, weight, relevance):
    """Chefer's Linear.relprop with alpha = 1 (activators only), by autograd."""
    px, nx = x.clamp(min=0).requires_grad_(True), x.clamp(max=0).requires_grad_(True)
    with torch.enable_grad():
        z1, z2 = F.linear(px, weight.clamp(min=0)), F.linear(nx, weight.clamp(max=0))
        s = _safe(relevance, (z1 + z2).detach())
        c1 = torch.autograd.grad(z1, px, s)[0]
        c2 = torch.autograd.grad(z2, nx, s)[0]
    return px.detach() * c1 + nx.detach() * c2


def _ref_add(a, b, relevance):
    a_part, b_part = _gradprop(torch.add, [a, b], relevance)
    a_sum, b_sum = a_part.sum(), b_part.sum()
    a_fact = _safe(a_sum.abs(), a_sum.abs() + b_sum.abs()) * relevance.sum()
    b_fact = _safe(b_sum.abs(), a_sum.abs() + b_sum.abs()) * relevance.sum()
    return a_part * _safe(a_fact, a_sum), b_part * _safe(b_fact, b_sum)


def _ref_block(block, x, relevance):
    """One sample (N, D), heads one at a time."""
    attn, mlp = block.attn, block.mlp
    heads, hd = attn.num_heads, attn.head_dim
    dim = x.shape[-1]
    h1 = F.layer_norm(x, (dim,), block.norm1.weight, block.norm1.bias, 1e-6)
    qkv = F.linear(h1, attn.qkv.weight, attn.qkv.bias)
    q_all, k_all, v_all = qkv[:, :dim], qkv[:, dim:2 * dim], qkv[:, 2 * dim:]
    cols = [slice(i * hd, (i + 1) * hd) for i in range(heads)]
    probs = [torch.softmax(q_all[:, c] @ k_all[:, c].T * attn.scale, -1) for c in cols]
    ctx = torch.cat([p @ v_all[:, c] for p, c in zip(probs, cols)], dim=1)
    attn_out = F.linear(ctx, attn.proj.weight, attn.proj.bias)
    mid = x + attn_out
    h2 = F.layer_norm(mid, (dim,), block.norm2.weight, block.norm2.bias, 1e-6)
    g = F.gelu(F.linear(h2, mlp.fc1.weight, mlp.fc1.bias))
    mlp_out = F.linear(g, mlp.fc2.weight, mlp.fc2.bias)

    r_mid, r_mlp = _ref_add(mid, mlp_out, relevance)
    r_mid = r_mid + _ref_linear(h2, mlp.fc1.weight, _ref_linear(g, mlp.fc2.weight, r_mlp))
    r_x, r_attn = _ref_add(x, attn_out, r_mid)
    r_ctx = _ref_linear(ctx, attn.proj.weight, r_attn)
    r_q, r_k, r_v, r_probs = [], [], [], []
    for p, c in zip(probs, cols):
        ra, rv = _gradprop(torch.matmul, [p, v_all[:, c]], r_ctx[:, c])
        ra, rv = ra / 2, rv / 2
        rq, rk = _gradprop(lambda q, k: q @ k.T, [q_all[:, c], k_all[:, c]], ra)
        r_q.append(rq / 2), r_k.append(rk / 2), r_v.append(rv), r_probs.append(ra)
    r_qkv = torch.cat([torch.cat(r, dim=1) for r in (r_q, r_k, r_v)], dim=1)
    return r_x + _ref_linear(h1, attn.qkv.weight, r_qkv), torch.stack(r_probs)


def _ref_forward(model, image):
    """One sample's forward written out (heads one at a time): logits (classes,), each block's
    per-head probabilities (a list of (N, N) tensors in the graph) and each block's input."""
    with torch.enable_grad():
        x = F.conv2d(image[None], model.patch_embed.proj.weight, model.patch_embed.proj.bias,
                     stride=model.patch_embed.patch_size)[0].flatten(1).T
        x = torch.cat([model.cls_token[0], x]) + model.pos_embed[0]
        inputs, per_block = [], []
        for block in model.blocks:
            inputs.append(x.detach())
            attn = block.attn
            dim, hd = x.shape[-1], attn.head_dim
            h1 = F.layer_norm(x, (dim,), block.norm1.weight, block.norm1.bias, 1e-6)
            qkv = F.linear(h1, attn.qkv.weight, attn.qkv.bias)
            probs, ctx = [], []
            for i in range(attn.num_heads):
                q = qkv[:, i * hd:(i + 1) * hd]
                k = qkv[:, dim + i * hd:dim + (i + 1) * hd]
                v = qkv[:, 2 * dim + i * hd:2 * dim + (i + 1) * hd]
                probs.append(torch.softmax(q @ k.T * attn.scale, -1))
                ctx.append(probs[-1] @ v)
            per_block.append(probs)
            x = x + F.linear(torch.cat(ctx, 1), attn.proj.weight, attn.proj.bias)
            h2 = F.layer_norm(x, (dim,), block.norm2.weight, block.norm2.bias, 1e-6)
            x = x + block.mlp.fc2(F.gelu(block.mlp.fc1(h2)))
        cls = F.layer_norm(x, (x.shape[-1],), model.norm.weight, model.norm.bias, 1e-6)[0]
        logits = F.linear(cls, model.head.weight, model.head.bias)
    return logits, per_block, inputs


def _ref_relevance_and_gradients(model, image, target):
    """Per-sample R_A of every block (Chefer's rules) and the plain gradients at A (from the
    forward written out above)."""
    logits, probs, inputs = _ref_forward(model, image)
    flat = [p for block in probs for p in block]
    flat_grads = torch.autograd.grad(logits[target], flat)
    heads = model.blocks[0].attn.num_heads
    grads = [torch.stack(flat_grads[i * heads:(i + 1) * heads]) for i in range(len(probs))]
    with torch.no_grad():
        x = inputs[-1][None]
        x = model.blocks[-1](x)[0]
        cls = F.layer_norm(x, (x.shape[-1],), model.norm.weight, model.norm.bias, 1e-6)[0]
        one_hot = torch.zeros(model.num_classes, dtype=x.dtype)
        one_hot[target] = 1.0
        relevance = torch.zeros_like(x)
        relevance[0] = _gradprop(lambda t: t, [cls], _ref_linear(cls, model.head.weight, one_hot))[0]
        per_block = [None] * len(model.blocks)
        for i in reversed(range(len(model.blocks))):
            relevance, per_block[i] = _ref_block(model.blocks[i], inputs[i], relevance)
    return per_block, grads


def test_partial_lrp_and_transformer_attribution_match_per_sample_reference(deit64, images64):
    target = torch.tensor([1, 4, 0])
    partial = partial_lrp_grid(deit64, images64, target)
    attribution = transformer_attribution_grid(deit64, images64, target)
    tokens = 17
    for n in range(3):
        r_a, grads = _ref_relevance_and_gradients(deit64, images64[n], int(target[n]))
        expected_partial = r_a[-1].clamp(min=0).mean(0)[0, 1:].reshape(4, 4)
        torch.testing.assert_close(partial[n], expected_partial, rtol=1e-8, atol=1e-12)
        joint = torch.eye(tokens, dtype=D64)
        for ra, grad in zip(r_a, grads):
            joint = ((grad * ra).clamp(min=0).mean(0) + torch.eye(tokens, dtype=D64)) @ joint
        torch.testing.assert_close(attribution[n], joint[0, 1:].reshape(4, 4),
                                   rtol=1e-8, atol=1e-12)
    assert attribution.abs().sum() > 0 and partial.abs().sum() > 0
    torch.testing.assert_close(partial_lrp(deit64, images64, target),
                               upsample_grid(partial, (8, 8), (32, 32)))
    torch.testing.assert_close(transformer_attribution(deit64, images64, target),
                               upsample_grid(attribution, (8, 8), (32, 32)))


def test_chefer_recording_and_arguments(deit64, images64):
    result = chefer_attention_relevance(deit64, images64, from_block=-1)
    torch.testing.assert_close(result.logits, deit64(images64))
    assert result.target.tolist() == deit64(images64).argmax(-1).tolist()
    assert result.relevance[0] is None and result.relevance[1].shape == (3, 3, 17, 17)
    assert result.gradients is None
    assert _restored(deit64)
    assert chefer_attention_relevance(deit64, images64, 4, from_block=-1).target.tolist() == [4] * 3
    with pytest.raises(ValueError, match="outside the model's 2 blocks"):
        chefer_attention_relevance(deit64, images64, from_block=2)


# --- gradient methods -----------------------------------------------------------------------

def test_gradient_x_input_equals_autograd_on_pixels(deit64, images64):
    got = gradient_x_input(deit64, images64, target=2)
    for n in range(3):
        image = images64[n:n + 1].clone().requires_grad_(True)
        deit64(image)[0, 2].backward()
        torch.testing.assert_close(got[n], (image * image.grad)[0].sum(0))
    deit64.zero_grad(set_to_none=True)


def test_integrated_gradients_completeness(deit64, images64):
    target = deit64(images64).argmax(-1)
    black = vision_model.normalize(deit64, torch.zeros_like(images64))
    with torch.no_grad():
        gap = (deit64(images64) - deit64(black)).gather(1, target[:, None])[:, 0]
    # midpoint rule: the error shrinks like 1/steps^2 (measured: 9e-3 at 5 steps, 8e-5 at 50)
    coarse = integrated_gradients(deit64, images64, steps=5).sum((1, 2))
    fine = integrated_gradients(deit64, images64, steps=50).sum((1, 2))
    torch.testing.assert_close(fine, gap, rtol=5e-4, atol=1e-9)
    assert ((fine - gap).abs() < (coarse - gap).abs()).all()
    with pytest.raises(ValueError, match="steps"):
        integrated_gradients(deit64, images64, steps=0)


# --- the registry ---------------------------------------------------------------------------

def test_registry_names_and_display_names():
    names = available_methods()
    assert names[:3] == ["pa_lrp", "attnlrp", "pe_only"]
    assert set(names) == {"pa_lrp", "attnlrp", "pe_only", "rollout", "raw_attn",
                          "attn_gradcam", "partial_lrp", "transformer_attribution",
                          "grad_x_input", "integrated_gradients"}
    assert len({spec.display_name for spec in METHODS.values()}) == len(names)
    assert display_name("transformer_attribution") == "Transformer Attribution"


def test_unknown_method_gives_a_clear_error(deit64, images64):
    with pytest.raises(ValueError, match=r"unknown method\(s\) 'gradcam\+\+'; choose from: "
                                         r"pa_lrp, attnlrp, pe_only, rollout"):
        explain_batch(deit64, images64, ["rollout", "gradcam++"])
    with pytest.raises(ValueError, match="choose from"):
        display_name("lrp")


def test_lrp_family_pa_lrp_and_pe_only_share_one_backward(deit64, images64, monkeypatch):
    calls = []

    def counting(model, inputs, target=None, method="pa_lrp", **kwargs):
        calls.append(method)
        return explain(model, inputs, target, method, **kwargs)

    monkeypatch.setattr(registry, "explain", counting)
    maps = explain_batch(deit64, images64, ["pe_only", "rollout", "pa_lrp", "attnlrp", "pa_lrp"],
                         target=3)
    assert sorted(calls) == ["attn_lrp", "pa_lrp"]
    assert list(maps) == ["pe_only", "rollout", "pa_lrp", "attnlrp"]
    reference = explain(deit64, images64, 3, "pa_lrp")
    torch.testing.assert_close(maps["pa_lrp"], reference.combined())
    torch.testing.assert_close(maps["pe_only"], reference.combined(pe_only=True))
    torch.testing.assert_close(maps["attnlrp"],
                               explain(deit64, images64, 3, "attn_lrp").combined())
    # an added position table splits exactly: the PA-LRP pass's pixels are AttnLRP's map
    record = reference.streams["pixel_values"]
    pixels_only = combine(record.pixels, None, VISION_PAPER, reference.explained_logit)
    torch.testing.assert_close(maps["attnlrp"], pixels_only)


def test_targets_none_int_and_tensor_agree(deit64, images64):
    predicted = deit64(images64).argmax(-1)
    methods = ["attn_gradcam", "grad_x_input", "partial_lrp"]
    by_none = explain_batch(deit64, images64, methods)
    by_tensor = explain_batch(deit64, images64, methods, target=predicted)
    by_int = explain_batch(deit64, images64, methods, target=int(predicted[0]))
    for name in methods:
        torch.testing.assert_close(by_none[name], by_tensor[name])
        torch.testing.assert_close(by_int[name][0], by_tensor[name][0])
    with pytest.raises(ValueError, match="outside the model's 5 classes"):
        explain_batch(deit64, images64, ["transformer_attribution"], target=7)


def test_every_registered_method_batched_equals_one_by_one(deit64, images64):
    """Shape (B, H, W) at the input resolution, finite, and each sample's map independent of its
    batch companions; integrated gradients included (its default 20 steps)."""
    names = available_methods()
    images = images64[:2]
    batched = explain_batch(deit64, images, names)
    singles = [explain_batch(deit64, images[n:n + 1], names) for n in range(2)]
    for name in names:
        assert batched[name].shape == (2, 32, 32), name
        assert torch.isfinite(batched[name]).all(), name
        assert batched[name].abs().sum() > 0, name
        for n in range(2):
            torch.testing.assert_close(batched[name][n], singles[n][name][0],
                                       rtol=1e-9, atol=1e-12, msg=name)
