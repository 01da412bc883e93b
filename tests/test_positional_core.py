"""The shared positional source, the one combine step and the reversible patching mechanism."""
import pytest
import torch
import torch.nn as nn

from palrp.modules.patching import Patcher, RuleMap, patching
from palrp.modules.positional import (TEXT_PAPER, VISION_PAPER, Combination, PositionalSource,
                                combine)


def test_source_makes_per_sample_leaves_and_reads_relevance_at_offsets():
    source = PositionalSource()
    pos = torch.arange(6.0).reshape(1, 3, 2)                      # (1, n=3, D=2)
    leaf = source.leaf(pos, batch_size=2, label="pos_embed", offset=1)
    assert leaf.shape == (2, 3, 2) and leaf.requires_grad and leaf.is_leaf
    rope = torch.ones(2, 4, 2)
    cos = source.leaf(rope, 2, "cos_0")
    grads = [torch.full((2, 3, 2), 2.0), None]
    rel = source.relevance(grads, num_positions=4)
    assert rel.shape == (2, 2, 4)
    # p_i = sum_d P[i, d] * grad; placed after the one prefix position
    torch.testing.assert_close(rel[0, 0], torch.tensor([0.0, 2.0, 10.0, 18.0]))
    torch.testing.assert_close(rel[:, 1], torch.zeros(2, 4))     # unused leaf counts 0
    assert source.labels == ["pos_embed", "cos_0"]
    assert cos is source.leaves()[1]
    source.clear()
    assert source.leaves() == []


def test_a_score_bias_leaf_is_read_per_key():
    """An attention-score bias (B, heads, queries, keys), e.g. ALiBi: relevance bias * grad,
    summed over heads and queries, lands on the key positions."""
    source = PositionalSource()
    bias = torch.arange(24.0).reshape(1, 2, 3, 4)
    leaf = source.leaf(bias, 2, "alibi_0", position_dim=3)
    assert leaf.shape == (2, 2, 3, 4)
    grad = torch.ones(2, 2, 3, 4)
    grad[1] = 2.0
    rel = source.relevance([grad], num_positions=4)
    expected = bias[0].sum(dim=(0, 1))                                # per key
    torch.testing.assert_close(rel[0, 0], expected)
    torch.testing.assert_close(rel[1, 0], 2 * expected)
    with pytest.raises(ValueError, match="position_dim"):
        source.leaf(bias, 2, "bad", position_dim=4)


def test_a_spread_leaf_places_its_slots_on_the_streams_positions():
    """``spread``: a leaf whose slots are not the stream's positions (a score bias read per key
    slot, its slots in another order) is mapped by the given callable, from ``offset`` on."""
    source = PositionalSource()
    bias = torch.arange(8.0).reshape(1, 1, 2, 4)                     # 4 key slots
    reverse = lambda per_slot: per_slot.flip(-1).repeat_interleave(2, -1) / 2   # noqa: E731
    source.leaf(bias, 1, "window", offset=1, position_dim=3, spread=reverse)
    rel = source.relevance([torch.ones(1, 1, 2, 4)], num_positions=9)
    per_slot = bias[0, 0].sum(0)                                     # (4,) per key slot
    torch.testing.assert_close(rel[0, 0, 1:], per_slot.flip(0).repeat_interleave(2) / 2)
    assert rel[0, 0, 0] == 0 and float(rel.sum()) == float(per_slot.sum())


def test_source_without_attribution_gives_constants():
    source = PositionalSource(attribute=False)
    pos = torch.randn(1, 3, 2, requires_grad=True)
    out = source.leaf(pos, 4, "pos_embed")
    assert not out.requires_grad and source.leaves() == []
    assert source.relevance([], 3) is None
    with pytest.raises(ValueError, match="expected"):
        PositionalSource().leaf(torch.zeros(3, 3, 2), 2, "bad")


def test_combine_vision_and_text_presets_by_hand():
    tok = torch.tensor([[1.0, -2.0, 0.5]])
    pe = torch.tensor([[[0.5, 1.0, -1.0], [-0.5, 0.0, 2.0]]])    # K = 2 sinks
    # vision: clamp(tok + sum_k p_k, 0) for R(target) = 1 (a logit of 1: nothing to divide)
    one = torch.ones(1)
    torch.testing.assert_close(combine(tok, pe, VISION_PAPER, one),
                               torch.tensor([[1.0, 0.0, 1.5]]))
    torch.testing.assert_close(combine(tok, None, VISION_PAPER, one),
                               torch.tensor([[1.0, 0.0, 0.5]]))
    # seeded R(target) = logit, the vision map divides by the logit first (unit_seed)
    torch.testing.assert_close(combine(-2.0 * tok, -2.0 * pe, VISION_PAPER, torch.tensor([-2.0])),
                               torch.tensor([[1.0, 0.0, 1.5]]))
    with pytest.raises(ValueError, match="explained logits"):
        combine(tok, pe, VISION_PAPER)
    # text single norm: (tok + sum |p_k|) / max |.|  = [2, -1, 3.5] / 3.5
    torch.testing.assert_close(combine(tok, pe, TEXT_PAPER),
                               torch.tensor([[2.0, -1.0, 3.5]]) / 3.5)
    pe_only = Combination(absolute=True, normalise="single", pe_only=True)
    torch.testing.assert_close(combine(tok, pe, pe_only), torch.tensor([[1.0, 1.0, 3.0]]) / 3.0)
    clamp = Combination(absolute=False, normalise="single", clamp_pe=True)
    torch.testing.assert_close(combine(tok, pe, clamp), torch.tensor([[1.0, -1.0, 1.5]]) / 1.5)
    # per part: tok / 2 + p_0 / 1 + p_1 / 2 (abs), then / max
    per_part = Combination(absolute=True, normalise="per_part")
    expected = torch.tensor([[0.5 + 0.5 + 0.25, -1.0 + 1.0 + 0.0, 0.25 + 1.0 + 1.0]])
    torch.testing.assert_close(combine(tok, pe, per_part), expected / expected.abs().max())
    # an all-zero map stays zero, never NaN
    zero = combine(torch.zeros(1, 3), torch.zeros(1, 2, 3), TEXT_PAPER)
    assert torch.equal(zero, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="PE-only"):
        combine(tok, None, pe_only)
    with pytest.raises(ValueError, match="does not match"):
        combine(tok, pe[:, :, :2], TEXT_PAPER)


def test_combine_works_on_pixel_maps():
    pixel = torch.randn(2, 4, 4)
    pe = torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(combine(pixel, pe, logit=torch.ones(2)),
                               (pixel + pe[:, 0]).clamp(min=0))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(3)
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(self.norm(x))


def test_patching_restores_exactly_and_refuses_nesting():
    net = _Net()
    x = torch.randn(2, 3)
    before = net(x).detach()
    rules = RuleMap("toy", ("_Net",), {"LayerNorm": "double"})
    calls = []
    with patching(net) as patcher:
        counts = patcher.apply_rules(rules, {"double": lambda m, orig: lambda t: 2 * orig(t)})
        patcher.set_attr(net.lin, "flag", 1)
        patcher.on_exit(lambda: calls.append("cleared"))
        assert counts == {"double": 1}
        assert not torch.allclose(net(x), before)
        with pytest.raises(RuntimeError, match="already active"):
            with patching(net):
                pass
    torch.testing.assert_close(net(x), before)
    assert "forward" not in vars(net.norm) and not hasattr(net.lin, "flag")
    assert calls == ["cleared"]
    with pytest.raises(KeyError, match="does not implement"):
        Patcher(net).apply_rules(rules, {})


def test_patching_restores_when_the_body_raises():
    net = _Net()
    with pytest.raises(ZeroDivisionError):
        with patching(net) as patcher:
            patcher.wrap_forward(net.norm, lambda orig: lambda t: t)
            1 / 0
    assert "forward" not in vars(net.norm)
    with patching(net):                      # usable again
        pass
