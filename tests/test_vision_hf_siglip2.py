"""SigLIP 2 (NaFlex patch sequences; hf_siglip2 around the siglip2_vision part): the leaf is the
table as resized and added per image, the canvas layout, a batch of different grids.

- ``R(P) = P dR/dz`` at the embeddings output ``z = E + P``, with ``P`` the stock resizing of the
  table to each image's grid (``Siglip2VisionEmbeddings.resize_positional_embeddings``), put on
  the canvas by hand: float64 1e-10;
- the canvas puts the processor's patch order back into an image: unpatchifying a patchified
  image gives the image;
- a batch of a 4 x 4 and a 3 x 4 image (four padding patches) equals each image alone (its own
  grid, no padding) on its region of the canvas, and the canvas outside its grid holds 0.
"""
import torch

from builders_hf_vision import patchify, siglip2, siglip2_inputs
from test_vision_hf import _explain_keeping_z
from palrp.modules.adapters import transformers as hf_adapter
from palrp.modules.engine import explain, lrp

MIXED = ((4, 4), (3, 4))


def _double(inputs):
    return {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}


def test_the_leaf_is_the_table_resized_to_each_image_as_added():
    model, _, _ = siglip2()
    model, inputs = model.double(), _double(siglip2_inputs(MIXED))
    embeddings = model.vision_model.embeddings
    result, z = _explain_keeping_z(model, embeddings, inputs)
    with torch.no_grad():
        side = embeddings.position_embedding_size
        table = embeddings.resize_positional_embeddings(
            embeddings.position_embedding.weight.reshape(side, side, -1),
            inputs["spatial_shapes"], max_length=inputs["pixel_values"].shape[1])
    per_position = (table * z.grad).sum(-1)                    # (B, N)
    expected = torch.zeros(2, 4, 4, dtype=torch.float64)
    for b, (rows, cols) in enumerate(MIXED):
        expected[b, :rows, :cols] = per_position[b, :rows * cols].view(rows, cols)
    stream = result.streams["pixel_values"]
    assert stream.grid == (4, 4) and stream.prefix == 0 and stream.pixels.shape == (2, 32, 32)
    torch.testing.assert_close(stream.sinks[:, 0], expected.view(2, 16), rtol=1e-10, atol=1e-13)
    assert expected[0].abs().min() > 0 and expected[1, :3].abs().min() > 0


def test_the_canvas_unpatchifies_in_the_processors_order():
    model, inputs, _ = siglip2()
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    inputs = dict(inputs, pixel_values=patchify(image, 8))
    with lrp(model) as state:
        model(**inputs)
        part = next(p for p in state.parts if p.stream == "pixel_values")
        geometry = hf_adapter.geometry(part, inputs["pixel_values"])
    assert torch.equal(geometry["canvas"](inputs["pixel_values"]), image)


def test_a_batch_of_different_grids_equals_each_image_alone():
    model, _, _ = siglip2()
    model = model.double()
    inputs = _double(siglip2_inputs(MIXED))
    batched = explain(model, inputs)
    alone = {"pixel_values": inputs["pixel_values"][1:, :12],
             "pixel_attention_mask": inputs["pixel_attention_mask"][1:, :12],
             "spatial_shapes": inputs["spatial_shapes"][1:]}
    single = explain(model, alone)
    torch.testing.assert_close(batched.logits[1], single.logits[0], rtol=1e-9, atol=1e-12)
    for name in ("relevance", "positional"):
        grid = getattr(batched, name)["pixel_values"][1].view(4, 4)
        own = getattr(single, name)["pixel_values"][0].view(3, 4)
        torch.testing.assert_close(grid[:3], own, rtol=1e-7, atol=1e-10)
        assert torch.equal(grid[3:], torch.zeros_like(grid[3:]))
    assert batched.streams["pixel_values"].pixels[1, 24:].abs().max() == 0
