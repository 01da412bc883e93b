"""PA-LRP for the two common explainability toolkits: a Captum-style attribution class
(:class:`PALRP`) and a Quantus ``explain_func`` (:func:`quantus_explain_func`).

Neither toolkit is imported here (they are optional); both objects follow the toolkits'
conventions so that their metrics and helpers accept them.

What the attributions are (relevance seeded ``R(target) = logit``, as :func:`palrp.explain`;
signed, not normalised, not clamped, so a sample's attribution sums, up to the rules' own
non-conservation, to its explained logit):

- images, a (B, C, H, W) float tensor for a timm model: a (B, C, H, W) tensor. Channel ``c`` of
  a pixel holds that channel's own pixel relevance ``image[c] * grad[c]`` (the LRP backward in
  gradient x input form) plus, for ``pa_lrp``, ``1 / C`` of the positional relevance of the
  pixel's patch spread uniformly over the patch's pixels
  (``Stream.positional_pixels()`` / C). Summed over the channels this is exactly
  ``stream.pixels + stream.positional_pixels()`` of ``palrp.explain(...)``, i.e.
  ``Explanation.combined(clamp_map=False, unit_seed=False)``, the paper's vision map before
  its clamp, for ``R(target) = logit``. ``attn_lrp``: the pixel term alone; ``pe_only``: the
  positional term alone (split over the channels the same way). Positional relevance that
  lands on the class / distillation / register tokens has no pixel and is not in the result
  (``Stream.prefix_positional`` keeps it).
- text, (B, S) integer ``input_ids`` (``attention_mask`` as a keyword, or as Captum's
  ``additional_forward_args``): a (B, S) tensor per token, the relevance of the token
  embedding plus, for ``pa_lrp``, the signed positional relevance at that position summed over
  all positional sinks (a learned table: one; rotary: a cos and a sin per layer) --
  ``relevance["input_ids"] + positional["input_ids"]`` of :func:`palrp.explain`; ``attn_lrp``:
  the token term alone; ``pe_only``: the positional term alone. This is what Captum's
  ``LayerIntegratedGradients`` on the embeddings returns after summing over the hidden
  dimension. Padding positions are 0. The token-type embeddings of a BERT-like model are not
  included (``Explanation.relevance["token_type_ids"]`` holds them).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["PALRP", "quantus_explain_func"]

_NAMES = {"pa_lrp": "PA-LRP", "attn_lrp": "AttnLRP", "pe_only": "PE-only"}


def _check_method(method: str) -> str:
    from .modules.engine import METHODS
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    return method


def _image_pass(model, images: torch.Tensor, target, method: str, rules=None,
                gradient_checkpointing: bool = False):
    """One :func:`palrp.explain` pass over (B, C, H, W) images. Returns ``(pixels, positional,
    logit)``: per-channel pixel relevance (B, C, H, W), the positional relevance spread over
    each patch's pixels (B, H, W) or None (``attn_lrp``), the explained logits (B,)."""
    from .modules.engine import explain

    if not torch.is_tensor(images) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float (B, C, H, W) tensor, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    result = explain(model, images, target, method, rules=rules,
                     gradient_checkpointing=gradient_checkpointing)
    stream = result.streams["pixel_values"]
    return stream.channels, stream.positional_pixels(), result.explained_logit


def _image_attribution(pixels, positional, method: str) -> torch.Tensor:
    """(B, C, H, W): the method's per-channel attribution from one :func:`_image_pass`."""
    share = None if positional is None else positional[:, None] / pixels.shape[1]
    if method == "attn_lrp":
        return pixels
    if share is None:
        raise ValueError("this model has no positional encoding to attribute; use "
                         "method='attn_lrp'")
    if method == "pe_only":
        return share.expand_as(pixels).clone()
    return pixels + share


def _token_attribution(model, input_ids, attention_mask, token_type_ids, target, method: str,
                       rules=None, gradient_checkpointing: bool = False) -> torch.Tensor:
    """(B, S) per-token attribution of a text model (see the module docstring)."""
    from .modules.engine import explain
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        inputs["token_type_ids"] = token_type_ids
    result = explain(model, inputs, target, method, rules=rules,
                     gradient_checkpointing=gradient_checkpointing)
    stream = result.streams.get("input_ids")
    if stream is None:
        raise ValueError(f"a {type(model).__name__} reads no input_ids; pass images")
    token, positional = stream.relevance, stream.positional
    if method == "attn_lrp":
        return token
    if positional is None:
        raise ValueError("this model has no positional encoding to attribute; use "
                         "method='attn_lrp'")
    return positional if method == "pe_only" else token + positional


class PALRP:
    """PA-LRP as a Captum attribution method: ``PALRP(model, method="pa_lrp").attribute(inputs,
    target)`` returns attributions shaped like ``inputs`` (see the module docstring for what
    they hold), on the inputs' device, float32 (float64 for a float64 model).

    ``model``: a model the engine explains (``palrp.families()``), unmodified (it is restored
    after each call). ``method``: ``"pa_lrp"``, ``"attn_lrp"`` or ``"pe_only"``. ``rules``: a
    :class:`palrp.RuleSet` or preset name (default: the family's own).

    Like Captum's attribution classes: ``forward_func`` is the model, ``multiplies_by_inputs``
    is True (relevance is gradient x input), ``has_convergence_delta()`` is False, and a
    1-tuple of inputs gives a 1-tuple of attributions.
    """

    def __init__(self, model, method: str = "pa_lrp", *, rules=None,
                 gradient_checkpointing: bool = False):
        self.forward_func = model
        self.method = _check_method(method)
        self.rules = rules
        self.gradient_checkpointing = bool(gradient_checkpointing)

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return False

    def get_name(self) -> str:
        return _NAMES[self.method]

    def attribute(self, inputs, target=None, additional_forward_args=None, *,
                  attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Attributions of ``target`` (None: each sample's prediction; an int; one per
        sample) for ``inputs``: (B, C, H, W) float images -> (B, C, H, W); (B, S) integer
        ``input_ids`` -> (B, S). For text, ``attention_mask`` (and ``token_type_ids``) as
        keywords, or Captum's ``additional_forward_args``: the mask, or a tuple
        ``(attention_mask,)`` / ``(attention_mask, token_type_ids)``."""
        as_tuple = isinstance(inputs, tuple)
        if as_tuple:
            if len(inputs) != 1:
                raise ValueError(f"PALRP explains one input tensor, got a tuple of "
                                 f"{len(inputs)}; pass the images or the input_ids alone")
            inputs = inputs[0]
        if not torch.is_tensor(inputs):
            inputs = torch.as_tensor(np.asarray(inputs))
        extra = additional_forward_args
        if extra is not None:
            extra = tuple(extra) if isinstance(extra, (tuple, list)) else (extra,)
            if len(extra) > 2 or attention_mask is not None or token_type_ids is not None:
                raise ValueError("give the attention mask (and token types) either as keywords "
                                 "or as additional_forward_args=(attention_mask, "
                                 "token_type_ids), once")
            attention_mask = extra[0]
            token_type_ids = extra[1] if len(extra) > 1 else None
        if inputs.is_floating_point():
            if attention_mask is not None or token_type_ids is not None:
                raise ValueError("an attention mask or token types go with input_ids, not "
                                 "with images")
            pixels, positional, _ = _image_pass(self.forward_func, inputs, target, self.method,
                                                self.rules, self.gradient_checkpointing)
            result = _image_attribution(pixels, positional, self.method)
        else:
            result = _token_attribution(self.forward_func, inputs, attention_mask,
                                        token_type_ids, target, self.method, self.rules,
                                        self.gradient_checkpointing)
            result = result.reshape(inputs.shape)
        result = result.to(inputs.device)
        return (result,) if as_tuple else result


def quantus_explain_func(model, inputs, targets, method: str = "pa_lrp", **kwargs) -> np.ndarray:
    """Quantus' ``explain_func``: ``quantus.SomeMetric(...)(model=model, x_batch=x,
    y_batch=y, explain_func=palrp.quantus_explain_func, explain_func_kwargs={"method":
    "pa_lrp"})``.

    ``inputs``: (B, C, H, W) images as numpy or torch (channels first, what Quantus passes for
    a torch model); ``targets``: the (B,) classes to explain (numpy, torch, a list, an int or
    None for the predictions). Returns float32 numpy (B, 1, H, W): :class:`PALRP`'s
    attribution summed over the channels (``map="relevance"``, the default), or the paper's
    vision map ``Explanation.combined()`` (``map="paper"``: ``clamp(pixel + pe, 0)`` for
    ``R(target) = 1``). Quantus broadcasts the single channel over the input's channels.
    (B, S) integer token ids give (B, S) per-token attributions (``map="relevance"`` only).

    ``kwargs``: ``map``, ``rules``, ``gradient_checkpointing``; ``device`` (Quantus adds it
    when a metric is called with one) is accepted and unused: the pass runs where the model's
    parameters are.
    """
    _check_method(method)
    kwargs.pop("device", None)
    kind = kwargs.pop("map", "relevance")
    rules = kwargs.pop("rules", None)
    checkpointing = bool(kwargs.pop("gradient_checkpointing", False))
    if kwargs:
        raise ValueError(f"quantus_explain_func got unknown options {sorted(kwargs)}; it takes "
                         "method, map ('relevance' or 'paper'), rules, gradient_checkpointing, "
                         "device")
    if kind not in ("relevance", "paper"):
        raise ValueError(f"map must be 'relevance' or 'paper', got {kind!r}")
    x = inputs if torch.is_tensor(inputs) else torch.as_tensor(np.asarray(inputs))
    if targets is not None and not torch.is_tensor(targets):
        targets = torch.as_tensor(np.asarray(targets))
    if not x.is_floating_point():
        if kind != "relevance":
            raise ValueError("map='paper' is for images; token ids give map='relevance'")
        tokens = PALRP(model, method, rules=rules,
                       gradient_checkpointing=checkpointing).attribute(x, targets)
        return tokens.detach().cpu().numpy().astype(np.float32)
    if x.dim() != 4:
        raise ValueError(f"quantus_explain_func takes (B, C, H, W) images, got shape "
                         f"{tuple(x.shape)}; with channels last, pass channel_first=False to "
                         "the metric or transpose the batch")
    pixels, positional, logit = _image_pass(model, x, targets, method, rules, checkpointing)
    summed = _image_attribution(pixels, positional, method).sum(1)
    if kind == "paper":
        from .modules.positional import per_unit_seed
        summed = per_unit_seed(summed, logit).clamp(min=0)
    return summed[:, None].detach().cpu().numpy().astype(np.float32)
