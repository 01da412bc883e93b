"""Vision PA-LRP: fast engine vs slow layer-by-layer reference, conservation, batching, seeds."""
import pytest
import torch

from conftest import make_timm_vit
from lrp_reference import slow_palrp_deit
from palrp.loaders import vision_model
from palrp.modules import explain_image
from palrp.modules.positional import spread_patch_grid


@pytest.fixture(scope="module")
def deit64():
    """float64 tiny DeiT, timm's own VisionTransformer (32 px, patch 8)."""
    return make_timm_vit(seed=1).double()


@pytest.fixture(scope="module")
def tiny_deit(tiny_timm):
    return tiny_timm


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


class _StreamProbe:
    """Forward hooks that record, during one :func:`explain_image` call, the relevance
    ``t * t.grad`` (summed over channels, per token) of the patch-embedding output E and of
    the first block's input z = [CLS, E] + P. Only public module boundaries are used."""

    def __init__(self, model):
        self.tensors, self.grads = {}, {}
        self.handles = [
            model.patch_embed.register_forward_hook(
                lambda module, args, out: self._keep("E", out)),
            model.blocks[0].register_forward_pre_hook(
                lambda module, args: self._keep("z", args[0])),
        ]

    def _keep(self, name, tensor):
        if tensor.requires_grad:
            self.tensors[name] = tensor
            tensor.register_hook(lambda g: self.grads.__setitem__(name, g))

    def relevance(self, name):
        return (self.tensors[name].detach() * self.grads[name]).sum(-1)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _explain_with_probe(model, images, target=None):
    probe = _StreamProbe(model)
    try:
        result = explain_image(model, images, target=target)
    finally:
        probe.remove()
    return result, probe


def test_pe_split_conserves_exactly_at_the_addition(deit64):
    """Measured through explain_image: for every patch token, the relevance entering the first
    block, R(z), is the patch embedding's R(E) plus the engine's positional relevance pe_patch:
    R(E) + R(P) = R(z) exactly, since z = E + P is a plain addition."""
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    result, probe = _explain_with_probe(deit64, images, target=torch.tensor([1, 3]))
    patches = result.pe_patch.flatten(1)
    rel_z = probe.relevance("z")[:, -patches.shape[1]:]          # the patch tokens
    rel_e = probe.relevance("E")
    assert rel_e.shape == patches.shape
    torch.testing.assert_close(rel_e + patches, rel_z, rtol=1e-10, atol=1e-14)
    assert patches.abs().max() > 1e-3 * rel_z.abs().max()         # the PE share is not empty


@pytest.fixture(scope="module")
def deit64_unbiased_patch_embed():
    """float64 tiny DeiT whose patch-embedding conv has no bias (the Gamma rule then conserves)."""
    reference = make_timm_vit(seed=5)
    with torch.no_grad():
        reference.patch_embed.proj.bias.zero_()
    return reference.double()


def test_pixel_and_pe_relevance_sum_to_the_stream_relevance(deit64_unbiased_patch_embed):
    """PA-LRP carves the PE share out of what AttnLRP gives the image: measured through
    explain_image, the pixel relevance of each patch equals the relevance R(E) of its token
    (Gamma rule without bias: conservative up to the 1e-6 stabiliser), so pixel + PE relevance
    of every patch is the relevance R(z) reaching the residual stream at that patch."""
    model = deit64_unbiased_patch_embed
    torch.manual_seed(2)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    result, probe = _explain_with_probe(model, images)
    (gh, gw), (ph, pw) = vision_model.grid_size(model), vision_model.patch_size(model)
    pixel_per_patch = result.pixel.reshape(2, gh, ph, gw, pw).sum((2, 4)).flatten(1)
    rel_e = probe.relevance("E")
    torch.testing.assert_close(pixel_per_patch, rel_e, rtol=1e-6, atol=1e-9)
    rel_z = probe.relevance("z")[:, -gh * gw:]
    torch.testing.assert_close(pixel_per_patch + result.pe_patch.flatten(1), rel_z,
                               rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(result.total_relevance, rel_z.sum(1), rtol=1e-6, atol=1e-9)
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
    model = make_timm_vit(img_size=img, patch_size=patch, embed_dim=24, num_heads=3)
    result = explain_image(model, torch.randn(2, 3, img, img), method="pa_lrp")
    assert result.map.shape == (2, img, img)
    assert result.pe_patch.shape == (2, img // patch, img // patch)
    assert torch.isfinite(result.map).all() and (result.map >= 0).all()
    assert result.map.flatten(1).max(1).values.gt(0).all()
