"""Composition: a model built of supported parts (a tiny LLaVA: CLIP vision tower, projector,
Llama) is explained by its parts' own family maps in one patch and one backward.

- the parts are found by class identity and explained by their families;
- the language model inside the composite is explained exactly as the same Llama alone: with a
  projector that maps every image to the embedding of one token ``t``, the composite's token
  and RoPE relevance equal those of the standalone Llama on the ids with ``t`` in the image
  slots, to float64 precision;
- the vision tower's positional leaf is what CLIP adds: the relevance of its position table
  equals ``P * dR/dz`` read at the embedding output ``z = E + P``;
- image placeholders carry no token relevance (their embeddings are replaced).
"""
import torch
import transformers as tf

from family_models import llava_inputs, tiny_llava
from palrp.modules.engine import explain, plan


def test_parts_are_found_by_their_families():
    model = tiny_llava()
    layout = [(family.name, path) for family, _, path in plan(model)]
    assert layout == [("llava", ""), ("clip_vision", "model.vision_tower"),
                      ("llama", "model.language_model")]
    result = explain(model, llava_inputs())
    assert result.families == ("llava", "clip_vision", "llama")
    assert set(result.relevance) == {"pixel_values", "input_ids"}
    image_slots = llava_inputs()["input_ids"] == model.config.image_token_index
    assert torch.equal(result.relevance["input_ids"][image_slots],
                       torch.zeros(int(image_slots.sum())))
    assert result.relevance["pixel_values"].abs().sum() > 0
    # RoPE places the image tokens too: their positions carry positional relevance
    assert result.positional["input_ids"][image_slots].abs().sum() > 0
    assert result.streams["pixel_values"].prefix == 1          # CLIP's class token
    assert result.streams["pixel_values"].labels == ("position_embedding",)


def test_the_language_model_inside_the_composite_is_the_llama_alone():
    model = tiny_llava().double()
    token = 5
    with torch.no_grad():
        projector = model.model.multi_modal_projector
        for linear in (projector.linear_1, projector.linear_2):
            linear.weight.zero_()
        projector.linear_1.bias.zero_()
        projector.linear_2.bias.copy_(model.get_input_embeddings().weight[token])
    llama = tf.LlamaForCausalLM(model.config.text_config).double().eval()
    llama.model.load_state_dict(model.model.language_model.state_dict())
    llama.lm_head.load_state_dict(model.lm_head.state_dict())
    inputs = llava_inputs()
    inputs["pixel_values"] = inputs["pixel_values"].double()
    slots = inputs["input_ids"] == model.config.image_token_index
    ids = inputs["input_ids"].masked_fill(slots, token)

    composite = explain(model, inputs)
    alone = explain(llama, {"input_ids": ids})
    torch.testing.assert_close(composite.logits, alone.logits, rtol=1e-12, atol=1e-12)
    assert torch.equal(composite.target, alone.target)
    tokens_c, tokens_a = composite.relevance["input_ids"], alone.relevance["input_ids"]
    torch.testing.assert_close(tokens_c[~slots], tokens_a[~slots], rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(composite.streams["input_ids"].sinks,
                               alone.streams["input_ids"].sinks, rtol=1e-10, atol=1e-13)
    # the image features are constants here: no relevance reaches the pixels
    assert torch.equal(composite.relevance["pixel_values"],
                       torch.zeros_like(composite.relevance["pixel_values"]))


def test_the_vision_towers_positional_leaf_is_what_clip_adds():
    model = tiny_llava().double()
    inputs = llava_inputs()
    inputs["pixel_values"] = inputs["pixel_values"].double()
    kept = {}

    def keep(module, args, output):
        output.retain_grad()
        kept["z"] = output

    embeddings = model.model.vision_tower.embeddings
    handle = embeddings.register_forward_hook(keep)
    try:
        result = explain(model, inputs)
    finally:
        handle.remove()
    z = kept["z"]
    table = embeddings.position_embedding.weight.detach()          # (T, D)
    expected = (table[None] * z.grad).sum(-1)                      # (B, T): R(P) = P dR/dz
    sinks = result.streams["pixel_values"].sinks[:, 0]
    torch.testing.assert_close(sinks, expected, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(result.positional["pixel_values"], expected[:, 1:],
                               rtol=1e-10, atol=1e-14)
