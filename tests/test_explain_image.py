"""Vision PA-LRP: fast engine vs slow layer-by-layer reference, conservation, batching, seeds."""
import pytest
import torch

from conftest import make_timm_vit
from lrp_reference import slow_palrp_deit
from modules import explain_image, load_deit
from modules.positional import additive_pe_leaf, spread_patch_grid
from modules.rules import gamma_linear, layer_norm_const_std


@pytest.fixture(scope="module")
def deit64():
    """float64 tiny DeiT (non-square-friendly geometry: 32 px, patch 8)."""
    return load_deit(make_timm_vit(seed=1).state_dict(), num_heads=3).double()


def test_fast_engine_equals_slow_reference(deit64):
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    result = explain_image(deit64, images, method="pa_lrp", target=torch.tensor([0, 3, 4]))
    for n in range(3):
        pixel, pe = slow_palrp_deit(deit64, images[n:n + 1], int(result.target[n]))
        torch.testing.assert_close(result.pixel[n], pixel, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(result.pe_patch[n].flatten(), pe, rtol=1e-7, atol=1e-10)
        expected_pe = spread_patch_grid(pe.reshape(1, 4, 4), (8, 8), (32, 32))[0]
        torch.testing.assert_close(result.map_for("pa_lrp")[n], (pixel + expected_pe).clamp(min=0))
        torch.testing.assert_close(result.map_for("attnlrp")[n], pixel.clamp(min=0))
        torch.testing.assert_close(result.map_for("pe_only")[n], expected_pe.clamp(min=0))


def test_pe_split_conserves_exactly_at_the_addition(deit64):
    """R(E) + R(P) = R(z) per element, with z = E + P the first residual-stream tensor."""
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    model = deit64
    with torch.no_grad():
        tokens = model.patch_embed(images, False)
    emb_leaf = torch.cat((model.cls_token.expand(2, -1, -1), tokens), 1).detach().requires_grad_()
    pos_leaf = additive_pe_leaf(model.pos_embed, 2)
    z = emb_leaf + pos_leaf
    z.retain_grad()
    x = z
    for block in model.blocks:
        x = block(x, True, False)
    from modules.rules import layer_norm_const_std, gamma_linear
    out = gamma_linear(layer_norm_const_std(x, model.norm.weight, model.norm.bias, 1e-6)[:, 0],
                       model.head.weight, model.head.bias, 0.05)
    seed = torch.zeros_like(out)
    seed[:, 1] = 1.0 / out[:, 1].detach()
    out.backward(seed)
    rel_z = z.detach() * z.grad
    rel_e = emb_leaf.detach() * emb_leaf.grad
    rel_p = pos_leaf.detach() * pos_leaf.grad
    torch.testing.assert_close(rel_e + rel_p, rel_z, rtol=1e-10, atol=1e-14)


def test_pixel_and_pe_relevance_sum_to_the_stream_relevance(deit64):
    """PA-LRP carves the PE share out of what AttnLRP gives the image: both maps come from the
    same backward, and pixel + PE relevance is the relevance reaching the embeddings."""
    torch.manual_seed(2)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    result = explain_image(deit64, images)
    pa = result.pixel + result.pe
    torch.testing.assert_close(pa.sum((1, 2)), result.total_relevance)
    torch.testing.assert_close(result.pe.sum((1, 2)), result.pe_patch.sum((1, 2)))


def test_batched_equals_one_by_one_and_companions_do_not_matter(tiny_deit):
    torch.manual_seed(3)
    images = torch.randn(4, 3, 32, 32)
    batched = explain_image(tiny_deit, images)
    for n in range(4):
        single = explain_image(tiny_deit, images[n:n + 1])
        torch.testing.assert_close(batched.pixel[n], single.pixel[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(batched.pe_patch[n], single.pe_patch[0], rtol=1e-4, atol=1e-6)
    others = torch.cat((images[:1], torch.randn(2, 3, 32, 32)))
    mixed = explain_image(tiny_deit, others)
    torch.testing.assert_close(mixed.map[0], batched.map[0], rtol=1e-4, atol=1e-6)


def test_seed_is_one_at_target_even_for_a_negative_logit(deit64):
    torch.manual_seed(4)
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    logits = deit64(images)[0]
    negative = int(logits.argmin())
    assert logits[negative] < 0
    result = explain_image(deit64, images, target=negative)
    pixel, pe = slow_palrp_deit(deit64, images, negative)
    torch.testing.assert_close(result.pixel[0], pixel, rtol=1e-7, atol=1e-10)
    # Seeding the (negative) logit instead would flip the map's sign: R scales linearly.
    assert int(result.target) == negative
    # The head's Gamma rule receives relevance +1: with gamma small the bulk reaches the
    # input side with the seed's sign, so the total is positive.
    assert float(result.total_relevance) > 0


def test_targets_int_tensor_and_errors(tiny_deit):
    images = torch.randn(2, 3, 32, 32)
    result = explain_image(tiny_deit, images, target=2)
    assert result.target.tolist() == [2, 2]
    predicted = explain_image(tiny_deit, images)
    assert predicted.target.tolist() == predicted.logits.argmax(-1).tolist()
    with pytest.raises(ValueError, match="outside the model's 5 classes"):
        explain_image(tiny_deit, images, target=9)
    with pytest.raises(ValueError, match="unknown LRP method"):
        explain_image(tiny_deit, images, method="gradcam++")


@pytest.mark.parametrize("img,patch", [(96, 16), (64, 8), (40, 8)])
def test_non_224_geometry_end_to_end(img, patch):
    model = load_deit(make_timm_vit(img_size=img, patch_size=patch, embed_dim=24,
                                    num_heads=3).state_dict(), num_heads=3)
    result = explain_image(model, torch.randn(2, 3, img, img), method="pa_lrp")
    assert result.map.shape == (2, img, img)
    assert result.pe_patch.shape == (2, img // patch, img // patch)
    assert torch.isfinite(result.map).all() and (result.map >= 0).all()
    assert result.map.flatten(1).max(1).values.gt(0).all()
