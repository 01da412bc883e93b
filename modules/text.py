"""``explain_text``: AttnLRP / PA-LRP token relevance for a Llama model (SPEC sections 1 and 3).

One forward and one backward per batch, under :func:`modules.llama.lrp_llama`:

- the score is the target logit itself (gradient 1 at the target, ``R(target) = logit``, the NLP
  seed of SPEC section 0); for a causal LM the target defaults to the argmax token at the last
  real position of each sample, for a classifier to the predicted class;
- token relevance ``tok_i = sum_d (E * E.grad)[i, d]`` with the input embeddings as the leaf;
- with ``pe=True`` the per-layer cos/sin relevance ``c_{l,i}``, ``s_{l,i}`` (SPEC section 1);
- padding positions get relevance 0; position ids follow the attention mask
  (``cumsum(mask) - 1``), so a left-padded sample sees the positions it has on its own;
- the model runs in its own dtype (float32 or bfloat16); relevances are returned in float32
  (float64 for a float64 model).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .llama import llama_head_kind, logits_to_keep_kwargs, lrp_llama
from .positional import Combination, combine, rotary_position_relevance

__all__ = ["explain_text", "TextExplanation", "method_maps"]


@dataclass
class TextExplanation:
    """Result of :func:`explain_text`.

    ``tokens``: (B, S) token relevance; ``pe_layers``: (B, L, 2, S) relevance of each layer's
    cos (index 0) and sin (index 1), ``None`` for AttnLRP (``pe=False``); ``logits``: (B, V) or
    (B, C) logits at the explained position; ``target``: (B,) explained index; ``positions``:
    (B,) explained sequence position; ``attention_mask``: (B, S). All on the model's device;
    relevances and logits in float32 (float64 for a float64 model).
    """

    tokens: torch.Tensor
    pe_layers: torch.Tensor | None
    logits: torch.Tensor
    target: torch.Tensor
    positions: torch.Tensor
    attention_mask: torch.Tensor

    def combined(self, single_norm: bool = True, pe_only: bool = False,
                 without_abs: bool = False, clamp: bool = False) -> torch.Tensor:
        """The (B, S) map of SPEC section 3.

        With PE (the paper's ``--pe --single-norm``):
        ``r_i = (tok_i + sum_l (|c_{l,i}| + |s_{l,i}|)) / max_j |...|``.
        ``pe_only``: only the PE term; ``without_abs``: signed ``c``, ``s``; ``clamp``: the PE
        term (the sum over layers) clamped at 0. ``single_norm=False``: tok and each layer's c
        and s are first divided by their own max-abs, then summed, then the sum is normalised
        again. Without PE (AttnLRP): ``r = tok``.
        """
        how = Combination(absolute=not without_abs,
                          normalise="single" if single_norm else "per_part",
                          pe_only=pe_only, clamp_pe=clamp)
        positional = None if self.pe_layers is None else self.pe_layers.flatten(1, 2)
        if positional is None and pe_only:
            raise ValueError("pe_only needs an explanation computed with pe=True")
        if positional is None:
            return self.tokens.clone()
        return combine(self.tokens, positional, how)


def _as_batch(input_ids, attention_mask, vocab_size: int, device):
    ids = torch.as_tensor(input_ids)
    if ids.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
        raise ValueError(f"input_ids must be integer token ids, got dtype {ids.dtype}")
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(ids.shape)}")
    if ids.numel() == 0:
        raise ValueError("empty input: input_ids has no tokens; give at least one token per sample")
    ids = ids.to(device=device, dtype=torch.long)
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"input_ids hold ids outside the vocabulary [0, {vocab_size}); "
                         "tokenize with the model's own tokenizer")
    if attention_mask is None:
        mask = torch.ones_like(ids)
    else:
        mask = torch.as_tensor(attention_mask)
        if mask.dim() == 1:
            mask = mask.unsqueeze(0)
        if tuple(mask.shape) != tuple(ids.shape):
            raise ValueError(f"attention_mask shape {tuple(mask.shape)} differs from input_ids "
                             f"shape {tuple(ids.shape)}; pass the tokenizer's mask")
        mask = mask.to(device=device, dtype=torch.long)
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
        if not bool((mask.sum(-1) > 0).all()):
            raise ValueError("empty input: a sample has no real token (attention_mask all 0)")
    return ids, mask


def _resolve_target(target, logits: torch.Tensor, what: str) -> torch.Tensor:
    batch, size = logits.shape
    if target is None:
        return logits.argmax(dim=-1)
    t = torch.as_tensor(target, device=logits.device)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"target must be an integer index, got {target!r}")
    t = t.to(torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"target has {t.numel()} entries for a batch of {batch}; give one "
                         "index or one per sample")
    bad = (t < 0) | (t >= size)
    if bool(bad.any()):
        raise ValueError(f"target {int(t[bad][0])} is beyond the {what} of this model "
                         f"(valid: 0..{size - 1})")
    return t.clone()


@contextlib.contextmanager
def _eval_mode(model):
    """Eval mode for the explanation (no dropout); every module's own flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def explain_text(model, input_ids, attention_mask=None, target=None, pe: bool = True, *,
                 gradient_checkpointing: bool = False) -> TextExplanation:
    """Explain ``target`` for every sample of a batch (SPEC section 3; PE sinks of section 1).

    ``model``: a transformers ``LlamaForCausalLM`` or ``LlamaForSequenceClassification`` in any
    dtype and on any device. ``input_ids``: (B, S) or (S,); ``attention_mask``: 1 = token,
    0 = padding (left or right). ``target``: ``None`` (argmax), one index or one per sample:
    a vocabulary id for a causal LM (explained at the last real position), a class for a
    classifier. ``pe=False`` gives the AttnLRP baseline. ``gradient_checkpointing=True``
    recomputes each decoder layer in the backward (less memory, same numbers).
    """
    kind = llama_head_kind(model)
    embedding = model.get_input_embeddings()
    ids, mask = _as_batch(input_ids, attention_mask, embedding.num_embeddings,
                          embedding.weight.device)
    seq_len = ids.shape[1]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    order = torch.arange(seq_len, device=ids.device)
    last_real = (order * mask).argmax(dim=-1)

    with _eval_mode(model), torch.enable_grad(), \
            lrp_llama(model, pe=pe, gradient_checkpointing=gradient_checkpointing) as lrp:
        call = dict(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                    use_cache=False)
        if kind == "causal_lm":
            kept = torch.unique(last_real)
            extra = logits_to_keep_kwargs(model, kept)
            all_logits = model(**call, **extra).logits
            column = torch.searchsorted(kept, last_real) if extra else last_real
            logits = all_logits[torch.arange(ids.shape[0], device=ids.device), column]
            positions, what = last_real, "vocabulary"
        else:
            logits = model(**call).logits
            pad_id = model.config.pad_token_id
            if pad_id is None:
                positions = torch.full_like(last_real, seq_len - 1)
            else:  # the stock pooling: rightmost token that is not the pad token
                positions = (order * (ids != pad_id)).argmax(dim=-1)
            what = "classes"
        target_idx = _resolve_target(target, logits.detach(), what)
        score = logits.gather(1, target_idx[:, None]).sum()
        leaves = lrp.leaves()
        grads = torch.autograd.grad(score, leaves, allow_unused=True)

    # relevances in float32 (float64 for a float64 model), whatever the model's dtype
    out = torch.float64 if leaves[0].dtype == torch.float64 else torch.float32
    real = mask.to(out)
    tokens = (leaves[0].detach().to(out) * grads[0].to(out)).sum(-1) * real
    pe_layers = None
    if pe:
        pairs = [(leaves[i].detach().to(out), leaves[i + 1].detach().to(out))
                 for i in range(1, len(leaves), 2)]
        pair_grads = [tuple(None if g is None else g.to(out) for g in grads[i:i + 2])
                      for i in range(1, len(leaves), 2)]
        pe_layers = rotary_position_relevance(pairs, pair_grads) * real[:, None, None, :]
    return TextExplanation(tokens=tokens, pe_layers=pe_layers,
                           logits=logits.detach().to(out), target=target_idx,
                           positions=positions, attention_mask=mask)


def method_maps(model, input_ids, attention_mask=None, target=None, *,
                gradient_checkpointing: bool = False):
    """The three maps shown side by side (SPEC section 3): ``AttnLRP`` (``tok`` without PE),
    ``PA-LRP`` (``combined()`` with PE, the paper's single-norm map) and ``PE-only``.
    The AttnLRP run explains the same target as the PA-LRP run. Returns
    ``(maps, palrp_explanation)`` with maps as (B, S) float32 tensors."""
    palrp = explain_text(model, input_ids, attention_mask, target, pe=True,
                         gradient_checkpointing=gradient_checkpointing)
    attnlrp = explain_text(model, input_ids, attention_mask, palrp.target, pe=False,
                           gradient_checkpointing=gradient_checkpointing)
    maps = {
        "AttnLRP": attnlrp.combined(),
        "PA-LRP": palrp.combined(),
        "PE-only": palrp.combined(pe_only=True),
    }
    return maps, palrp
