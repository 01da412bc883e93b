"""The one rule for ``torch.nn.MultiheadAttention`` (modules/adapters/multihead_attention.py):
the stock module with its query, key and output gradients halved is AttnLRP's uniform rule on
``Q K^T`` and ``A V`` written out on the projected q, k, v (float64), for torchvision's
self-attention (``x, x, x``), SigLIP 2's pooling (a probe over masked tokens) and a
sequence-first module with a key padding mask; its values are the stock module's."""
import math

import pytest
import torch
import torch.nn.functional as F

from palrp.modules.adapters.multihead_attention import multihead_attention
from palrp.modules.patching import UnsupportedModelError
from palrp.modules.rules import RuleSet, UNIFORM_RULES, scale_grad


def _uniform_reference(module, query, key, value, mask):
    """The rule by hand (batch-first inputs; ``mask`` additive, (B * heads, L, S) or None):
    q, k halved after their projections, ``A V`` halved before the out-projection."""
    heads = module.num_heads
    wq, wk, wv = module.in_proj_weight.chunk(3)
    bq, bk, bv = module.in_proj_bias.chunk(3)

    def split(t):
        return t.unflatten(-1, (heads, -1)).transpose(1, 2)

    q, k, v = split(F.linear(query, wq, bq)), split(F.linear(key, wk, bk)), split(F.linear(value, wv, bv))
    scores = scale_grad(q, 0.5) @ scale_grad(k, 0.5).transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask.view(scores.shape)
    out = scale_grad(scores.softmax(-1) @ v, 0.5).transpose(1, 2).flatten(2)
    return module.out_proj(out)


def _module(batch_first):
    torch.manual_seed(0)
    module = torch.nn.MultiheadAttention(12, 3, batch_first=batch_first).double().eval()
    with torch.no_grad():
        module.in_proj_bias.normal_()
        module.out_proj.bias.normal_()
    return module


def _input_gradients(fn, tensors, upstream):
    tensors = [t.detach().requires_grad_() for t in tensors]
    out = fn(*tensors)
    out.backward(upstream)
    return out.detach(), [t.grad for t in tensors]


def _check(module, inputs, call, reference, batch_first=True):
    rule = multihead_attention(UNIFORM_RULES)(module, module.forward)
    upstream = torch.randn_like(reference(*inputs))
    ours, ours_grads = _input_gradients(lambda *t: call(rule, *t)[0], inputs, upstream)
    theirs, theirs_grads = _input_gradients(reference, inputs, upstream)
    with torch.no_grad():
        stock = call(module, *inputs)[0]
    torch.testing.assert_close(ours, stock, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-13)
    for a, b in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
        assert a.abs().sum() > 0


def test_self_attention_as_torchvision_calls_it():
    module = _module(batch_first=True)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    _check(module, [x], lambda m, x: m(x, x, x, need_weights=False),
           lambda x: _uniform_reference(module, x, x, x, None))


def test_a_probe_over_masked_tokens_as_siglip2_calls_it():
    module = _module(batch_first=True)
    probe = torch.randn(2, 1, 12, dtype=torch.float64)
    tokens = torch.randn(2, 6, 12, dtype=torch.float64)
    mask = torch.zeros(2, 1, 1, 6, dtype=torch.float64)
    mask[1, ..., 4:] = torch.finfo(torch.float64).min
    mask = mask.repeat(1, 3, 1, 1).reshape(-1, 1, 6)
    _check(module, [probe, tokens], lambda m, p, t: m(p, t, t, attn_mask=mask),
           lambda p, t: _uniform_reference(module, p, t, t, mask))


def test_sequence_first_with_a_key_padding_mask():
    module = _module(batch_first=False)
    query = torch.randn(3, 2, 12, dtype=torch.float64)
    memory = torch.randn(4, 2, 12, dtype=torch.float64)
    padding = torch.tensor([[False] * 4, [False, False, True, True]])
    additive = torch.zeros(2, 4, dtype=torch.float64).masked_fill(padding, float("-inf"))
    additive = additive[:, None, None, :].expand(2, 3, 3, 4).reshape(6, 3, 4)

    def reference(q, m):
        out = _uniform_reference(module, q.transpose(0, 1), m.transpose(0, 1),
                                 m.transpose(0, 1), additive)
        return out.transpose(0, 1)

    _check(module, [query, memory], lambda m, q, k: m(q, k, k, key_padding_mask=padding),
           reference)


def test_the_constant_rule_is_refused_by_name():
    module = _module(batch_first=True)
    with pytest.raises(UnsupportedModelError, match="uniform attention rule only"):
        multihead_attention(RuleSet(attention="constant"))(module, module.forward)
