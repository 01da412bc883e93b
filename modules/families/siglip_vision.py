"""SigLIP's vision tower (transformers ``SiglipVisionModel``), as a part (of
``SiglipForImageClassification``, hf_siglip, and of the dual encoder ``SiglipModel``,
hf_siglip_dual): conv patch embedding and linears plain (epsilon), no class token, the learned
position table an ``nn.Embedding`` (its output the positional leaf, the epsilon rule on the sum,
K = 1, prefix 0), pre-norm layers (LayerNorm std constant), GELU-tanh identity, attention
AttnLRP's uniform rule on the stock kernel, the post-LayerNorm std constant.

The attention-pool head (``SiglipMultiheadAttentionPoolingHead``, ``vision_use_head``): a
learned probe attends over the tokens with ``nn.MultiheadAttention`` (the uniform rule on
``Q K^T`` and ``A V``: the stock module with its query, key and output gradients halved,
:mod:`palrp.modules.adapters.multihead_attention`), then a LayerNorm (std constant) and a residual
MLP (plain, GELU-tanh identity). Its output is the tower's ``pooler_output``, which the dual
encoder reads; the classifier reads the mean of the last hidden state instead, so there the
head carries nothing. With ``interpolate_pos_encoding=True`` at another size than the
configured one the table is resampled from its weight by the embeddings'
``interpolate_pos_encoding``; the table it returns, as added, is the leaf instead."""
from ..family import Family
from ..patching import RuleMap
from ..positional import VISION_PAPER
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"SiglipVisionModel": "part"}

FAMILY = Family(
    name="siglip_vision", library="transformers",
    rules=RuleMap(name="siglip_vision", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                           "SiglipAttention": "attention",
                           "SiglipMultiheadAttentionPoolingHead.attention": "multihead_attention"},
                  plain=PLAIN + ("Conv2d", "NonDynamicallyQuantizableLinear") + tuple(
                      "Siglip" + part for part in ("VisionEmbeddings", "Encoder", "EncoderLayer",
                                                   "MLP", "MultiheadAttentionPoolingHead")),
                  namespaces=(*namespaces("siglip"), "torch.nn.modules.linear")),
    tasks=_TASKS, stream="pixel_values", position="additive",
    position_module="embeddings.position_embedding", combination=VISION_PAPER,
    baselines=frozenset(), _order=134, examples="SiglipVisionModel (a vision tower)")
