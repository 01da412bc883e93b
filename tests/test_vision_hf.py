"""The transformers vision classifiers (ViT, DeiT, DINOv2, DINOv2 with registers, CLIP, SigLIP):
what their family files and the adapter's parameter position tables add to the engine tests
(tests/test_engine.py runs every family through the contract, restore, batching and kernels).

- the positional leaf is exactly what the model adds: ``R(P) = P * dR/dz`` read at the
  embeddings output ``z = E + P`` in float64, for a table added as it is (ViT, DINOv2 at its
  configured size) and for a table resampled to the input's grid (DINOv2 at other sizes, square
  or not; DeiT called with ``interpolate_pos_encoding=True``), and in the table's layout when
  register tokens are inserted after the add;
- a mapping ``{"pixel_values": images}`` and the plain tensor give the same explanation;
- the layouts: prefix tokens, grid, one sink per sample, the composite CLIP classifier's parts;
- SigLIP's attention-pool head, whose output the classifier does not read, carries nothing.
"""
import pytest
import torch
import transformers as tf

from family_models import hf_vision
from palrp.modules.engine import explain, lrp, plan


def _double(model, images):
    return model.double(), images.double()


def _explain_keeping_z(model, embeddings, inputs):
    """The explanation, and the embeddings output ``z`` with its gradient dR/dz."""
    kept = {}

    def keep(module, args, output):
        output.retain_grad()
        kept["z"] = output

    handle = embeddings.register_forward_hook(keep)
    try:
        result = explain(model, inputs)
    finally:
        handle.remove()
    return result, kept["z"]


def _stock_table(embeddings, tokens, height, width):
    """The table the stock embeddings add for a sequence of ``tokens`` tokens (resampled by the
    stock ``interpolate_pos_encoding`` where the model does that)."""
    with torch.no_grad():
        dummy = torch.zeros(1, tokens, embeddings.position_embeddings.shape[-1],
                            dtype=embeddings.position_embeddings.dtype)
        return embeddings.interpolate_pos_encoding(dummy, height, width).clone()


def test_the_positional_leaf_is_what_vit_adds():
    model, images = _double(*hf_vision(tf.ViTForImageClassification, tf.ViTConfig)[:2])
    embeddings = model.vit.embeddings
    result, z = _explain_keeping_z(model, embeddings, images)
    table = embeddings.position_embeddings.detach()                 # (1, 1 + 16, D)
    expected = (table * z.grad).sum(-1)                             # (B, 17): R(P) = P dR/dz
    stream = result.streams["pixel_values"]
    assert stream.sinks.shape == (2, 1, 17) and stream.prefix == 1 and stream.grid == (4, 4)
    assert stream.labels == ("position_embeddings",)
    torch.testing.assert_close(stream.sinks[:, 0], expected, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(result.positional["pixel_values"], expected[:, 1:],
                               rtol=1e-10, atol=1e-14)
    assert expected.abs().min() > 0


@pytest.mark.parametrize("size", [(32, 32), (40, 40), (48, 40), (32, 40)])
def test_the_positional_leaf_is_what_dinov2_adds_after_resampling(size):
    """DINOv2 always passes its table through ``interpolate_pos_encoding``: at the configured
    square size it is the table itself, otherwise the bicubic resampling to the input's grid
    (also for a non-square input with as many patches); the leaf is what is added."""
    model, images = _double(*hf_vision(tf.Dinov2ForImageClassification, tf.Dinov2Config,
                                       mlp_ratio=2)[:2])
    height, width = size
    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(2),
                         dtype=torch.float64)
    embeddings = model.dinov2.embeddings
    grid = (height // 8, width // 8)
    tokens = 1 + grid[0] * grid[1]
    added = _stock_table(embeddings, tokens, height, width)
    if size == (32, 32):
        assert torch.equal(added, embeddings.position_embeddings.detach())
    else:
        assert added.shape[1] != 17 or not torch.equal(added, embeddings.position_embeddings)
    result, z = _explain_keeping_z(model, embeddings, images)
    expected = (added * z.grad).sum(-1)
    stream = result.streams["pixel_values"]
    assert stream.sinks.shape == (2, 1, tokens) and stream.grid == grid and stream.prefix == 1
    torch.testing.assert_close(stream.sinks[:, 0], expected, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(result.positional["pixel_values"], expected[:, 1:],
                               rtol=1e-10, atol=1e-14)
    # the stock table is untouched and the embeddings are restored
    assert "interpolate_pos_encoding" not in vars(embeddings)
    assert "forward" not in vars(embeddings)


def test_deit_called_with_interpolation_makes_the_resampled_table_the_leaf():
    model, images = _double(*hf_vision(tf.DeiTForImageClassificationWithTeacher, tf.DeiTConfig,
                                       side=40)[:2])
    embeddings = model.deit.embeddings
    added = _stock_table(embeddings, 2 + 25, 40, 40)                  # class, distillation
    inputs = {"pixel_values": images, "interpolate_pos_encoding": True}
    result, z = _explain_keeping_z(model, embeddings, inputs)
    with torch.no_grad():
        torch.testing.assert_close(result.logits, model(**inputs).logits, rtol=0, atol=0)
    expected = (added * z.grad).sum(-1)
    stream = result.streams["pixel_values"]
    assert stream.prefix == 2 and stream.grid == (5, 5)
    torch.testing.assert_close(stream.sinks[:, 0], expected, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(result.positional["pixel_values"], expected[:, 2:],
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_clip_and_siglip_called_with_interpolation_make_the_resampled_table_the_leaf(which):
    """CLIP's and SigLIP's table is a module, resampled from its weight by the embeddings'
    ``interpolate_pos_encoding`` at another size: the table it returns, as added, is the leaf
    (sinks == P dR/dz); at the configured size the stock code reads the module itself and the
    explanation equals the call without interpolation."""
    classes = {"clip": (tf.CLIPForImageClassification, tf.CLIPConfig, 1),
               "siglip": (tf.SiglipForImageClassification, tf.SiglipConfig, 0)}
    model_class, config_class, prefix = classes[which]
    model, images = _double(*hf_vision(model_class, config_class, side=40)[:2])
    embeddings = model.vision_model.embeddings
    width = embeddings.position_embedding.weight.shape[-1]
    with torch.no_grad():
        added = embeddings.interpolate_pos_encoding(
            torch.zeros(1, prefix + 25, width, dtype=torch.float64), 40, 40).clone()
    inputs = {"pixel_values": images, "interpolate_pos_encoding": True}
    result, z = _explain_keeping_z(model, embeddings, inputs)
    with torch.no_grad():
        torch.testing.assert_close(result.logits, model(**inputs).logits, rtol=0, atol=0)
    expected = (added * z.grad).sum(-1)
    stream = result.streams["pixel_values"]
    assert stream.prefix == prefix and stream.grid == (5, 5)
    torch.testing.assert_close(stream.sinks[:, 0], expected, rtol=1e-10, atol=1e-14)
    assert result.positional["pixel_values"].abs().sum() > 0
    small, pixels = _double(*hf_vision(model_class, config_class, side=32)[:2])
    plain = explain(small, pixels)
    resampled = explain(small, {"pixel_values": pixels, "interpolate_pos_encoding": True})
    assert resampled.streams["pixel_values"].sinks.shape == plain.streams["pixel_values"].sinks.shape
    torch.testing.assert_close(resampled.positional["pixel_values"],
                               plain.positional["pixel_values"], rtol=0, atol=0)


def test_registers_are_outside_the_tables_layout():
    """DINOv2 with registers inserts its registers after the position add: the sinks follow the
    table (class token, patches); the registers' slots of ``z`` carry no positional relevance."""
    registers = 3
    model, images = _double(*hf_vision(tf.Dinov2WithRegistersForImageClassification,
                                       tf.Dinov2WithRegistersConfig, side=40, mlp_ratio=2,
                                       num_register_tokens=registers)[:2])
    embeddings = model.dinov2_with_registers.embeddings
    added = _stock_table(embeddings, 1 + 25, 40, 40)
    result, z = _explain_keeping_z(model, embeddings, images)
    assert z.shape[1] == 1 + registers + 25
    grad = torch.cat([z.grad[:, :1], z.grad[:, 1 + registers:]], dim=1)  # the table's slots
    expected = (added * grad).sum(-1)
    stream = result.streams["pixel_values"]
    assert stream.prefix == 1 and stream.sinks.shape == (2, 1, 26)
    torch.testing.assert_close(stream.sinks[:, 0], expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("which", ["vit", "siglip", "clip"])
def test_a_mapping_and_the_plain_tensor_give_the_same_explanation(which):
    model_class, config_class = {
        "vit": (tf.ViTForImageClassification, tf.ViTConfig),
        "siglip": (tf.SiglipForImageClassification, tf.SiglipConfig),
        "clip": (tf.CLIPForImageClassification, tf.CLIPConfig)}[which]
    model, images, _ = hf_vision(model_class, config_class)
    plain = explain(model, images)
    mapped = explain(model, {"pixel_values": images})
    assert torch.equal(plain.logits, mapped.logits)
    torch.testing.assert_close(plain.relevance, mapped.relevance, rtol=0, atol=0)
    torch.testing.assert_close(plain.positional, mapped.positional, rtol=0, atol=0)


def test_layouts_of_the_families():
    deit, images, _ = hf_vision(tf.DeiTForImageClassification, tf.DeiTConfig)
    assert explain(deit, images).streams["pixel_values"].prefix == 2   # class + distillation
    siglip, images, _ = hf_vision(tf.SiglipForImageClassification, tf.SiglipConfig)
    stream = explain(siglip, images).streams["pixel_values"]
    assert stream.prefix == 0 and stream.grid == (4, 4)
    assert stream.labels == ("position_embedding",)
    clip, images, _ = hf_vision(tf.CLIPForImageClassification, tf.CLIPConfig)
    assert [(f.name, path) for f, _, path in plan(clip)] == [
        ("hf_clip_classifier", ""), ("clip_vision", "vision_model")]
    result = explain(clip, images)
    assert result.families == ("hf_clip_classifier", "clip_vision")
    assert result.streams["pixel_values"].prefix == 1


def test_siglips_pooling_head_carries_no_relevance():
    """The classifier averages the last hidden state; the attention-pool head
    (``vision_use_head``) runs but is not read: with it removed the explanation is the same."""
    model, images, _ = hf_vision(tf.SiglipForImageClassification, tf.SiglipConfig)
    model, images = _double(model, images)
    assert model.config.vision_config.vision_use_head
    with_head = explain(model, images)
    model.vision_model.use_head = False
    del model.vision_model.head
    without = explain(model, images)
    assert torch.equal(with_head.logits, without.logits)
    torch.testing.assert_close(with_head.relevance, without.relevance, rtol=0, atol=0)
    torch.testing.assert_close(with_head.positional, without.positional, rtol=0, atol=0)


def test_inside_lrp_the_table_is_added_per_sample_and_restored_after():
    model, images, _ = hf_vision(tf.Dinov2ForImageClassification, tf.Dinov2Config, side=40,
                                 mlp_ratio=2)
    table = model.dinov2.embeddings.position_embeddings
    before = table.detach().clone()
    with lrp(model) as state:
        model(pixel_values=images)
        leaves = state.parts[0].source.leaves()
        assert len(leaves) == 1 and leaves[0].shape == (2, 26, 32)
        assert leaves[0].requires_grad and leaves[0].is_leaf
        assert model.dinov2.embeddings.position_embeddings is table
    assert torch.equal(table, before) and table.grad is None
    assert vars(model.dinov2.embeddings).keys().isdisjoint({"forward", "interpolate_pos_encoding"})
