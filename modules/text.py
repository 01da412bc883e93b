"""``explain_text``: AttnLRP / PA-LRP token and position relevance for every supported text
family (docs/method.md; family maps in docs/text_families.md).

One forward and one backward per batch, under :func:`palrp.modules.text_engine.lrp_text`:

- the score is the target logit itself (gradient 1 at the target, ``R(target) = logit``, the NLP
  seed); for a causal LM the target defaults to the argmax token at the last real position of
  each sample, for a classifier to the predicted class;
- token relevance ``tok_i = sum_d (E * E.grad)[i, d]`` with the input embeddings as the leaf;
- with ``pe=True`` the positional relevance (B, K, S) of the shared positional source: the cos
  and sin of every layer (K = 2L) for RoPE, the position table (K = 1) for absolute PE;
- BERT-like families also report the token-type embeddings' relevance (``token_types``);
- padding positions get relevance 0; position ids follow the attention mask
  (``cumsum(mask) - 1``, or the family's stock padding-offset ids), so a padded sample sees the
  positions it has on its own;
- the model runs in its own dtype; relevances are returned in float32 (float64 for a float64
  model). A non-finite number anywhere in the result is an error, never an output.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch

from .positional import Combination, combine
from .text_families import family_of
from .targets import resolve_target
from .text_engine import logits_to_keep_kwargs, lrp_text

__all__ = ["explain_text", "TextExplanation", "method_maps"]


@dataclass
class TextExplanation:
    """Result of :func:`explain_text`.

    ``tokens``: (B, S) token relevance; ``positional``: (B, K, S) positional relevance (the
    shared positional source's layout: rows ``cos_0, sin_0, cos_1, ...`` for RoPE, one row for
    an absolute table; labels in ``positional_labels``), ``None`` for AttnLRP (``pe=False``);
    ``logits``: (B, V) or (B, C) logits at the explained position; ``target``: (B,) explained
    index; ``positions``: (B,) explained sequence position; ``attention_mask``: (B, S);
    ``token_types``: (B, S) relevance of a BERT-like model's token-type embeddings (``None``
    for other families). All on the model's device; relevances and logits in float32 (float64
    for a float64 model).
    """

    tokens: torch.Tensor
    positional: torch.Tensor | None
    logits: torch.Tensor
    target: torch.Tensor
    positions: torch.Tensor
    attention_mask: torch.Tensor
    positional_labels: tuple[str, ...] = ()
    token_types: torch.Tensor | None = None

    @property
    def pe_layers(self) -> torch.Tensor | None:
        """The per-layer view (B, L, 2, S) of rotary positional relevance (cos at index 0, sin
        at 1); ``None`` without PE."""
        if self.positional is None:
            return None
        labels = self.positional_labels
        if labels and not all(l.startswith(("cos_", "sin_")) for l in labels):
            raise ValueError(f"pe_layers is the per-layer cos/sin view of rotary PE; this "
                             f"explanation's positional sinks are {list(labels)}: use positional")
        b, k, s = self.positional.shape
        return self.positional.view(b, k // 2, 2, s)

    def combined(self, single_norm: bool = True, pe_only: bool = False,
                 without_abs: bool = False, clamp: bool = False) -> torch.Tensor:
        """The (B, S) map (docs/method.md, "combining"), by :func:`palrp.modules.positional.combine`.

        With PE (the paper's ``--pe --single-norm``):
        ``r_i = (tok_i + sum_k |p_{k,i}|) / max_j |...|`` over the K positional sinks (for RoPE
        ``sum_l (|c_{l,i}| + |s_{l,i}|)``). ``pe_only``: only the PE term; ``without_abs``:
        signed PE terms; ``clamp``: the PE term clamped at 0. ``single_norm=False``: tok and
        each sink are first divided by their own max-abs, then summed, then the sum is
        normalised again. Without PE (AttnLRP): ``r = tok``.
        """
        how = Combination(absolute=not without_abs,
                          normalise="single" if single_norm else "per_part",
                          pe_only=pe_only, clamp_pe=clamp)
        if self.positional is None and pe_only:
            raise ValueError("pe_only needs an explanation computed with pe=True")
        if self.positional is None:
            return self.tokens.clone()
        return combine(self.tokens, self.positional, how)


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
                 token_type_ids=None,
                 gradient_checkpointing: bool = False) -> TextExplanation:
    """Explain ``target`` for every sample of a batch (docs/method.md).

    ``model``: a causal LM or sequence classifier of a supported family (docs/text_families.md:
    Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, GPT-2, BERT, RoBERTa) in any dtype, on any device,
    with any attention kernel it was loaded with. ``input_ids``: (B, S) or (S,);
    ``attention_mask``: 1 = token, 0 = padding (left or right; right only for classifiers that
    read the first token). ``target``: ``None`` (argmax), one index or one per sample: a
    vocabulary id for a causal LM (explained at the last real position), a class for a
    classifier. ``pe=False`` gives the AttnLRP baseline. ``gradient_checkpointing=True``
    recomputes each layer in the backward (less memory, same numbers). ``token_type_ids``
    (B, S): segment ids for a family with token-type embeddings (BERT sentence pairs).
    """
    family, kind = family_of(model)
    embedding = model.get_input_embeddings()
    ids, mask = _as_batch(input_ids, attention_mask, embedding.num_embeddings,
                          embedding.weight.device)
    seq_len = ids.shape[1]
    order = torch.arange(seq_len, device=ids.device)
    last_real = (order * mask).argmax(dim=-1)
    if kind == "classifier" and family.pooling == "first" and bool((mask[:, 0] == 0).any()):
        raise ValueError(f"a {family.name} classifier reads the first token; this batch is "
                         "padded on the left: pad on the right (the tokenizer's default)")
    call = dict(input_ids=ids, attention_mask=mask)
    if token_type_ids is not None:
        if not family.token_type_module:
            raise ValueError(f"token_type_ids given, but a {family.name} model has no token "
                             "types; leave them out")
        types = torch.as_tensor(token_type_ids).reshape(ids.shape).to(ids.device, torch.long)
        call["token_type_ids"] = types
    if family.position_ids == "from_mask":
        call["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    if "use_cache" in inspect.signature(type(model).forward).parameters:
        call["use_cache"] = False  # no KV cache (and none filled twice by a recompute)

    with _eval_mode(model), torch.enable_grad(), \
            lrp_text(model, pe=pe, gradient_checkpointing=gradient_checkpointing) as lrp:
        if kind == "causal_lm":
            kept = torch.unique(last_real)
            extra = logits_to_keep_kwargs(model, kept)
            all_logits = model(**call, **extra).logits
            column = torch.searchsorted(kept, last_real) if extra else last_real
            logits = all_logits[torch.arange(ids.shape[0], device=ids.device), column]
            positions, what = last_real, "vocabulary entries"
        else:
            logits = model(**call).logits
            pad_id = model.config.pad_token_id
            if family.pooling == "first":
                positions = torch.zeros_like(last_real)
            elif pad_id is None:
                positions = torch.full_like(last_real, seq_len - 1)
            else:  # the stock pooling: rightmost token that is not the pad token
                positions = (order * (ids != pad_id)).argmax(dim=-1)
            what = "classes"
        _check_finite(logits, "logits", mask)
        target_idx = resolve_target(target, logits.detach(), what)
        score = logits.gather(1, target_idx[:, None]).sum()
        leaves = lrp.leaves()
        labels = tuple(lrp.source.labels)
        grads = torch.autograd.grad(score, leaves, allow_unused=True)
        num_positional = len(lrp.source.leaves())
        positional = lrp.source.relevance(grads[1:1 + num_positional], seq_len)
        type_leaf = lrp.token_type_leaf

    # relevances in float32 (float64 for a float64 model), whatever the model's dtype
    out = torch.float64 if leaves[0].dtype == torch.float64 else torch.float32
    real = mask.to(out)

    def per_token(leaf, grad):
        if grad is None:
            return torch.zeros_like(real)
        return (leaf.detach().to(out) * grad.to(out)).sum(-1) * real

    tokens = per_token(leaves[0], grads[0])
    if positional is not None:
        positional = positional.to(out) * real[:, None, :]
    token_types = None if type_leaf is None else per_token(type_leaf, grads[-1])
    result = TextExplanation(tokens=tokens, positional=positional, logits=logits.detach().to(out),
                             target=target_idx, positions=positions, attention_mask=mask,
                             positional_labels=labels if positional is not None else (),
                             token_types=token_types)
    for name in ("tokens", "positional", "token_types"):
        _check_finite(getattr(result, name), name, mask)
    return result


def _check_finite(values, name: str, mask) -> None:
    """A NaN or infinity anywhere in a result is an error (one line naming the sample)."""
    if values is None:
        return
    bad = ~torch.isfinite(values.detach())
    if bool(bad.any()):
        sample = int(bad.reshape(bad.shape[0], -1).any(-1).nonzero()[0])
        raise FloatingPointError(
            f"non-finite {name} (NaN or inf) for sample {sample} of the batch: the model "
            f"overflows or is undefined on this input in its dtype; try float32 or float64, "
            "and check the weights for NaN")


def method_maps(model, input_ids, attention_mask=None, target=None, *,
                gradient_checkpointing: bool = False):
    """The three maps shown side by side (docs/method.md): ``AttnLRP`` (``tok`` without PE),
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
