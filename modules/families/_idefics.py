"""Shared maps of the Idefics3 and SmolVLM families (not a family: the registry skips ``_``
modules): the composite and its SigLIP-like vision tower over sub-images."""
from __future__ import annotations

from ..family import Family
from ..patching import RuleMap
from ..positional import VISION_PAPER
from ._transformers import ACTIVATIONS, PLAIN, namespaces


def composite(name: str, prefix: str, model_type: str, *, order: int) -> Family:
    """``{prefix}ForConditionalGeneration``: the vision tower and the language model (any
    registered family: Llama for SmolLM) are parts; the glue, the connector (pixel shuffle:
    a reshape; a linear projection) and the LM head, is plain."""
    tasks = {f"{prefix}ForConditionalGeneration": "causal_lm", f"{prefix}Model": "part"}
    return Family(
        name=name, library="transformers",
        rules=RuleMap(name=name, model_classes=tuple(tasks), modules=dict(ACTIVATIONS),
                      plain=PLAIN + (f"{prefix}Connector", f"{prefix}SimpleMLP"),
                      namespaces=namespaces(model_type)),
        tasks=tasks, stream=None, baselines=frozenset(), _order=order,
        examples=f"{prefix}ForConditionalGeneration (its vision tower + Llama, ...)")


def vision_tower(name: str, prefix: str, model_type: str, *, order: int) -> Family:
    """``{prefix}VisionTransformer``: SigLIP's tower over every real sub-image (conv patch
    embedding and linears plain, LayerNorms std constant, GELU-tanh identity, attention uniform
    on the stock kernel with the patch mask), its learned table an ``nn.Embedding`` looked up
    at bucketed fractional coordinates (NaViT-style, for sub-images of any size): the table's
    output, as added, is the positional leaf (K = 1, prefix 0), one row per real sub-image."""
    return Family(
        name=name, library="transformers",
        rules=RuleMap(name=name, model_classes=(f"{prefix}VisionTransformer",),
                      modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                               f"{prefix}VisionAttention": "attention"},
                      plain=PLAIN + ("Conv2d",) + tuple(f"{prefix}{part}" for part in (
                          "VisionEmbeddings", "Encoder", "EncoderLayer", "VisionMLP")),
                      namespaces=namespaces(model_type)),
        tasks={f"{prefix}VisionTransformer": "part"}, stream="pixel_values",
        position="additive", position_module="embeddings.position_embedding",
        pixel_layout="tiles", combination=VISION_PAPER, baselines=frozenset(), _order=order,
        examples=f"{prefix}VisionTransformer (a vision tower over sub-images)")
