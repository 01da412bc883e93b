"""AttnLRP and PA-LRP on the released ``transformers`` Llama, as a reversible context manager.

SPEC section 3 (rules) and section 1 (rotary PE sinks), written as gradient x input (SPEC
section 0): inside ``with lrp_llama(model, pe=...) as lrp:`` a forward pass of a stock
``LlamaForCausalLM`` / ``LlamaForSequenceClassification`` (grouped-query attention included) gives
the stock outputs, and its backward, seeded at a score, is the LRP backward:

| place                               | rule (SPEC section 3)          | how                          |
|-------------------------------------|--------------------------------|------------------------------|
| all linears, residual adds          | epsilon                        | plain autograd               |
| RMSNorm                             | RMS constant                   | :func:`rules.rms_norm_const` |
| SiLU                                | identity                       | :func:`rules.identity_act`   |
| ``silu(gate) * up``, ``Q K^T``, ``A V`` | uniform                    | :func:`rules.scale_grad` 1/2 |
| softmax, scale, additive mask       | plain (mask finite)            | plain autograd               |
| RoPE                                | SPEC section 1                 | :func:`positional.apply_rotary` |

While the context is active:

- the input embeddings are a fresh leaf per forward (``lrp.input_embeddings``), and with
  ``pe=True`` every layer's cos/sin are leaves of their own (``lrp.pe_leaves``, one (B,S,head_dim)
  pair per layer, SPEC section 1); relevance is ``leaf * grad``;
- the eager attention path is forced (``config._attn_implementation = "eager"``), so the causal
  and padding mask is always materialised; masked scores are the dtype minimum, never ``-inf``
  (SPEC sections 3 and 9: attention stays causal in every evaluation);
- transformers' own gradient checkpointing is switched off (its reentrant variant would drop the
  gradients of the PE leaves, which are not layer inputs); ``gradient_checkpointing=True`` uses
  non-reentrant checkpointing of each decoder layer instead, which changes no number.

Patching is per instance (forward methods of this model's modules, or the ``_old_forward`` that an
accelerate hook calls), never of classes or files, and everything is restored on exit, also when
the body raises. Everything this module needs of transformers' internals sits in the adapter
section below, so that a new transformers release is a fix in one place.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .patching import patching
from .positional import apply_rotary, rotary_pe_leaves
from .rules import identity_act, rms_norm_const, scale_grad

__all__ = ["lrp_llama", "LlamaLRP", "llama_head_kind", "logits_to_keep_kwargs"]


# =========================================================================================
# Adapter: everything taken from transformers' internals (tested on 5.17 and 5.24; the names
# are those of the Llama modelling file since 4.48). Besides the functions here, the rule
# forwards below read these module attributes: LlamaAttention q_proj, k_proj, v_proj, o_proj,
# head_dim, num_key_value_groups, scaling, attention_dropout, layer_idx; LlamaMLP gate_proj,
# up_proj, down_proj, act_fn; LlamaRMSNorm weight (eps via _norm_eps); LlamaModel layers,
# rotary_emb, norm; and the attention forward's call signature
# (hidden_states, position_embeddings, attention_mask, **kwargs) -> (output, weights).
# =========================================================================================
from transformers.models.llama import modeling_llama as _ml  # noqa: E402

_repeat_kv = _ml.repeat_kv  # stock GQA expansion (B, kv_heads, S, d) -> (B, heads, S, d)


def llama_head_kind(model) -> str:
    """``"causal_lm"`` or ``"classifier"``; a clear error for anything else."""
    if isinstance(model, _ml.LlamaForCausalLM):
        return "causal_lm"
    if isinstance(model, _ml.LlamaForSequenceClassification):
        return "classifier"
    raise TypeError(
        f"expected a transformers LlamaForCausalLM or LlamaForSequenceClassification, got "
        f"{type(model).__name__}; load the checkpoint with one of these classes (for a PEFT "
        f"model pass model.get_base_model())")


def _base_model(model):
    """The ``LlamaModel`` inside a head (``base_model_prefix`` is ``"model"`` for Llama)."""
    return getattr(model, model.base_model_prefix)


def _decoder_layers(base):
    return list(base.layers)[: base.config.num_hidden_layers]


def _layer_norms(layer):
    return [layer.input_layernorm, layer.post_attention_layernorm]


def _norm_eps(norm) -> float:
    return norm.variance_epsilon


_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")


def _pop_cache(kwargs):
    """The KV cache handed to an attention module (its keyword changed across releases)."""
    cache = None
    for name in _CACHE_KWARGS:
        value = kwargs.pop(name, None)
        if value is not None:
            cache = value
    return cache


def _cache_update(cache, key, value, layer_idx, cos, sin, kwargs):
    """``cache.update`` as the stock attention calls it (5.x takes ``kwargs=``, 4.x a dict)."""
    if "kwargs" in inspect.signature(cache.update).parameters:
        return cache.update(key, value, layer_idx, kwargs=kwargs)
    cache_kwargs = {"sin": sin, "cos": cos, "cache_position": kwargs.get("cache_position")}
    return cache.update(key, value, layer_idx, cache_kwargs)


def _checkpointing_owners(model):
    """Modules whose ``gradient_checkpointing`` flag makes transformers checkpoint layers (the
    flag ``activation_checkpointing_enable`` / ``gradient_checkpointing_enable`` sets)."""
    return [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]


def logits_to_keep_kwargs(model, positions: torch.Tensor) -> dict:
    """Keyword asking a causal LM for the logits at ``positions`` only (1-D tensor of sequence
    positions, the same for every sample); empty when the installed release has no such option."""
    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: positions}
    return {}


# =========================================================================================
# The rules, as module forwards.
# =========================================================================================

@dataclass
class LlamaLRP:
    """Handle yielded by :func:`lrp_llama`; holds the leaves of the latest forward pass.

    ``input_embeddings``: (B, S, D) leaf made from the embedding layer's output (``None`` when
    the model was called with ``inputs_embeds``; then those are the leaf to read).
    ``pe_leaves``: with ``pe=True``, one ``(cos, sin)`` pair of (B, S, head_dim) leaves per layer
    (SPEC section 1); ``None`` otherwise.
    """

    model: torch.nn.Module
    pe: bool
    gradient_checkpointing: bool
    num_layers: int
    input_embeddings: torch.Tensor | None = None
    pe_leaves: list | None = None

    def leaves(self) -> list[torch.Tensor]:
        """The tensors to differentiate: embeddings first, then cos_0, sin_0, cos_1, ..."""
        if self.input_embeddings is None:
            raise RuntimeError("no forward pass with input_ids ran inside lrp_llama yet")
        out = [self.input_embeddings]
        if self.pe:
            out += [t for pair in self.pe_leaves for t in pair]
        return out


def _finite_mask(mask, query, kv_len):
    """The additive mask with masked scores at the dtype minimum (never -inf, SPEC section 3);
    built causally here if transformers handed none (SPEC section 9: always causal)."""
    dtype = query.dtype
    min_value = torch.finfo(dtype).min
    q_len = query.shape[-2]
    if mask is None:
        if q_len == 1:
            return None
        offset = kv_len - q_len
        rows = torch.arange(q_len, device=query.device)[:, None] + offset
        cols = torch.arange(kv_len, device=query.device)[None, :]
        allowed = (cols <= rows)[None, None]
    elif mask.dtype == torch.bool:
        allowed = mask
    else:
        return mask[..., :kv_len].to(dtype).clamp(min=min_value)
    zero = torch.zeros((), dtype=dtype, device=query.device)
    return torch.where(allowed, zero, torch.tensor(min_value, dtype=dtype, device=query.device))


def _attention_forward(module, index: int, state: LlamaLRP):
    """Stock Llama attention with the AttnLRP rules (SPEC section 3) and, with PE, the rotary
    sinks of SPEC section 1 (this layer's cos/sin leaves replace the shared constants)."""

    def forward(hidden_states, position_embeddings=None, attention_mask=None, *args, **kwargs):
        if position_embeddings is None:
            raise RuntimeError("lrp_llama needs the position_embeddings that LlamaModel passes "
                               "to each layer (transformers >= 4.48)")
        cache = _pop_cache(kwargs)
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, module.head_dim)
        query = module.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = module.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = module.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        if state.pe:
            if state.pe_leaves is None:
                raise RuntimeError("PE leaves missing: the rotary embedding did not run")
            cos_leaf, sin_leaf = state.pe_leaves[index]
            if cos_leaf.shape[-2:] != cos.shape[-2:]:
                raise RuntimeError("PE leaves do not match this layer's position embeddings")
            cos, sin = cos_leaf, sin_leaf
        query, key = apply_rotary(query, key, cos, sin, attribute_pe=state.pe)

        if cache is not None:
            key, value = _cache_update(cache, key, value, module.layer_idx, cos, sin, kwargs)

        # Uniform rule on Q K^T: both operands' gradients halved (K before the GQA expansion,
        # where it is smallest); on A V: the product's output gradient halved, which for a
        # bilinear product is the same (and cheaper than halving the (S x S) A).
        key = _repeat_kv(scale_grad(key, 0.5), module.num_key_value_groups)
        value = _repeat_kv(value, module.num_key_value_groups)
        scores = torch.matmul(scale_grad(query, 0.5), key.transpose(2, 3)) * module.scaling
        mask = _finite_mask(attention_mask, query, key.shape[-2])
        if mask is not None:
            scores = scores + mask
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        probs = F.dropout(probs, p=module.attention_dropout if module.training else 0.0,
                          training=module.training)
        out = scale_grad(torch.matmul(probs, value), 0.5)
        out = out.transpose(1, 2).reshape(*input_shape, -1).contiguous()
        return module.o_proj(out), probs

    return forward


def _mlp_forward(module):
    """``down(silu(gate(x)) * up(x))``: SiLU identity, product uniform (SPEC section 3)."""

    def forward(x):
        activated = identity_act(module.gate_proj(x), module.act_fn)
        # uniform rule: halving the product's gradient halves both operands' (one pass)
        return module.down_proj(scale_grad(activated * module.up_proj(x), 0.5))

    return forward


def _norm_forward(module):
    """RMSNorm with the RMS constant, i.e. the identity rule (SPEC section 3)."""
    eps = _norm_eps(module)

    def forward(x):
        return rms_norm_const(x, module.weight, eps)

    return forward


def _embedding_forward(original, state: LlamaLRP):
    """The embedding output as a fresh leaf: ``tok_i = sum_d (E * E.grad)[i, d]``."""

    def forward(input_ids, *args, **kwargs):
        leaf = original(input_ids, *args, **kwargs).detach().requires_grad_(True)
        state.input_embeddings = leaf
        return leaf

    return forward


def _rotary_forward(original, state: LlamaLRP):
    """Stock cos/sin; with PE one per-sample (cos, sin) leaf pair per layer (SPEC section 1)."""

    def forward(x, position_ids, *args, **kwargs):
        cos, sin = original(x, position_ids, *args, **kwargs)
        if state.pe:
            state.pe_leaves = rotary_pe_leaves(cos, sin, state.num_layers, x.shape[0])
        return cos, sin

    return forward


def _checkpointed_forward(original):
    """Non-reentrant activation checkpointing of one decoder layer (closure-held leaves such as
    the PE leaves keep their gradients, unlike the reentrant variant)."""

    def forward(*args, **kwargs):
        if torch.is_grad_enabled():
            return checkpoint(original, *args, use_reentrant=False, **kwargs)
        return original(*args, **kwargs)

    return forward


@contextlib.contextmanager
def lrp_llama(model, pe: bool = True, *, gradient_checkpointing: bool = False):
    """Equip a released transformers Llama model with the SPEC section 3 rules while active.

    ``pe=True`` is PA-LRP (cos/sin of every layer are attributed, SPEC section 1);
    ``pe=False`` is the AttnLRP baseline (cos/sin constants). Yields a :class:`LlamaLRP` handle
    whose ``leaves()`` are the tensors to differentiate after a forward pass. Forward outputs are
    the stock ones (eager attention); on exit the model is exactly as before (same forward, same
    gradients, no attribute left behind).
    """
    llama_head_kind(model)
    base = _base_model(model)
    layers = _decoder_layers(base)
    with patching(model) as patcher:
        state = LlamaLRP(model=model, pe=bool(pe),
                         gradient_checkpointing=bool(gradient_checkpointing),
                         num_layers=len(layers))

        def clear_state():
            state.input_embeddings = None
            state.pe_leaves = None

        patcher.on_exit(clear_state)
        patcher.set_value(model.config, "_attn_implementation", "eager")
        for owner in _checkpointing_owners(model):
            patcher.set_attr(owner, "gradient_checkpointing", False)
        patcher.wrap_forward(model.get_input_embeddings(),
                             lambda orig: _embedding_forward(orig, state))
        patcher.wrap_forward(base.rotary_emb, lambda orig: _rotary_forward(orig, state))
        patcher.wrap_forward(base.norm, lambda orig: _norm_forward(base.norm))
        for index, layer in enumerate(layers):
            attn = layer.self_attn
            patcher.wrap_forward(attn, lambda orig, a=attn, i=index: _attention_forward(a, i, state))
            patcher.wrap_forward(layer.mlp, lambda orig, m=layer.mlp: _mlp_forward(m))
            for norm in _layer_norms(layer):
                patcher.wrap_forward(norm, lambda orig, n=norm: _norm_forward(n))
            if gradient_checkpointing:
                patcher.wrap_forward(layer, _checkpointed_forward)
        yield state
