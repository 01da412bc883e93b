"""Vision PA-LRP: fast engine vs slow layer-by-layer reference, conservation, batching, seeds.

The engine seeds ``R(target) = logit``; the float64 references seed the paper's ``R(target) = 1``,
so relevance is compared through ``conftest.unit_seed`` (each sample divided by its logit)."""
from dataclasses import replace

import pytest
import torch

from conftest import make_timm_vit, unit, unit_seed
from lrp_reference import slow_palrp_deit
from palrp.loaders import vision_model
from palrp.modules import explain, explain_image
from palrp.modules.engine import lrp
from palrp.modules.positional import VISION_PAPER, combine, spread_patch_grid


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
    attnlrp = explain_image(deit64, images, method="attn_lrp", target=result.target)
    stream = result.streams["pixel_values"]
    pixel_only = combine(stream.pixels, None, VISION_PAPER, result.explained_logit)
    view = unit_seed(result)
    for n in range(3):
        pixel, pe = slow_palrp_deit(deit64, images[n:n + 1], int(result.target[n]))
        torch.testing.assert_close(view.pixel[n], pixel, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(view.pe_patch[n], pe, rtol=1e-7, atol=1e-10)
        expected_pe = spread_patch_grid(pe.reshape(1, 4, 4), (8, 8), (32, 32))[0]
        torch.testing.assert_close(result.combined()[n], (pixel + expected_pe).clamp(min=0))
        torch.testing.assert_close(pixel_only[n], pixel.clamp(min=0))
        # the AttnLRP baseline (pos_embed constant) gives an added table's pixels unchanged
        torch.testing.assert_close(attnlrp.combined()[n], pixel.clamp(min=0))
        torch.testing.assert_close(result.combined(pe_only=True)[n], expected_pe.clamp(min=0))


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
    patches = unit_seed(result).pe_patch
    rel_z = unit(probe.relevance("z"), result)[:, -patches.shape[1]:]   # the patch tokens
    rel_e = unit(probe.relevance("E"), result)
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
    view = unit_seed(result)
    (gh, gw), (ph, pw) = vision_model.grid_size(model), vision_model.patch_size(model)
    pixel_per_patch = view.pixel.reshape(2, gh, ph, gw, pw).sum((2, 4)).flatten(1)
    rel_e = unit(probe.relevance("E"), result)
    torch.testing.assert_close(pixel_per_patch, rel_e, rtol=1e-6, atol=1e-9)
    rel_z = unit(probe.relevance("z"), result)[:, -gh * gw:]
    torch.testing.assert_close(pixel_per_patch + view.pe_patch, rel_z,
                               rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(view.total_relevance, rel_z.sum(1), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(view.pe.sum((1, 2)), view.pe_patch.sum(1))
    # the stream's per-patch relevance is the pixels of each patch summed
    torch.testing.assert_close(result.streams["pixel_values"].relevance,
                               result.streams["pixel_values"].pixels.reshape(
                                   2, gh, ph, gw, pw).sum((2, 4)).flatten(1))


def test_batched_equals_one_by_one_and_companions_do_not_matter(tiny_deit):
    torch.manual_seed(3)
    images = torch.randn(4, 3, 32, 32)
    batched = explain_image(tiny_deit, images)
    view = unit_seed(batched)
    for n in range(4):
        single = unit_seed(explain_image(tiny_deit, images[n:n + 1]))
        torch.testing.assert_close(view.pixel[n], single.pixel[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(view.pe_patch[n], single.pe_patch[0], rtol=1e-4, atol=1e-6)
    others = torch.cat((images[:1], torch.randn(2, 3, 32, 32)))
    mixed = explain_image(tiny_deit, others)
    torch.testing.assert_close(mixed.combined()[0], batched.combined()[0], rtol=1e-4, atol=1e-6)


def test_unit_seed_view_is_one_at_target_even_for_a_negative_logit(deit64):
    torch.manual_seed(4)
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    logits = deit64(images)[0]
    negative = int(logits.argmin())
    assert logits[negative] < 0
    result = explain_image(deit64, images, target=negative)
    view = unit_seed(result)
    pixel, pe = slow_palrp_deit(deit64, images, negative)
    torch.testing.assert_close(view.pixel[0], pixel, rtol=1e-7, atol=1e-10)
    # The engine seeds the (negative) logit: R scales linearly, so the raw relevance has the
    # opposite sign, and dividing by the logit gives back the paper's R(target) = 1.
    assert int(result.target) == negative
    # The head's Gamma rule receives relevance +1: with gamma small the bulk reaches the
    # input side with the seed's sign, so the total is positive.
    assert float(view.total_relevance) > 0
    stream = result.streams["pixel_values"]
    assert float(stream.pixels.sum() + stream.positional.sum()) < 0


def test_relevance_is_seeded_with_the_logit_and_the_paper_map_keeps_its_sign(deit64):
    """One seed convention: explain()'s relevance (pixels, every positional sink including the
    class token's entry) is the logit times that of a backward seeded 1/logit (R(target) = 1)
    run by hand inside lrp(); the paper's map (combined()) is the map of that unit-seed
    backward, also for a sample whose explained logit is negative (the map keeps its sign)."""
    torch.manual_seed(8)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        logits = deit64(images)
    target = torch.tensor([int(logits[0].argmin()), int(logits[1].argmax())])
    assert logits[0, target[0]] < 0 < logits[1, target[1]]
    result = explain(deit64, images, target)
    stream = result.streams["pixel_values"]
    logit = result.explained_logit
    torch.testing.assert_close(logit, logits.gather(1, target[:, None])[:, 0], rtol=0, atol=0)
    positions = stream.prefix + stream.grid[0] * stream.grid[1]

    with torch.enable_grad(), lrp(deit64, "pa_lrp") as state:
        leaf = images.clone().requires_grad_(True)
        out = deit64(leaf)
        picked = out.gather(1, target[:, None]).detach()
        seed = torch.zeros_like(out).scatter_(1, target[:, None], 1.0 / picked)
        source = state.parts[0].source
        grads = torch.autograd.grad(out, [leaf, *source.leaves()], grad_outputs=seed)
        hand_sinks = source.relevance(grads[1:], positions)
        assert list(source.labels) == list(stream.labels) == ["pos_embed"]
    hand_pixels = (leaf.detach() * grads[0]).sum(1)

    torch.testing.assert_close(stream.pixels, logit[:, None, None] * hand_pixels,
                               rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(stream.sinks, logit[:, None, None] * hand_sinks,
                               rtol=1e-10, atol=1e-13)
    assert stream.sinks[:, 0, 0].abs().min() > 0                 # the class token's entry

    hand_pe = spread_patch_grid(hand_sinks[:, :, stream.prefix:].sum(1).reshape(2, 4, 4),
                                (8, 8), (32, 32))
    paper = combine(hand_pixels, hand_pe[:, None], replace(VISION_PAPER, unit_seed=False))
    torch.testing.assert_close(result.combined(), paper, rtol=1e-10, atol=1e-13)
    assert (paper[0] > 0).any() and (paper[0] == 0).any()       # clamping is not trivial
    # without the division by the logit the negative sample's map would be another map
    raw = combine(stream.pixels, stream.positional_pixels()[:, None],
                  replace(VISION_PAPER, unit_seed=False))
    assert not torch.allclose(raw[0] / raw[0].max(), paper[0] / paper[0].max())
    torch.testing.assert_close(raw[1] / raw[1].max(), paper[1] / paper[1].max())


def test_targets_int_tensor_and_errors(tiny_deit):
    images = torch.randn(2, 3, 32, 32)
    result = explain_image(tiny_deit, images, target=2)
    assert result.target.tolist() == [2, 2]
    predicted = explain_image(tiny_deit, images)
    assert predicted.target.tolist() == predicted.logits.argmax(-1).tolist()
    with pytest.raises(ValueError, match="outside the model's 5 classes"):
        explain_image(tiny_deit, images, target=9)
    with pytest.raises(ValueError, match=r"unknown method 'gradcam\+\+'"):
        explain_image(tiny_deit, images, method="gradcam++")


@pytest.mark.parametrize("img,patch", [(96, 16), (64, 8), (40, 8)])
def test_non_224_geometry_end_to_end(img, patch):
    model = make_timm_vit(img_size=img, patch_size=patch, embed_dim=24, num_heads=3)
    result = explain_image(model, torch.randn(2, 3, img, img), method="pa_lrp")
    stream = result.streams["pixel_values"]
    paper_map = result.combined()
    assert paper_map.shape == (2, img, img)
    assert stream.grid == (img // patch, img // patch)
    assert stream.positional.shape == (2, (img // patch) ** 2)
    assert torch.isfinite(paper_map).all() and (paper_map >= 0).all()
    assert paper_map.flatten(1).max(1).values.gt(0).all()
