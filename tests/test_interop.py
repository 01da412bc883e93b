"""palrp.interop: PA-LRP as a Captum attribution method (:class:`palrp.PALRP`) and as a Quantus
``explain_func`` (:func:`palrp.quantus_explain_func`).

What is compared, and why:

- Images: the channel sum of ``PALRP.attribute`` is ``pixels + positional_pixels()`` of
  ``palrp.explain`` (the paper's map before its clamp, ``R(target) = logit``), the positional
  share is split evenly over the channels, and ``pa_lrp = attn_lrp + pe_only`` per channel
  (an additive ``pos_embed`` changes no pixel gradient).
- Captum oracle: LRP in gradient x input form *is* Captum's ``InputXGradient`` run on the
  LRP-patched model (``with palrp.modules.engine.lrp(model, method):``), since the patch
  replaces each layer's backward by its rule's. No timm ViT exists where the rules reduce to
  the plain gradient (LayerNorm, softmax and the Gamma rule all change it), so this is the
  honest equivalence: the per-channel pixel term of ``PALRP`` must equal Captum's own
  multiply-by-inputs attribution on that model, to the last bit. For text the same holds for
  Captum's ``LayerGradientXActivation`` on the token embedding.
- Captum metrics: ``infidelity`` with a perturbation that replaces the whole input by zeros is
  ``(sum(attribution) - (f(x) - f(0)))^2`` when attributions multiply by the inputs (closed
  form, checked by hand); ``sensitivity_max`` runs ``PALRP.attribute`` as its explanation
  function (under no_grad, tuple inputs) and is exactly 0 at radius 0.
- Quantus: ``FaithfulnessEstimate`` through ``explain_func`` gives B finite scores, the same
  scores from the precomputed ``a_batch``, and the same scores recomputed by hand (zero the
  features in attribution order, 64 at a time, Pearson correlation of the attribution sums
  with the logit drops).
"""
import numpy as np
import pytest
import quantus
import torch
from captum.attr import InputXGradient, LayerGradientXActivation
from captum.metrics import infidelity, infidelity_perturb_func_decorator, sensitivity_max
from text_families_fixtures import pad_id, random_ids, tiny

import palrp
from palrp.modules.engine import lrp

METHODS = ("pa_lrp", "attn_lrp", "pe_only")


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(3)
    return torch.randn(2, 3, 32, 32)


@pytest.fixture(scope="module")
def attributions(tiny_timm, images):
    return {m: palrp.PALRP(tiny_timm, m).attribute(images, target=[1, 4]) for m in METHODS}


def test_image_attribution_has_the_input_shape_and_sums_to_explain(tiny_timm, images,
                                                                   attributions):
    for method, attribution in attributions.items():
        assert attribution.shape == images.shape and attribution.dtype == torch.float32
        stream = palrp.explain(tiny_timm, images, [1, 4], method).streams["pixel_values"]
        if method == "attn_lrp":
            expected = stream.pixels
        elif method == "pe_only":
            expected = stream.positional_pixels()
        else:
            expected = stream.pixels + stream.positional_pixels()
        torch.testing.assert_close(attribution.sum(1), expected, rtol=1e-5, atol=1e-10)
    pa, attn, pe = (attributions[m] for m in METHODS)
    torch.testing.assert_close(pa, attn + pe, rtol=1e-5, atol=1e-10)
    # the positional share is the same in every channel and is not zero
    assert torch.equal(pe[:, 0], pe[:, 1]) and torch.equal(pe[:, 0], pe[:, 2])
    assert pe.abs().min() > 0
    # the pixel term differs between channels
    assert not torch.allclose(attn[:, 0], attn[:, 1])
    explainer = palrp.PALRP(tiny_timm)
    assert explainer.multiplies_by_inputs and not explainer.has_convergence_delta()
    assert explainer.get_name() == "PA-LRP" and explainer.forward_func is tiny_timm


@pytest.mark.parametrize("method", ["attn_lrp", "pa_lrp"])
def test_pixel_term_is_captum_input_x_gradient_on_the_lrp_patched_model(tiny_timm, images,
                                                                        attributions, method):
    with lrp(tiny_timm, method):
        oracle = InputXGradient(tiny_timm).attribute(images.clone().requires_grad_(True),
                                                     target=torch.tensor([1, 4]))
    pixel_term = attributions[method] - (attributions["pe_only"] if method == "pa_lrp" else 0)
    torch.testing.assert_close(pixel_term, oracle.detach(), rtol=1e-5, atol=1e-12)
    # without the patch Captum's InputXGradient is another attribution (the plain gradient)
    plain = InputXGradient(tiny_timm).attribute(images.clone().requires_grad_(True),
                                                target=torch.tensor([1, 4]))
    assert not torch.allclose(plain.detach(), oracle.detach(), rtol=1e-2, atol=0)


def test_captum_infidelity_is_the_completeness_gap(tiny_timm, images, attributions):
    """Replacing the whole input by zeros makes Captum's multiply-by-inputs perturbation 1
    everywhere, so infidelity = (sum of the attribution - (f(x) - f(0)))^2, per sample."""

    @infidelity_perturb_func_decorator(multiply_by_inputs=True)
    def to_zero(inputs):
        return torch.zeros_like(inputs)

    target = torch.tensor([1, 4])
    attribution = attributions["pa_lrp"]
    score = infidelity(tiny_timm, to_zero, images, attribution, target=target,
                       n_perturb_samples=2)
    with torch.no_grad():
        drop = (tiny_timm(images) - tiny_timm(torch.zeros_like(images))).gather(
            1, target[:, None])[:, 0]
    by_hand = (attribution.flatten(1).sum(1) - drop) ** 2
    torch.testing.assert_close(score, by_hand, rtol=1e-4, atol=1e-12)
    assert by_hand.min() > 0


def test_captum_sensitivity_max_runs_palrp_as_its_explanation_function(tiny_timm, images):
    explain_fn = palrp.PALRP(tiny_timm, "pa_lrp").attribute
    target = torch.tensor([1, 4])
    still = sensitivity_max(explain_fn, images, perturb_radius=0.0, n_perturb_samples=2,
                            target=target)
    assert still.shape == (2,) and torch.equal(still, torch.zeros(2))
    torch.manual_seed(0)
    moved = sensitivity_max(explain_fn, images, perturb_radius=0.05, n_perturb_samples=2,
                            target=target)
    assert moved.shape == (2,) and bool(torch.isfinite(moved).all()) and bool((moved > 0).all())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_text_attribution_per_token(family):
    """(B, S) per token: pa_lrp = token + signed positional (all sinks), attn_lrp = token,
    pe_only = positional; padding is 0; the token term is Captum's LayerGradientXActivation on
    the token embedding of the patched model (gpt2: a learned table; llama: rotary cos/sin)."""
    model = tiny(family, "classifier")
    ids = random_ids(family, 2, 7)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = pad_id(family)
    out = {m: palrp.PALRP(model, m).attribute(ids, target=2, attention_mask=mask)
           for m in METHODS}
    result = palrp.explain(model, {"input_ids": ids, "attention_mask": mask}, 2, "pa_lrp")
    token, positional = result.relevance["input_ids"], result.positional["input_ids"]
    for method, value in out.items():
        assert value.shape == ids.shape
        assert torch.equal(value[1, 5:], torch.zeros(2))
    torch.testing.assert_close(out["pa_lrp"], token + positional, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(out["pe_only"], positional, rtol=1e-5, atol=1e-8)
    assert positional[mask.bool()].abs().min() > 0

    def forward(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    for method, term in (("attn_lrp", out["attn_lrp"]),
                         ("pa_lrp", out["pa_lrp"] - out["pe_only"])):
        with lrp(model, method):
            oracle = LayerGradientXActivation(forward, model.get_input_embeddings()).attribute(
                ids, target=2, additional_forward_args=(mask,))
        torch.testing.assert_close(term, oracle.sum(-1) * mask, rtol=1e-5, atol=1e-7)
    # Captum's calling convention: a 1-tuple in, a 1-tuple out; the mask as a forward arg
    (again,) = palrp.PALRP(model, "pa_lrp").attribute((ids,), target=2,
                                                      additional_forward_args=(mask,))
    assert torch.equal(again, out["pa_lrp"])


def test_quantus_faithfulness_estimate_through_explain_func(tiny_timm, images):
    x = images.numpy()
    y = np.array([1, 4])
    a = palrp.quantus_explain_func(tiny_timm, x, y, method="pa_lrp")
    assert a.shape == (2, 1, 32, 32) and a.dtype == np.float32
    channel_sum = palrp.PALRP(tiny_timm, "pa_lrp").attribute(images, target=[1, 4]).sum(1)
    np.testing.assert_allclose(a[:, 0], channel_sum.numpy(), rtol=1e-6, atol=0)

    step = 64
    metric = quantus.FaithfulnessEstimate(features_in_step=step, perturb_baseline=0.0,
                                          normalise=False, abs=False, disable_warnings=True,
                                          display_progressbar=False)
    scores = metric(model=tiny_timm, x_batch=x, y_batch=y,
                    explain_func=palrp.quantus_explain_func,
                    explain_func_kwargs={"method": "pa_lrp"}, device="cpu")
    assert len(scores) == 2 and np.isfinite(scores).all()
    assert metric(model=tiny_timm, x_batch=x, y_batch=y, a_batch=a, device="cpu") == scores

    # by hand: the (B, 1, H, W) map broadcast over the channels, features zeroed 64 at a time
    # in descending attribution, Pearson correlation of attribution sums with logit drops
    flat = np.broadcast_to(a, x.shape).reshape(2, -1)
    order = np.argsort(-flat, axis=1)
    rows = np.arange(2)[:, None]
    with torch.no_grad():
        base = tiny_timm(images)[np.arange(2), y].numpy()
        drops, sums = [], []
        for start in range(0, flat.shape[1], step):
            picked = order[:, start:start + step]
            perturbed = x.reshape(2, -1).copy()
            perturbed[rows, picked] = 0.0
            logits = tiny_timm(torch.from_numpy(perturbed.reshape(x.shape)))
            drops.append(base - logits[np.arange(2), y].numpy())
            sums.append(flat[rows, picked].sum(1))
    drops, sums = np.stack(drops, 1), np.stack(sums, 1)
    by_hand = [np.corrcoef(sums[i], drops[i])[0, 1] for i in range(2)]
    np.testing.assert_allclose(scores, by_hand, rtol=1e-4)


def test_quantus_explain_func_paper_map_and_options(tiny_timm, images):
    y = torch.tensor([1, 4])
    for method in METHODS:
        paper = palrp.quantus_explain_func(tiny_timm, images, y, method, map="paper")
        expected = palrp.explain(tiny_timm, images, y, method).combined()
        np.testing.assert_allclose(paper[:, 0], expected.numpy(), rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="unknown options"):
        palrp.quantus_explain_func(tiny_timm, images, y, abs=True)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) images"):
        palrp.quantus_explain_func(tiny_timm, images[0], y)


def test_user_errors_are_one_line(tiny_timm, images):
    with pytest.raises(ValueError, match="unknown method 'lrp'"):
        palrp.PALRP(tiny_timm, "lrp")
    with pytest.raises(ValueError, match="tuple of 2"):
        palrp.PALRP(tiny_timm).attribute((images, images))
    with pytest.raises(ValueError, match="go with input_ids"):
        palrp.PALRP(tiny_timm).attribute(images, attention_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="outside the model's 5 classes"):
        palrp.PALRP(tiny_timm).attribute(images, target=7)
