"""CLIP's text tower (transformers ``CLIPTextModel``), as a part of a dual encoder (``CLIPModel``,
the hf_clip_dual family): token embeddings plus a learned position table (an ``nn.Embedding``:
its output is the positional leaf, the epsilon rule on the sum, K = 1), causal pre-norm layers
(LayerNorm std constant), quick-GELU identity, attention AttnLRP's uniform rule on the stock
kernel, the final LayerNorm, and the readout of the end-of-text token (an index: plain)."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"CLIPTextModel": "part"}

FAMILY = Family(
    name="clip_text", library="transformers",
    rules=RuleMap(name="clip_text", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm", "CLIPAttention": "attention"},
                  plain=PLAIN + ("CLIPTextEmbeddings", "CLIPEncoder", "CLIPEncoderLayer",
                                 "CLIPMLP"),
                  namespaces=namespaces("clip")),
    tasks=_TASKS, stream="input_ids", position="additive",
    position_module="embeddings.position_embedding", baselines=frozenset(), _order=132,
    examples="CLIPTextModel (a text tower)")
