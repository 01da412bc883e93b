"""Shared map of transformers' ViT-like image classifiers (not a family: the registry skips
``_`` modules). ViT, DeiT, DINOv2 and DINOv2 with registers share one structure: a conv patch
embedding, prefix tokens concatenated in front of the patches, a learned position table kept as
an ``nn.Parameter`` ``embeddings.position_embeddings`` of shape (1, N, D) added inside the
embeddings' forward (after resampling to the input's grid where the model does that), pre-norm
layers with an attention module on the attention interface, and a linear head."""
from __future__ import annotations

from typing import Mapping

from ..family import Family
from ..patching import RuleMap
from ..positional import VISION_PAPER
from ._transformers import ACTIVATIONS, PLAIN, namespaces


def vit_like_family(name: str, prefix: str, model_type: str, *, tasks: Mapping[str, str],
                    order: int, examples: str, notes: str = "",
                    extra: Mapping[str, str] | None = None,
                    plain_extra: tuple[str, ...] = (), position: str = "additive") -> Family:
    """The map of a transformers ViT-like classifier whose classes are ``{prefix}Attention``,
    ``{prefix}Embeddings``, ``{prefix}PatchEmbeddings``, ``{prefix}Layer``, ``{prefix}MLP``
    and ``{prefix}Model``: LayerNorms std constant, activations identity (a base model's pooler
    ``tanh`` too), attention AttnLRP's uniform rule on the stock kernel, linears, the patch conv,
    the prefix concat, LayerScale and the head plain (epsilon); the position table
    ``embeddings.position_embeddings`` as added is the positional leaf (K = 1); ``position``:
    ``"additive+relative"`` for a family that also adds relative position biases to the
    attention scores (BEiT; its table is then optional)."""
    modules = {**ACTIVATIONS, "Tanh": "identity", "LayerNorm": "layer_norm",
               f"{prefix}Attention": "attention", **(extra or {})}
    plain = PLAIN + ("Conv2d",) + tuple(f"{prefix}{part}" for part in (
        "Embeddings", "PatchEmbeddings", "Layer", "MLP", "Model", *plain_extra))
    return Family(
        name=name, library="transformers",
        rules=RuleMap(name=name, model_classes=tuple(tasks), modules=modules, plain=plain,
                      namespaces=namespaces(model_type)),
        tasks=dict(tasks), stream="pixel_values", position=position,
        position_parameter="embeddings.position_embeddings", combination=VISION_PAPER,
        baselines=frozenset(), _order=order, examples=examples, notes=notes)
