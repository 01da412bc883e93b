"""``explain_image`` and ``explain_text``: thin conveniences over :func:`palrp.modules.engine.explain`
for the two common cases, and ``method_maps``: the three maps shown side by side."""
from __future__ import annotations

from .engine import explain
from .explanation import Explanation

__all__ = ["explain_image", "explain_text", "method_maps", "MAP_NAMES"]

#: Display names of the three maps of one PA-LRP explanation (and its AttnLRP twin).
MAP_NAMES = {"attn_lrp": "AttnLRP", "pa_lrp": "PA-LRP", "pe_only": "PE-only"}


def explain_image(model, images, method: str = "pa_lrp", target=None,
                  rules=None) -> Explanation:
    """Explain a batch of normalised (B, C, H, W) images: ``explain(model, images, target,
    method, rules=rules)``. ``result.combined()`` is the paper's (B, H, W) map."""
    return explain(model, images, target, method, rules=rules)


def explain_text(model, input_ids, attention_mask=None, target=None, pe: bool = True, *,
                 token_type_ids=None, gradient_checkpointing: bool = False, position=None,
                 mask_token_id: int | None = None) -> Explanation:
    """Explain token ids (B, S) or (S,) of a causal LM, masked LM or classifier: ``explain``
    with ``method="pa_lrp"`` (``pe=True``) or ``"attn_lrp"`` (``pe=False``); ``position`` and
    ``mask_token_id`` as in ``explain``. ``result.combined()`` is the paper's (B, S) map."""
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        inputs["token_type_ids"] = token_type_ids
    return explain(model, inputs, target, "pa_lrp" if pe else "attn_lrp",
                   gradient_checkpointing=gradient_checkpointing, position=position,
                   mask_token_id=mask_token_id)


def method_maps(model, inputs, target=None, *, stream: str | None = None, **kwargs):
    """The three maps of docs/method.md side by side for one stream: ``AttnLRP`` (positions
    constant), ``PA-LRP`` (the paper's merged map) and ``PE-only``. The AttnLRP run explains the
    same target as the PA-LRP run. Returns ``(maps, pa_lrp_explanation)``; ``kwargs`` go to
    :func:`explain` (``rules``, ``gradient_checkpointing``)."""
    palrp = explain(model, inputs, target, "pa_lrp", **kwargs)
    attnlrp = explain(model, inputs, palrp.target, "attn_lrp", **kwargs)
    maps = {
        MAP_NAMES["attn_lrp"]: attnlrp.combined(stream),
        MAP_NAMES["pa_lrp"]: palrp.combined(stream),
        MAP_NAMES["pe_only"]: palrp.combined(stream, pe_only=True),
    }
    return maps, palrp
