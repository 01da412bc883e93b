"""A slow explicit float64 T5 with the PA-LRP rules, written from the rules of docs/method.md
(sections 2, 5 and 10), independent of ``modules/``: the engine's T5 explanation must equal it.

Every rule is written as gradient x input (M1) with detached factors:

- RMSNorm, ReLU/GELU: identity, ``y = x * (y / x).detach()`` (here ``x * (w / rms).detach()``
  and ``x * (act(x) / x).detach()``);
- a uniform product ``a * b`` (``QK^T``, ``AV``, the gated FFN):
  ``(op(a, b.detach()) + op(a.detach(), b)) / 2``;
- the relative-position bias of each stack: a leaf added to the scores (the epsilon rule on the
  sum is plain autograd); softmax, masks, residuals, linears: plain.
"""
import math

import torch


def _bucket(distance, bidirectional: bool, buckets: int, max_distance: int):
    """T5's bucket of ``key - query``: exact for small distances, logarithmic up to
    ``max_distance``, one bucket beyond; a bidirectional stack splits the buckets by sign."""
    out = torch.zeros_like(distance)
    if bidirectional:
        buckets //= 2
        out = out + (distance > 0).long() * buckets
        distance = distance.abs()
    else:
        distance = (-distance).clamp(min=0)
    exact = buckets // 2
    far = exact + (torch.log(distance.double().clamp(min=1) / exact)
                   / math.log(max_distance / exact) * (buckets - exact)).long()
    far = far.clamp(max=buckets - 1)
    return out + torch.where(distance < exact, distance, far)


def _identity(x, y_over_x):
    return x * y_over_x.detach()


def _uniform(op, a, b):
    return (op(a, b.detach()) + op(a.detach(), b)) / 2


def _rms(x, norm):
    # the stock T5LayerNorm takes the mean square in float32 whatever the dtype; so does this
    square = x.detach().to(torch.float32).pow(2).mean(-1, keepdim=True)
    return _identity(x, norm.weight * torch.rsqrt(square + norm.variance_epsilon))


def _attention(module, x, source, bias, mask, heads):
    b, s, _ = x.shape
    t = source.shape[1]
    q = module.q(x).view(b, s, heads, -1).transpose(1, 2)
    k = module.k(source).view(b, t, heads, -1).transpose(1, 2)
    v = module.v(source).view(b, t, heads, -1).transpose(1, 2)
    scores = _uniform(lambda p, r: p @ r.transpose(-1, -2), q, k)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = _uniform(torch.matmul, probs, v).transpose(1, 2).reshape(b, s, -1)
    return module.o(out)


def _feed_forward(ff, x):
    dense = ff.DenseReluDense
    n = _rms(x, ff.layer_norm)
    if hasattr(dense, "wi_0"):
        gate = dense.wi_0(n)
        act = _identity(gate, dense.act(gate) / gate)
        return dense.wo(_uniform(torch.mul, act, dense.wi_1(n)))
    h = dense.wi(n)
    return dense.wo(_identity(h, dense.act(h) / h))


def _bias_leaf(stack, batch, s, t, bidirectional):
    """One (batch, heads, s, t) leaf per sample, so the samples' relevance never mixes."""
    attention = stack.block[0].layer[0].SelfAttention
    cfg = stack.config
    distance = torch.arange(t)[None, :] - torch.arange(s)[:, None]
    buckets = _bucket(distance, bidirectional, cfg.relative_attention_num_buckets,
                      cfg.relative_attention_max_distance)
    table = attention.relative_attention_bias.weight.detach()
    bias = table[buckets].permute(2, 0, 1).unsqueeze(0)
    return bias.expand(batch, -1, -1, -1).clone().requires_grad_(True)


def explain(model, ids, decoder_ids):
    """(R(encoder tokens) (B, S), R(decoder tokens) (B, T), R(encoder bias) per key (B, S),
    R(decoder bias) per key (B, T), logits (B, V)) of the argmax next decoder token."""
    cfg = model.config
    heads = cfg.num_heads
    enc, dec = model.get_encoder(), model.get_decoder()
    with torch.enable_grad():
        e_leaf = enc.embed_tokens(ids).detach().requires_grad_(True)
        d_leaf = dec.embed_tokens(decoder_ids).detach().requires_grad_(True)
        s, t = ids.shape[1], decoder_ids.shape[1]
        e_bias = _bias_leaf(enc, ids.shape[0], s, s, True)
        d_bias = _bias_leaf(dec, ids.shape[0], t, t, False)
        h = e_leaf
        for block in enc.block:
            attn = block.layer[0]
            h = h + _attention(attn.SelfAttention, _rms(h, attn.layer_norm),
                               _rms(h, attn.layer_norm), e_bias, None, heads)
            h = h + _feed_forward(block.layer[1], h)
        memory = _rms(h, enc.final_layer_norm)
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        h = d_leaf
        for block in dec.block:
            attn, cross = block.layer[0], block.layer[1]
            n = _rms(h, attn.layer_norm)
            h = h + _attention(attn.SelfAttention, n, n, d_bias, causal, heads)
            h = h + _attention(cross.EncDecAttention, _rms(h, cross.layer_norm), memory, None,
                               None, heads)
            h = h + _feed_forward(block.layer[2], h)
        h = _rms(h, dec.final_layer_norm)[:, -1]
        if getattr(cfg, "scale_decoder_outputs", False):   # T5 tied head: a constant scale
            h = h * cfg.d_model ** -0.5
        logits = model.lm_head(h)
        score = logits.gather(1, logits.argmax(-1, keepdim=True)).sum()
        grads = torch.autograd.grad(score, (e_leaf, d_leaf, e_bias, d_bias))
    tokens = [(leaf * g).sum(-1) for leaf, g in zip((e_leaf, d_leaf), grads[:2])]
    biases = [(leaf * g).sum((1, 2)) for leaf, g in zip((e_bias, d_bias), grads[2:])]
    return (*tokens, *biases, logits.detach())
