"""SigLIP's text tower (transformers ``SiglipTextModel``), as a part of the dual encoder
``SiglipModel`` (hf_siglip_dual): token embeddings plus a learned position table (an
``nn.Embedding``, its output the positional leaf, K = 1), bidirectional pre-norm layers (LayerNorm
std constant), GELU-tanh identity, attention AttnLRP's uniform rule on the stock kernel, the final
LayerNorm, the readout of the last position and the linear head (plain). It reads the last
position, so a padded batch is padded on the left (the engine passes the positions a sample
has alone, and its padding is masked)."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"SiglipTextModel": "part"}

FAMILY = Family(
    name="siglip_text", library="transformers",
    rules=RuleMap(name="siglip_text", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                           "SiglipAttention": "attention"},
                  plain=PLAIN + ("SiglipTextEmbeddings", "SiglipEncoder", "SiglipEncoderLayer",
                                 "SiglipMLP"),
                  namespaces=namespaces("siglip")),
    tasks=_TASKS, stream="input_ids", position="additive",
    position_module="embeddings.position_embedding", baselines=frozenset(), _order=135,
    examples="SiglipTextModel (a text tower)")
