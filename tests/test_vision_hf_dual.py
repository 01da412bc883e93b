"""CLIP, SigLIP and SigLIP 2 as dual encoders (hf_clip_dual, hf_siglip_dual, hf_siglip2_dual): the image-text score
explained over patches and tokens (docs/method.md, "Image-text scores").

- the explained logits are the stock ``logits_per_image`` (image i against every text), the
  target a text index;
- the glue's rules: with each norm constant and the product uniform, the projected image
  features receive exactly half of the explained score and the projected text features the
  other half (``sum R(u) = sum R(v) = (logit - bias) / 2``, SigLIP's bias keeping its share;
  with the stock backward through the norm, ``sum R(u)`` would be 0);
- relevance in both streams (pixels and tokens, and both position tables) finite and nonzero.
"""
import pytest
import torch

from builders_hf_vision import clip_dual, siglip2_dual, siglip_dual
from palrp.modules.engine import explain

#: name -> (builder, the image features' module, the text features' module, families)
DUALS = {
    "clip": (clip_dual, "visual_projection", "text_projection",
             {"hf_clip_dual", "clip_vision", "clip_text"}),
    "siglip": (siglip_dual, "vision_model.head", "text_model.head",
               {"hf_siglip_dual", "siglip_vision", "siglip_text"}),
    "siglip2": (siglip2_dual, "vision_model.head", "text_model.head",
                {"hf_siglip2_dual", "siglip2_vision", "siglip2_text"}),
}


@pytest.mark.parametrize("which", sorted(DUALS))
def test_the_image_text_score_is_explained_over_patches_and_tokens(which):
    build, image_features, text_features, families = DUALS[which]
    model, inputs, _ = build()
    model = model.double()
    inputs = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
    kept = {}

    def keep(name):
        def hook(module, args, output):
            output.retain_grad()
            kept[name] = output
        return hook

    handles = [model.get_submodule(image_features).register_forward_hook(keep("image")),
               model.get_submodule(text_features).register_forward_hook(keep("text"))]
    try:
        target = torch.tensor([1, 0])                       # each image against the other text
        result = explain(model, inputs, target)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        stock = model(**inputs).logits_per_image
    torch.testing.assert_close(result.logits, stock, rtol=1e-10, atol=1e-12)
    assert set(result.families) == families
    bias = model.logit_bias.detach() if hasattr(model, "logit_bias") else 0.0
    explained = stock[torch.arange(2), target] - bias
    image_share = (kept["image"] * kept["image"].grad).sum(-1)          # per image
    text_share = (kept["text"] * kept["text"].grad).sum(-1)[target]     # per explained text
    torch.testing.assert_close(image_share, explained / 2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(text_share, explained / 2, rtol=1e-10, atol=1e-12)
    for stream in ("pixel_values", "input_ids"):
        for values in (result.relevance[stream], result.positional[stream]):
            assert torch.isfinite(values).all() and values.abs().sum(-1).min() > 0, stream
    assert result.streams["input_ids"].labels == ("position_embedding",)
    assert result.combined("pixel_values").shape == (2, 32, 32)   # SigLIP 2: 4 x 4 patches of 8
    assert result.combined("input_ids").shape == inputs["input_ids"].shape
