"""Positional leaves of the vision families beyond timm's ViT (docs/method.md, section 14).

Swin (timm V1 and V2, torchvision V1 and V2): the relevance of each block's bias, ``bias * grad`` at the score sum, lands on the key
patches of its windows (shift undone) and is spread uniformly over the input patches a coarser
stage's token covers; checked against an explicit loop over windows, keys and covered patches
(float64). Every family of tests/builders_vision.py: each positional sink carries relevance."""
import pytest
import torch

import palrp.modules.adapters.torchvision as torchvision_adapter
import palrp.modules.adapters.windows as windows
from builders_vision import BUILDERS, MORE_BUILDERS, tiny_swin, tiny_swin_v2, tiny_tv_swin
from palrp.modules.engine import explain, lrp


def _expected(bias_grad, batch, grid, window, shift, patch_grid):
    """Per input patch: each window's key j gets sum over heads and queries of bias * grad,
    at its place on the unshifted grid, split evenly over the patches it covers."""
    (height, width), (wh, ww), (sh, sw) = grid, window, shift
    fh, fw = patch_grid[0] // height, patch_grid[1] // width
    per_key = bias_grad.sum((1, 2)).tolist()              # (B * windows, N)
    rows, cols = height // wh, width // ww
    out = [[[0.0] * patch_grid[1] for _ in range(patch_grid[0])] for _ in range(batch)]
    for b in range(batch):
        for r in range(rows):
            for c in range(cols):
                w = (b * rows + r) * cols + c
                for j in range(wh * ww):
                    y = (r * wh + j // ww + sh) % height
                    x = (c * ww + j % ww + sw) % width
                    for py in range(y * fh, (y + 1) * fh):
                        for px in range(x * fw, (x + 1) * fw):
                            out[b][py][px] += per_key[w][j] / (fh * fw)
    return torch.tensor(out, dtype=torch.float64).reshape(batch, -1)


@pytest.mark.parametrize("make, adapter", [(tiny_swin, windows), (tiny_swin_v2, windows),
                                           (tiny_tv_swin(), torchvision_adapter),
                                           (tiny_tv_swin(v2=True), torchvision_adapter)])
def test_bias_relevance_lands_on_the_key_patches_of_every_window(monkeypatch, make, adapter):
    model, images, _ = make()
    model, images = model.double(), images.double().requires_grad_(True)
    made = []
    stock = windows.bias_on_patch_grid

    def recording(source, bias, batch, grid, window, shift, patch_grid, label, **order):
        out = stock(source, bias, batch, grid, window, shift, patch_grid, label, **order)
        made.append((out, grid, window, shift, patch_grid))
        return out

    monkeypatch.setattr(adapter, "bias_on_patch_grid", recording)
    with lrp(model) as state:
        logits = model(images)
        leaves = state.parts[0].source.leaves()
        score = logits[:, 3].sum()
        grads = torch.autograd.grad(score, leaves + [m[0] for m in made])
        sinks = state.parts[0].source.relevance(grads[:len(leaves)], 256)
    assert len(made) == len(leaves) == 6
    assert {m[3] for m in made} >= {(0, 0), (2, 2)}              # shifted and plain windows
    assert {m[4][0] // m[1][0] for m in made} == {1, 2, 4}       # three stage resolutions
    for k, (bias, grid, window, shift, patch_grid) in enumerate(made):
        expected = _expected(bias.detach() * grads[len(leaves) + k], 2, grid, window, shift,
                             patch_grid)
        torch.testing.assert_close(sinks[:, k], expected, rtol=1e-10, atol=1e-12)
        assert expected.abs().sum() > 0


def _expected_padded(bias_grad, batch, grid, window, shift, patch_grid, shift_first):
    """As :func:`_expected` for a grid padded to whole windows (bottom and right) and a stage
    merged with odd sides padded: a window slot is a place on the padded (and shifted) grid; a
    slot of the padding gets nothing; a token's value is split over the patches it covers
    inside the patch grid (rows ``y * f .. (y + 1) * f - 1``, f = 2^s, cut at H0)."""
    (height, width), (wh, ww), (sh, sw) = grid, window, shift
    rows, cols = -(-height // wh), -(-width // ww)
    f = 1
    while -(-patch_grid[0] // f) != height or -(-patch_grid[1] // f) != width:
        f *= 2
    per_key = bias_grad.sum((1, 2)).tolist()              # (B * windows, N)
    out = [[[0.0] * patch_grid[1] for _ in range(patch_grid[0])] for _ in range(batch)]
    for b in range(batch):
        for r in range(rows):
            for c in range(cols):
                w = (b * rows + r) * cols + c
                for j in range(wh * ww):
                    y, x = r * wh + j // ww, c * ww + j % ww      # place in the window grid
                    if shift_first:                                # shifted, then padded
                        if y >= height or x >= width:
                            continue
                        y, x = (y + sh) % height, (x + sw) % width
                    else:                                          # padded, then shifted
                        y, x = (y + sh) % (rows * wh), (x + sw) % (cols * ww)
                        if y >= height or x >= width:
                            continue
                    covered = [(py, px) for py in range(y * f, min((y + 1) * f, patch_grid[0]))
                               for px in range(x * f, min((x + 1) * f, patch_grid[1]))]
                    for py, px in covered:
                        out[b][py][px] += per_key[w][j] / len(covered)
    return torch.tensor(out, dtype=torch.float64).reshape(batch, -1)


def _timm_swin_36(name):
    from builders_vision import timm_model
    return lambda: timm_model(name, 36, img_size=36, patch_size=2, embed_dim=12,
                              depths=(2, 2, 2), num_heads=(2, 2, 4), window_size=4)


@pytest.mark.parametrize("make, adapter, shift_first", [
    (_timm_swin_36("swin_tiny_patch4_window7_224"), windows, True),
    (_timm_swin_36("swinv2_tiny_window8_256"), windows, True),
    (lambda: tiny_tv_swin()(side=36), torchvision_adapter, False),
    (lambda: tiny_tv_swin(v2=True)(side=36), torchvision_adapter, False)],
    ids=["timm_swin", "timm_swin_v2", "tv_swin", "tv_swin_v2"])
def test_grids_padded_to_whole_windows(monkeypatch, make, adapter, shift_first):
    """36 px, patch 2: grids 18, 9 and 5 (merged with an odd side padded), each padded to whole
    windows of 4 (timm shifts, then pads; torchvision pads, then shifts): the stock logits, and
    every block's sink equal to the per-window loop that drops the padding's keys."""
    model, images, _ = make()
    model, images = model.double(), images.double()
    with torch.no_grad():
        stock = model(images)
    made = []
    original = windows.bias_on_patch_grid

    def recording(source, bias, batch, grid, window, shift, patch_grid, label, **order):
        out = original(source, bias, batch, grid, window, shift, patch_grid, label, **order)
        made.append((out, grid, window, shift, patch_grid))
        return out

    monkeypatch.setattr(adapter, "bias_on_patch_grid", recording)
    with lrp(model) as state:
        logits = model(images.clone().requires_grad_(True))
        leaves = state.parts[0].source.leaves()
        grads = torch.autograd.grad(logits[:, 3].sum(), leaves + [m[0] for m in made])
        sinks = state.parts[0].source.relevance(grads[:len(leaves)], 18 * 18)
    torch.testing.assert_close(logits, stock, rtol=1e-10, atol=1e-12)
    assert [m[1] for m in made] == [(18, 18)] * 2 + [(9, 9)] * 2 + [(5, 5)] * 2
    assert any(m[3] != (0, 0) for m in made if m[1] != (18, 18))  # a padded, shifted block
    for k, (bias, grid, window, shift, patch_grid) in enumerate(made):
        expected = _expected_padded(bias.detach() * grads[len(leaves) + k], 2, grid, window,
                                    shift, patch_grid, shift_first)
        torch.testing.assert_close(sinks[:, k], expected, rtol=1e-10, atol=1e-12)
        assert expected.abs().sum() > 0


MAKERS = [*(m for makers in BUILDERS.values() for m in makers),
          *(m for makers in MORE_BUILDERS.values() for m in makers)]


@pytest.mark.parametrize("make", MAKERS, ids=lambda m: getattr(m, "__name__", "model"))
def test_every_positional_sink_receives_relevance(make):
    """Each sink (every block's bias, every rotary cos/sin, each table) carries relevance in
    the tiny models: none is zero by construction (a table left at zero, a missed leaf)."""
    model, inputs, _ = make()
    record = next(iter(explain(model, inputs).streams.values()))
    assert len(record.labels) == record.sinks.shape[1] > 0
    per_sink = record.sinks.abs().sum((0, 2))
    assert bool((per_sink > 0).all()), dict(zip(record.labels, per_sink.tolist()))


def test_window_refusals_are_one_line():
    """The constant attention rule (it gives the bias nothing) is refused, the model left
    unpatched."""
    from palrp.modules.family import UnsupportedModelError

    model, images, _ = tiny_swin()
    with pytest.raises(ValueError, match=r"implements the rule sets \['uniform', 'custom'\]"):
        explain(model, images, rules="paper")
    from palrp.modules.rules import RuleSet
    with pytest.raises(UnsupportedModelError, match="uniform attention rule only"):
        explain(model, images, rules=RuleSet(attention="constant", gamma_linear=0.1))
    assert all("forward" not in vars(m) and "_attn" not in vars(m) for m in model.modules())
