"""SigLIP 2's text tower (transformers ``Siglip2TextModel``), as a part of the dual encoder
``Siglip2Model`` (hf_siglip2_dual): as siglip_text (token embeddings plus a learned position
table, an ``nn.Embedding`` whose output is the positional leaf, K = 1; bidirectional pre-norm
layers, LayerNorm std constant, GELU-tanh identity, attention AttnLRP's uniform rule on the stock
kernel; the last position read, its linear head plain; padding on the left)."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"Siglip2TextModel": "part"}

FAMILY = Family(
    name="siglip2_text", library="transformers",
    rules=RuleMap(name="siglip2_text", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                           "Siglip2Attention": "attention"},
                  plain=PLAIN + ("Siglip2TextEmbeddings", "Siglip2Encoder", "Siglip2EncoderLayer",
                                 "Siglip2MLP"),
                  namespaces=namespaces("siglip2")),
    tasks=_TASKS, stream="input_ids", position="additive",
    position_module="embeddings.position_embedding", baselines=frozenset(), _order=140,
    examples="Siglip2TextModel (a text tower)")
