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

    def recording(source, bias, batch, grid, window, shift, patch_grid, label):
        out = stock(source, bias, batch, grid, window, shift, patch_grid, label)
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
    """A token grid padded to whole windows (its padding tokens have no patch) and the constant
    attention rule (it gives the bias nothing) are refused, the model left unpatched."""
    from builders_vision import timm_model
    from palrp.modules.family import UnsupportedModelError

    padded, images, _ = timm_model("swin_tiny_patch4_window7_224", 32, img_size=32,
                                   patch_size=2, embed_dim=12, depths=(2,), num_heads=(2,),
                                   window_size=3)
    with pytest.raises(UnsupportedModelError, match="padded to whole 3x3 windows"):
        explain(padded, images)
    model, images, _ = tiny_swin()
    with pytest.raises(ValueError, match=r"implements the rule sets \['uniform', 'custom'\]"):
        explain(model, images, rules="paper")
    from palrp.modules.rules import RuleSet
    with pytest.raises(UnsupportedModelError, match="uniform attention rule only"):
        explain(model, images, rules=RuleSet(attention="constant", gamma_linear=0.1))
    assert all("forward" not in vars(m) and "_attn" not in vars(m) for m in model.modules())
