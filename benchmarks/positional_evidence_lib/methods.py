"""The attribution methods the benchmark scores, each as ``fn(model, model_name, inputs, target,
settings) -> Maps`` over the task's positions (tokens, or grid cells of an image).

- ``pa_lrp``, ``attn_lrp``, ``pe_only``: :func:`palrp.explain` (one PA-LRP backward gives both
  ``pa_lrp`` and ``pe_only``). Token channel: the token (patch) relevance; positional channel:
  the positional relevance at each position (all sinks summed). BERT's token-type relevance and
  a ViT's class-token position count in the conservation sum only.
- ``rollout`` (Abnar & Zuidema 2020): ``A_hat = rownorm(mean_heads(A) + I)`` multiplied from the
  first layer up, the readout row (BERT: [CLS] at 0, Llama: the last token, ViT: the class
  token). Text: from ``output_attentions=True``; ViT: palrp.baselines.
- ``transformer_attribution``: ViT: palrp.baselines' Transformer Attribution (Chefer, Gur & Wolf,
  CVPR 2021: ``I + mean_heads((grad_A * R_A)+)`` with R_A from Chefer's LRP, multiplied over
  layers); not applied to EVA (``NOT_APPLICABLE``). Text (the library has no Chefer LRP for
  text models): the same rollout of ``I + mean_heads((grad_A * A)+)``, the attention itself standing in for R_A (Chefer, Gur &
  Wolf, ICCV 2021, the generic gradient-weighted attention rule).
- ``grad_x_input`` and ``integrated_gradients`` (Sundararajan et al. 2017; baseline 0, midpoint
  rule): on the input embeddings, summed over the hidden dimension, reported as token
  relevance. ViT: patch embeddings + pos_embed (the input of ``pos_drop``; EVA with 2-D RoPE
  only: the patch embeddings, RoPE is no input embedding); Llama: the token
  embeddings (RoPE is not an input embedding); BERT: the embedding layer's output, the
  LayerNorm of word + position + token-type embeddings (on the sum before that LayerNorm both
  are zero at every position: the LayerNorm is invariant to scaling its input, so
  ``x . grad = 0``).
- ``occlusion`` (the reference): token channel ``f(x) - mean_r f(x with the token / cell at i
  replaced)`` (a random other filler token; fresh background noise for a cell), positional
  channel ``f(x) - mean_r f(x with the position of i replaced by another position j)`` (text:
  ``position_ids``; ViT: ``pos_embed[j]`` added at i instead of ``pos_embed[i]``; EVA: the
  rotary table's row j used at cell i), ``r`` draws;
  and ``shuffle``: ``(f(x) - mean_r f(x with all content positions permuted)) / |f(x)|`` per
  sample. [CLS] (position 0) is neither replaced nor moved.

``f`` is the target logit. Maps are signed; the metrics take absolute values.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import palrp
from palrp.baselines.attention import readout_weights, record_attention, rollout_from_attention
from palrp.baselines.attribution import transformer_attribution_grid

from . import tasks as T
from .models import MODELS, logits_of, model_inputs

METHODS = ("pa_lrp", "attn_lrp", "pe_only", "rollout", "transformer_attribution",
           "grad_x_input", "integrated_gradients", "occlusion")
#: methods with a conserved relevance sum (the residual is reported for them)
CONSERVING = ("pa_lrp", "attn_lrp", "grad_x_input", "integrated_gradients")


@dataclass
class Maps:
    token: torch.Tensor | None           # (B, N)
    positional: torch.Tensor | None      # (B, N)
    total: torch.Tensor | None = None    # (B,) every relevance of the method summed
    shuffle: torch.Tensor | None = None  # (B,) occlusion only: relative drop when shuffled


@dataclass(frozen=True)
class Settings:
    ig_steps: int = 20
    occlusion_draws: int = 2


def _is_vision(model_name):
    return MODELS[model_name][0] == "vision"


def _target_logit(logits, target):
    return logits.gather(1, target[:, None])[:, 0]


# --- PA-LRP family -----------------------------------------------------------------------

def lrp_maps(model, model_name, inputs, target):
    """{"pa_lrp", "pe_only", "attn_lrp"} -> Maps, and the explained logits (B,)."""
    stream = "pixel_values" if _is_vision(model_name) else "input_ids"
    x = model_inputs(model_name, inputs)
    out = {}
    pa = palrp.explain(model, x, target, method="pa_lrp")
    record = pa.streams[stream]
    total = sum(s.relevance.sum(1) for s in pa.streams.values()) + \
        sum(s.sinks.sum((1, 2)) for s in pa.streams.values() if s.sinks is not None)
    out["pa_lrp"] = Maps(record.relevance.detach(), record.positional.detach(), total.detach())
    out["pe_only"] = Maps(None, record.positional.detach())
    attn = palrp.explain(model, x, target, method="attn_lrp")
    total = sum(s.relevance.sum(1) for s in attn.streams.values())
    out["attn_lrp"] = Maps(attn.streams[stream].relevance.detach(), None, total.detach())
    return out, pa.explained_logit.detach()


# --- attention-based ---------------------------------------------------------------------

def _readout_index(model_name, n):
    return n - 1 if model_name == "llama" else 0


def _text_attentions(model, model_name, inputs, target, gradients):
    with torch.enable_grad():
        out = model(**model_inputs(model_name, inputs), output_attentions=True)
        probs = list(out.attentions)
        grads = None
        if gradients:
            grads = torch.autograd.grad(_target_logit(out.logits, target).sum(), probs)
    return [p.detach() for p in probs], grads


def _rollout_joint(mats, normalise):
    joint = None
    for m in mats:
        m = m + torch.eye(m.shape[-1], dtype=m.dtype)
        if normalise:
            m = m / m.sum(-1, keepdim=True)
        joint = m if joint is None else m @ joint
    return joint


def rollout(model, model_name, inputs, target, settings):
    if _is_vision(model_name):
        _, _, probs, _ = record_attention(model, inputs)
        weights = readout_weights(model, probs[0].shape[-1])
        return Maps(rollout_from_attention(probs, weights, model.num_prefix_tokens), None)
    probs, _ = _text_attentions(model, model_name, inputs, target, False)
    joint = _rollout_joint([p.mean(1) for p in probs], normalise=True)
    return Maps(joint[:, _readout_index(model_name, joint.shape[-1])], None)


def transformer_attribution(model, model_name, inputs, target, settings):
    if _is_vision(model_name):
        return Maps(transformer_attribution_grid(model, inputs, target).flatten(1).detach(), None)
    probs, grads = _text_attentions(model, model_name, inputs, target, True)
    joint = _rollout_joint([(g * p).clamp(min=0).mean(1) for p, g in zip(probs, grads)],
                           normalise=False)
    return Maps(joint[:, _readout_index(model_name, joint.shape[-1])], None)


# --- gradients on the input embeddings ---------------------------------------------------

def _embedding_hook(model, model_name, scale, keep):
    """Registers a hook that multiplies the input-embedding sum by ``scale`` and keeps it
    (a leaf requiring a gradient) in ``keep``; returns the handle."""
    def leaf(x):
        x = (x.detach() * scale).requires_grad_(True)
        keep.append(x)
        return x
    if model_name.startswith("bert"):
        return model.bert.embeddings.register_forward_hook(lambda m, args, out: leaf(out))
    if model_name == "llama":
        return model.model.embed_tokens.register_forward_hook(lambda m, args, out: leaf(out))
    return model.pos_drop.register_forward_pre_hook(lambda m, args: (leaf(args[0]),))


def _embedding_grad(model, model_name, inputs, target, scale):
    keep = []
    handle = _embedding_hook(model, model_name, scale, keep)
    try:
        with torch.enable_grad():
            logits = logits_of(model, model_name, inputs)
            (grad,) = torch.autograd.grad(_target_logit(logits, target).sum(), keep)
    finally:
        handle.remove()
    return keep[0].detach() / scale if scale else None, grad


def _per_position(model, model_name, values):
    """(B, T) over the model's sequence -> (B, N) over the task's positions, and the total."""
    total = values.sum(1)
    if _is_vision(model_name):
        values = values[:, model.num_prefix_tokens:]
    return values, total


def grad_x_input(model, model_name, inputs, target, settings):
    x, grad = _embedding_grad(model, model_name, inputs, target, 1.0)
    values, total = _per_position(model, model_name, (x * grad).sum(-1))
    return Maps(values, None, total)


def integrated_gradients(model, model_name, inputs, target, settings):
    x, _ = _embedding_grad(model, model_name, inputs, target, 1.0)
    summed = torch.zeros_like(x)
    for k in range(settings.ig_steps):
        summed += _embedding_grad(model, model_name, inputs, target,
                                  (k + 0.5) / settings.ig_steps)[1]
    values, total = _per_position(model, model_name, (x * summed / settings.ig_steps).sum(-1))
    return Maps(values, None, total)


# --- occlusion -----------------------------------------------------------------------------

@torch.no_grad()
def _logits_many(model, model_name, inputs, target, chunk=2048, **kw):
    out = []
    for start in range(0, len(inputs), chunk):
        extra = {k: v[start:start + chunk] for k, v in kw.items()}
        out.append(_target_logit(logits_of(model, model_name, inputs[start:start + chunk],
                                           **extra), target[start:start + chunk]))
    return torch.cat(out)


def _replaced_tokens(inputs, i, g):
    """``inputs`` with the token at ``i`` replaced by a random filler other than itself."""
    pool = torch.tensor(T.FILLERS)
    new = inputs.clone()
    index = torch.randint(len(pool), (len(inputs),), generator=g)
    index = torch.where(pool[index] == new[:, i], (index + 1) % len(pool), index)
    new[:, i] = pool[index]
    return new


def _replaced_cells(inputs, i, g):
    new = inputs.clone()
    r, c = divmod(i, T.GRID)
    ys, xs = slice(r * T.CELL, (r + 1) * T.CELL), slice(c * T.CELL, (c + 1) * T.CELL)
    new[:, :, ys, xs] = T.NOISE * torch.randn(new[:, :, ys, xs].shape, generator=g)
    return new


def _eva_position_forward(model, inputs, target, moves):
    """Target logits with the patch positions moved for 2-D RoPE: each sample's rotary table
    with row i replaced by row ``moves[b, i]`` (the table broadcast over heads)."""
    table = model.rope.get_embed()
    original = model.rope.get_embed
    model.rope.get_embed = lambda *args, **kwargs: table[moves][:, None]
    try:
        return _logits_many(model, "eva_rope", inputs, target, chunk=len(inputs))
    finally:
        model.rope.get_embed = original


def _vit_position_forward(model, inputs, target, moves):
    """Target logits with the patch positions moved: ``moves`` (B, N) the position index whose
    embedding each cell gets (a pre-hook on pos_drop swaps pos_embed rows)."""
    prefix = model.num_prefix_tokens
    table = model.pos_embed[0, prefix:]

    def hook(module, args):
        x = args[0].clone()
        x[:, prefix:] += table[moves] - table
        return (x,)
    handle = model.pos_drop.register_forward_pre_hook(hook)
    try:
        return _logits_many(model, "vit", inputs, target)
    finally:
        handle.remove()


def occlusion(model, model_name, inputs, target, settings):
    g = torch.Generator().manual_seed(12345)
    b = len(inputs)
    n = T.TEXT_LENGTH if not _is_vision(model_name) else T.GRID * T.GRID
    first = 0 if _is_vision(model_name) else 1           # [CLS] stays
    base = _logits_many(model, model_name, inputs, target)
    draws = settings.occlusion_draws
    token = torch.zeros(b, n)
    positional = torch.zeros(b, n)
    identity = torch.arange(n).expand(b, n)
    content = torch.arange(first, n)
    shuffled = []
    for _ in range(draws):
        for i in range(first, n):
            replaced = _replaced_cells(inputs, i, g) if _is_vision(model_name) \
                else _replaced_tokens(inputs, i, g)
            token[:, i] += (base - _logits_many(model, model_name, replaced, target)) / draws
            others = content[content != i]
            moves = identity.clone()
            moves[:, i] = others[torch.randint(len(others), (b,), generator=g)]
            positional[:, i] += (base - _moved(model, model_name, inputs, target, moves)) / draws
        order = identity.clone()
        order[:, first:] = content[torch.argsort(torch.rand(b, n - first, generator=g), 1)]
        shuffled.append(_moved(model, model_name, inputs, target, order))
    shuffle = (base - torch.stack(shuffled).mean(0)) / base.abs().clamp(min=1e-12)
    return Maps(token, positional, None, shuffle)


def _moved(model, model_name, inputs, target, moves):
    if model_name == "eva_rope":
        return _eva_position_forward(model, inputs, target, moves)
    if _is_vision(model_name):
        return _vit_position_forward(model, inputs, target, moves)
    return _logits_many(model, model_name, inputs, target, position_ids=moves)


FUNCTIONS = {"rollout": rollout, "transformer_attribution": transformer_attribution,
             "grad_x_input": grad_x_input, "integrated_gradients": integrated_gradients,
             "occlusion": occlusion}


#: (model, method) -> why the method is not applied to that model
NOT_APPLICABLE = {("eva_rope", "transformer_attribution"):
                  "the library's Transformer Attribution needs Chefer's LRP rules, which the eva "
                  "family does not have"}


def all_maps(model, model_name, inputs, target, settings: Settings):
    """{method: Maps} for every method that applies to the model, and the explained logits."""
    model.eval()
    maps, logits = lrp_maps(model, model_name, inputs, target)
    for name, fn in FUNCTIONS.items():
        if (model_name, name) not in NOT_APPLICABLE:
            maps[name] = fn(model, model_name, inputs, target, settings)
    return {name: maps[name] for name in METHODS if name in maps}, logits
