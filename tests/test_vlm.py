"""Vision-language models beyond the registry-wide tests (tests/test_engine.py runs the tiny
models of tests/builders_vlm.py through parity, restore, padding and kernels):

- Qwen2-VL's packed patch rows are laid back on the image exactly as its image processor cut
  them (block-major over the 2 x 2 merge blocks);
- M-RoPE sections as positional sources (docs/method.md, "M-RoPE sections"): every layer's
  cos and sin give one sink per section; the sections of a stream sum to its positional
  relevance; splitting is exact: the sections of each leaf sum to the relevance of the same
  leaf unsplit (the family without sections).
"""
import dataclasses

import numpy as np
import pytest
import torch
import transformers as tf

import palrp.modules.engine as engine
import palrp.modules.family as family_module
from builders_vlm import qwen_vl_inputs, tiny_gemma3_vlm, tiny_qwen2_vl
from palrp.modules.adapters.packed_patches import rows_to_images, tokens_to_grid
from palrp.modules.engine import explain


def test_packed_rows_are_laid_back_where_the_processor_cut_them():
    processor = tf.Qwen2VLImageProcessor(patch_size=4, temporal_patch_size=2, merge_size=2,
                                         min_pixels=16 * 16, max_pixels=32 * 32)
    image = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = processor(images=[image], return_tensors="pt")
    config = tiny_qwen2_vl().config.vision_config
    grid = out["image_grid_thw"]
    assert grid.tolist() == [[1, 6, 8]]
    laid = rows_to_images(out["pixel_values"], grid, config)[0] / 2    # two equal frames
    mean = torch.tensor(processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_std)[:, None, None]
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(laid, expected, rtol=0, atol=1e-5)
    # per-patch values follow the same order: row r, column c of the grid
    index = torch.arange(6 * 8, dtype=torch.float64)
    packed = index.reshape(3, 2, 4, 2).permute(0, 2, 1, 3).reshape(-1)   # block-major
    torch.testing.assert_close(tokens_to_grid(packed, grid, config)[0], index)


@pytest.fixture(scope="module")
def qwen2_vl():
    model = tiny_qwen2_vl().double()
    inputs = qwen_vl_inputs()
    inputs["pixel_values"] = inputs["pixel_values"].double()
    return model, inputs, explain(model, inputs)


def test_each_layer_has_a_sink_per_section_and_sections_sum_to_the_positional_map(qwen2_vl):
    model, inputs, result = qwen2_vl
    text = result.streams["input_ids"]
    layers = model.config.text_config.num_hidden_layers
    assert len(text.labels) == layers * 2 * 3
    assert text.labels[:3] == ("cos_0:temporal", "cos_0:height", "cos_0:width")
    sections = result.positional_sections("input_ids")
    assert set(sections) == {"temporal", "height", "width"}
    torch.testing.assert_close(sum(sections.values()), result.positional["input_ids"],
                               rtol=1e-12, atol=1e-14)
    for name, values in sections.items():
        assert values.abs().sum() > 0, name
    image = result.positional_sections("pixel_values")
    assert set(image) == {"height", "width"}
    assert result.streams["pixel_values"].labels == ("cos:height", "cos:width", "sin:height",
                                                     "sin:width")
    torch.testing.assert_close(sum(image.values()), result.positional["pixel_values"],
                               rtol=1e-12, atol=1e-14)
    assert all(v.abs().sum() > 0 for v in image.values())
    # image placeholders carry no token relevance, but M-RoPE places them
    slots = inputs["input_ids"] == 63
    assert torch.equal(result.relevance["input_ids"][slots], torch.zeros(int(slots.sum()),
                                                                          dtype=torch.float64))
    assert all(v[slots].abs().sum() > 0 for v in sections.values())


def test_splitting_into_sections_is_exact(qwen2_vl, monkeypatch):
    model, inputs, split = qwen2_vl
    index = dict(family_module.model_classes())
    for cls, (fam, task) in list(index.items()):
        if fam.name in ("qwen2_vl_text", "qwen2_vl_vision"):
            index[cls] = (dataclasses.replace(fam, rope_sections=()), task)
    monkeypatch.setattr(family_module, "model_classes", lambda: index)
    monkeypatch.setattr(engine, "model_classes", lambda: index)
    whole = explain(model, inputs)
    torch.testing.assert_close(whole.logits, split.logits, rtol=0, atol=0)
    for stream in ("input_ids", "pixel_values"):
        torch.testing.assert_close(whole.relevance[stream], split.relevance[stream],
                                   rtol=1e-12, atol=1e-14)
        merged, labels = {}, split.streams[stream].labels
        for k, label in enumerate(labels):
            leaf = label.split(":")[0]
            merged[leaf] = merged.get(leaf, 0) + split.streams[stream].sinks[:, k]
        assert tuple(merged) == whole.streams[stream].labels
        torch.testing.assert_close(torch.stack(list(merged.values()), 1),
                                   whole.streams[stream].sinks, rtol=1e-10, atol=1e-14)


def test_a_siglip_tower_with_its_unread_pooling_head_explains_as_without_it():
    """Gemma 3 reads the tower's last hidden state; a tower that also has its attention-pool
    head (covered by siglip_vision's map) computes it, but no relevance passes through it: the
    explanation equals that of the same weights without the head."""
    from builders_vlm import BOI, EOI, image_prompt_inputs

    plain = tiny_gemma3_vlm().double()
    config = plain.config
    config.vision_config.vision_use_head = True
    headed = tf.Gemma3ForConditionalGeneration(config).double().eval()
    missing = headed.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".head." in key for key in missing)
    inputs = image_prompt_inputs(4, marks=(BOI, EOI))
    inputs["pixel_values"] = inputs["pixel_values"].double()
    a, b = explain(plain, inputs), explain(headed, inputs)
    torch.testing.assert_close(b.logits, a.logits)
    for stream in a.relevance:
        torch.testing.assert_close(b.relevance[stream], a.relevance[stream])
        torch.testing.assert_close(b.positional[stream], a.positional[stream])


def test_padding_sub_images_carry_nothing_and_leave_the_other_samples_unchanged():
    """Idefics3: sample 1 has one real sub-image and one all-zero padding one (and 4 image
    tokens fewer); its padding tile gets no relevance, sample 0 is explained as alone, and
    sample 1 as its one real sub-image alone."""
    from builders_vlm import IMAGE, tiles_inputs, tiny_idefics3

    model = tiny_idefics3().double()
    inputs = tiles_inputs()
    inputs["pixel_values"] = inputs["pixel_values"].double()
    inputs["pixel_values"][1, 1] = 0
    ids = inputs["input_ids"]
    ids[1, 6:10] = 5                              # the second sub-image's 4 tokens: text
    batched = explain(model, inputs)
    record = batched.streams["pixel_values"]
    gh, gw = 4, 4
    assert record.grid == (gh, 2 * gw)
    strip = record.positional.reshape(2, gh, 2, gw)
    assert torch.equal(strip[1, :, 1], torch.zeros(gh, gw, dtype=torch.float64))
    assert strip[1, :, 0].abs().sum() > 0 and strip[0].abs().sum() > 0
    pixels = record.relevance.reshape(2, gh, 2, gw)
    assert torch.equal(pixels[1, :, 1], torch.zeros(gh, gw, dtype=torch.float64))
    first = explain(model, {k: v[:1] for k, v in inputs.items()})
    torch.testing.assert_close(batched.relevance["pixel_values"][0],
                               first.relevance["pixel_values"][0], rtol=1e-7, atol=1e-10)
    alone = explain(model, {"input_ids": ids[1:2],
                            "pixel_values": inputs["pixel_values"][1:2, :1]})
    torch.testing.assert_close(strip[1, :, 0].reshape(-1), alone.positional["pixel_values"][0],
                               rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(batched.relevance["input_ids"][1], alone.relevance["input_ids"][0],
                               rtol=1e-7, atol=1e-10)
    assert int((ids[1] == IMAGE).sum()) == 4


def test_one_part_family_serves_every_composite_and_is_refused_elsewhere():
    """SigLIP's ``SiglipVisionModel`` is the siglip_vision part of the SigLIP classifier, of
    Gemma 3 and of PaliGemma alike; a family that is not a composite refuses another family's
    part class by name."""
    from family_models import hf_vision, tiny_llava
    from palrp.modules.engine import plan
    from palrp.modules.family import UnsupportedModelError

    classifier, _, _ = hf_vision(tf.SiglipForImageClassification, tf.SiglipConfig)
    assert [(f.name, path) for f, _, path in plan(classifier)] == [
        ("hf_siglip", ""), ("siglip_vision", "vision_model")]
    assert [f.name for f, _, _ in plan(tiny_gemma3_vlm())] == ["gemma3_vlm", "siglip_vision",
                                                               "gemma3"]
    llama = tf.LlamaForCausalLM(tiny_llava().config.text_config)
    llama.tower = tiny_llava().model.vision_tower
    with pytest.raises(UnsupportedModelError, match="CLIPVisionModel .at tower. inside a llama"):
        plan(llama)


def test_the_mrope_language_model_inside_qwen2_vl_is_qwen2_alone():
    """An image of one merged token sits at t = h = w = its sequence position, so M-RoPE gives
    every token the 1-D positions of Qwen2; with a merger that maps the image to the embedding
    of token ``t``, the composite's token relevance equals the Qwen2 causal LM's on the ids with
    ``t`` in the image slot, and each layer's sections sum to that layer's cos (sin) sink."""
    model = tiny_qwen2_vl().double()
    token = 5
    with torch.no_grad():
        merger = model.model.visual.merger.mlp
        for linear in (merger[0], merger[2]):
            linear.weight.zero_()
        merger[0].bias.zero_()
        merger[2].bias.copy_(model.get_input_embeddings().weight[token])
    text_config = model.config.text_config.to_dict()
    text_config["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    qwen2 = tf.Qwen2ForCausalLM(tf.Qwen2Config(**{k: v for k, v in text_config.items()
                                                  if k != "model_type"})).double().eval()
    qwen2.model.load_state_dict(model.model.language_model.state_dict())
    qwen2.lm_head.load_state_dict(model.lm_head.state_dict())
    inputs = qwen_vl_inputs(side=8)
    inputs["pixel_values"] = inputs["pixel_values"].double()
    slots = inputs["input_ids"] == 63
    assert slots.sum(-1).tolist() == [1, 1]

    composite = explain(model, inputs)
    alone = explain(qwen2, {"input_ids": inputs["input_ids"].masked_fill(slots, token)})
    torch.testing.assert_close(composite.logits, alone.logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(composite.relevance["input_ids"][~slots],
                               alone.relevance["input_ids"][~slots], rtol=1e-10, atol=1e-13)
    split = composite.streams["input_ids"]
    merged = {}
    for k, label in enumerate(split.labels):
        merged.setdefault(label.split(":")[0], []).append(split.sinks[:, k])
    assert tuple(merged) == alone.streams["input_ids"].labels
    torch.testing.assert_close(torch.stack([sum(v) for v in merged.values()], 1),
                               alone.streams["input_ids"].sinks, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("change, message", [
    (lambda x: x.pop("image_grid_thw"), "need image_grid_thw"),
    (lambda x: x.update(pixel_values=x["pixel_values"][:, :-1]), r"packed patch rows \(patches, 96\)"),
    (lambda x: x.update(image_grid_thw=torch.tensor([[1, 4, 4], [1, 2, 8]])), "different grids"),
    (lambda x: x.update(image_grid_thw=torch.tensor([[1, 4, 8]])), "1 images for 2 samples"),
    (lambda x: x.update(pixel_values_videos=x["pixel_values"]), "videos are not explained"),
], ids=["no-grid", "row-width", "two-grids", "one-image-two-samples", "video"])
def test_packed_rows_are_checked_before_the_forward(change, message):
    inputs = qwen_vl_inputs()
    change(inputs)
    with pytest.raises(ValueError, match=message):
        explain(tiny_qwen2_vl(), inputs)


def test_gradient_checkpointing_gives_the_same_sections(qwen2_vl):
    """Each layer recomputed in the backward rebuilds its cos/sin from the same section leaves
    (made once per pass), so checkpointing changes no number."""
    model, inputs, result = qwen2_vl
    again = explain(model, inputs, gradient_checkpointing=True)
    for stream in ("input_ids", "pixel_values"):
        torch.testing.assert_close(again.streams[stream].sinks, result.streams[stream].sinks,
                                   rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(again.relevance[stream], result.relevance[stream],
                                   rtol=1e-10, atol=1e-13)
