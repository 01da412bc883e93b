"""SigLIP's vision tower (transformers ``SiglipVisionModel``) as a part of a vision-language model
(Gemma 3, PaliGemma, which read its last hidden state): conv patch embedding and linears plain
(epsilon), no class token, the learned position table an ``nn.Embedding``
(``embeddings.position_embedding``, its output the positional leaf, K = 1, prefix 0),
pre-norm LayerNorms (std constant), GELU-tanh identity, attention on the stock kernel with
AttnLRP's uniform rule, and the post-LayerNorm (std constant).

Only a tower without the attention-pool head (``vision_use_head=False``, as Gemma 3 and
PaliGemma configure it) is covered: the head's ``nn.MultiheadAttention`` has no rule here, so a
tower that has one is refused by name (the map does not cover it). With
``interpolate_pos_encoding=True`` at another size the table is resampled outside the embedding
module and no positional leaf is reached (PA-LRP refuses it)."""
from ..family import Family
from ..patching import RuleMap
from ..positional import VISION_PAPER
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"SiglipVisionModel": "part"}

FAMILY = Family(
    name="siglip_vision", library="transformers",
    rules=RuleMap(name="siglip_vision", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                           "SiglipAttention": "attention"},
                  plain=PLAIN + ("Conv2d",) + tuple("Siglip" + part for part in (
                      "VisionEmbeddings", "Encoder", "EncoderLayer", "MLP")),
                  namespaces=namespaces("siglip")),
    tasks=_TASKS, stream="pixel_values", position="additive",
    position_module="embeddings.position_embedding", combination=VISION_PAPER,
    baselines=frozenset(), _order=150,
    examples="SiglipVisionModel without its pooling head (a vision tower)")
