"""Relative position biases as positional leaves (transformers Swin and BEiT;
docs/method.md, "Relative position bias"): the engine's sinks against an independent reading.

The reference runs the same LRP backward (``lrp(model, "attn_lrp")``: every rule, no positional
leaf made by the engine), makes each bias module's output a leaf itself with a forward hook
(one copy per window and sample, the stock kernel's layout), and reads ``b * dR/db`` per key;
for Swin the keys are mapped to the patch grid with transformers' own ``window_partition`` of
an index grid (and ``torch.roll`` for a shifted block), and a merged stage's tokens are spread
over the 2 x 2 patches they cover. In float64 both must agree to 1e-10.
"""
import torch
from transformers.models.swin import modeling_swin

from builders_hf_vision import beit, swin
from palrp.modules.engine import explain, lrp


def _reference(model, images, bias_class, target):
    """Per bias module (in forward order): its relevance (B*windows or B, heads, Q, K)."""
    leaves, handles = [], []

    def hook(module, args, output):
        batch = images.shape[0]
        layer = output
        # a Swin block's bias is shared by the windows: give each window and sample its own copy
        windows = getattr(module, "_windows", 1)
        leaf = layer.detach().expand(batch * windows, *layer.shape[1:]).clone().requires_grad_(True)
        leaves.append(leaf)
        return leaf

    for module in model.modules():
        if isinstance(module, bias_class):
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.enable_grad(), lrp(model, "attn_lrp"):
            pixels = images.clone().requires_grad_(True)
            logits = model(pixels).logits
            score = logits.gather(1, target[:, None]).sum()
            grads = torch.autograd.grad(score, leaves)
    finally:
        for handle in handles:
            handle.remove()
    return [leaf.detach() * grad for leaf, grad in zip(leaves, grads)]


def _grid_index(height, width, size, shift):
    """(windows, size * size): the grid position of every key of every window of a block."""
    index = torch.arange(height * width, dtype=torch.float64).view(1, height, width, 1)
    if shift:
        index = torch.roll(index, shifts=(-shift, -shift), dims=(1, 2))
    return modeling_swin.window_partition(index, size).reshape(-1, size * size).long()


def test_swin_window_bias_relevance_is_read_per_key_patch_on_the_first_stage_grid():
    model, images, _ = swin()
    model, images = model.double(), images.double()
    blocks = [block for stage in model.swin.encoder.layers for block in stage.blocks]
    grids = [(8, 8), (8, 8), (4, 4), (4, 4)]
    for block, (height, width) in zip(blocks, grids):
        block.attention.relative_position_bias._windows = (height // 4) * (width // 4)
    try:
        result = explain(model, images)
        reference = _reference(model, images, modeling_swin.SwinRelativePositionBias,
                               result.target)
    finally:
        for block in blocks:
            del block.attention.relative_position_bias._windows
    stream = result.streams["pixel_values"]
    assert stream.grid == (8, 8) and stream.prefix == 0
    assert stream.labels == tuple(f"relative_bias_{i}" for i in range(4))
    batch = images.shape[0]
    for k, (block, (height, width), relevance) in enumerate(zip(blocks, grids, reference)):
        size, shift = int(block.window_size), int(block.shift_size)
        per_key = relevance.sum(dim=(1, 2)).view(batch, -1, size * size)   # (B, windows, keys)
        index = _grid_index(height, width, size, shift)
        on_grid = torch.zeros(batch, height * width, dtype=torch.float64)
        on_grid.scatter_add_(1, index.reshape(1, -1).expand(batch, -1), per_key.reshape(batch, -1))
        on_grid = on_grid.view(batch, height, width)
        if (height, width) != (8, 8):                 # stage 1: each token covers 2 x 2 patches
            on_grid = (on_grid / 4).repeat_interleave(2, 1).repeat_interleave(2, 2)
        torch.testing.assert_close(stream.sinks[:, k], on_grid.reshape(batch, 64),
                                   rtol=1e-10, atol=1e-13)
        assert on_grid.abs().min() > 0
        # the spread keeps the sum: the block's bias relevance, all of it on the map
        torch.testing.assert_close(stream.sinks[:, k].sum(-1), relevance.reshape(batch, -1).sum(-1),
                                   rtol=1e-10, atol=1e-13)


def test_swin_padded_windows_and_odd_merging_against_a_per_window_loop():
    """36 x 44 px, patch 4: a 9 x 11 grid padded to 3 x 3 windows of 4 (shifted blocks: padded,
    then shifted), merged to 5 x 6 (odd sides padded), padded to 2 x 2 windows. Every block's
    sink equals the per-window loop of tests/test_vision_positional.py that drops the
    padding's keys and splits an edge token over the patches it covers (float64, 1e-10)."""
    from test_vision_positional import _expected_padded

    model, images, _ = swin(side=44, height=36)
    model, images = model.double(), images.double()
    blocks = [block for stage in model.swin.encoder.layers for block in stage.blocks]
    grids = [(9, 11), (9, 11), (5, 6), (5, 6)]
    for block, (height, width) in zip(blocks, grids):
        block.attention.relative_position_bias._windows = -(-height // 4) * -(-width // 4)
    try:
        result = explain(model, images)
        reference = _reference(model, images, modeling_swin.SwinRelativePositionBias,
                               result.target)
    finally:
        for block in blocks:
            del block.attention.relative_position_bias._windows
    stream = result.streams["pixel_values"]
    assert stream.grid == (9, 11)
    assert [int(block.shift_size) for block in blocks] == [0, 2, 0, 2]
    for k, (block, grid, relevance) in enumerate(zip(blocks, grids, reference)):
        size, shift = int(block.window_size), int(block.shift_size)
        expected = _expected_padded(relevance, images.shape[0], grid, (size, size),
                                    (shift, shift), (9, 11), shift_first=False)
        torch.testing.assert_close(stream.sinks[:, k], expected, rtol=1e-10, atol=1e-13)
        assert expected.abs().min() > 0


def test_swin_with_window_padding_and_an_absolute_table():
    """A 40 px image: a 10 x 10 grid padded to windows of 4 (and 5 x 5 merged); the stock
    logits, finite maps on the 10 x 10 grid, the table a sink of its own."""
    model, images, _ = swin(side=40, use_absolute_embeddings=True)
    inputs = {"pixel_values": images, "interpolate_pos_encoding": True}
    result = explain(model, inputs)
    with torch.no_grad():
        torch.testing.assert_close(result.logits, model(**inputs).logits, rtol=1e-5, atol=1e-5)
    stream = result.streams["pixel_values"]
    assert stream.grid == (10, 10) and stream.sinks.shape == (2, 5, 100)
    assert stream.labels[0] == "position_embeddings"
    assert torch.isfinite(stream.sinks).all() and stream.sinks[:, 0].abs().min() > 0


def test_beit_bias_relevance_per_key_token_per_layer_and_shared():
    from transformers.models.beit import modeling_beit

    for shared in (False, True):
        overrides = ({"use_shared_relative_position_bias": True} if shared
                     else {"use_relative_position_bias": True})
        model, images, _ = beit(**overrides)
        model, images = model.double(), images.double()
        result = explain(model, images)
        reference = _reference(model, images, modeling_beit.BeitRelativePositionBias,
                               result.target)
        stream = result.streams["pixel_values"]
        assert stream.prefix == 1 and stream.grid == (4, 4)
        assert len(reference) == (1 if shared else 2) == stream.sinks.shape[1]
        for k, relevance in enumerate(reference):
            expected = relevance.sum(dim=(1, 2))                      # (B, 1 + N) per key
            torch.testing.assert_close(stream.sinks[:, k], expected, rtol=1e-10, atol=1e-13)
            assert expected[:, 1:].abs().min() > 0


class _KeepScores(torch.overrides.TorchFunctionMode):
    """Keeps every sum of two (windows, heads, w^2, w^2) tensors: in a Swin V2 block the one
    such sum is ``scores + bias`` (the masks are added to a 5-D view, the residuals are 3-D)."""

    def __init__(self, keys: int):
        super().__init__()
        self.keys, self.kept = keys, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.Tensor.__add__, torch.Tensor.add) and len(args) == 2 and all(
                torch.is_tensor(a) and a.dim() == 4 and a.shape[-2:] == (self.keys, self.keys)
                for a in args) and args[0].shape == args[1].shape:
            self.kept.append((args[1], out))
        return out


def test_swinv2_continuous_bias_is_read_per_key_patch_at_the_score_addition():
    """Swin V2's bias, made a leaf inside its inline attention: the engine's sinks equal
    ``b * dR/ds`` at the score sum ``s = cos-scores + b`` (the scores kept as they are formed),
    mapped to the grid by transformers' ``window_partition`` of an index grid; the leaf holds
    the stock bias ``16 sigmoid(MLP(coords))[index]`` in every window."""
    from builders_hf_vision import swinv2
    from transformers.models.swinv2 import modeling_swinv2

    model, images, _ = swinv2()
    model, images = model.double(), images.double()
    blocks = [block for stage in model.swinv2.encoder.layers for block in stage.blocks]
    grids = [(8, 8), (8, 8), (4, 4), (4, 4)]
    keeper = _KeepScores(16)
    with torch.enable_grad(), lrp(model) as state:
        with keeper:
            logits = model(images).logits
        target = logits.argmax(-1)
        leaves = state.parts[0].source.leaves()
        scores = [out for _, out in keeper.kept]
        assert len(leaves) == len(scores) == 4
        grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), [*leaves, *scores])
        sinks = state.parts[0].source.relevance(grads[:4], 64)
    batch = images.shape[0]
    for k, (block, (height, width), (bias, _), grad) in enumerate(
            zip(blocks, grids, keeper.kept, grads[4:])):
        attention = block.attention.self
        with torch.no_grad():
            table = attention.continuous_position_bias_mlp(attention.relative_coords_table)
            stock = 16 * torch.sigmoid(table.view(-1, attention.num_attention_heads)[
                attention.relative_position_index.view(-1)].view(16, 16, -1).permute(2, 0, 1))
        assert torch.equal(bias.detach(), stock.expand_as(bias))
        size, shift = int(block.window_size), int(block.shift_size)
        per_key = (bias.detach() * grad).sum(dim=(1, 2)).view(batch, -1, size * size)
        index = modeling_swinv2.window_partition(
            torch.roll(torch.arange(height * width, dtype=torch.float64).view(1, height, width, 1),
                       shifts=(-shift, -shift), dims=(1, 2)), size).reshape(-1).long()
        on_grid = torch.zeros(batch, height * width, dtype=torch.float64)
        on_grid.scatter_add_(1, index[None].expand(batch, -1), per_key.reshape(batch, -1))
        on_grid = on_grid.view(batch, height, width)
        if (height, width) != (8, 8):
            on_grid = (on_grid / 4).repeat_interleave(2, 1).repeat_interleave(2, 2)
        torch.testing.assert_close(sinks[:, k], on_grid.reshape(batch, 64), rtol=1e-10, atol=1e-13)
        assert on_grid.abs().min() > 0


def test_the_bias_leaf_changes_no_pixel_relevance():
    """The bias depends on no pixel: making it a leaf (PA-LRP) or a constant (AttnLRP) gives the
    same pixel relevance, to float64 precision (the split at the score sum is exact)."""
    from builders_hf_vision import swinv2

    for build in (swin, swinv2, lambda: beit(use_relative_position_bias=True)):
        model, images, _ = build()
        model, images = model.double(), images.double()
        palrp = explain(model, images)
        attnlrp = explain(model, images, palrp.target, "attn_lrp")
        torch.testing.assert_close(palrp.streams["pixel_values"].pixels,
                                   attnlrp.streams["pixel_values"].pixels, rtol=1e-10, atol=1e-13)
        assert palrp.positional["pixel_values"].abs().sum() > 0
