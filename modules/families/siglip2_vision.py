"""SigLIP 2's vision tower (transformers ``Siglip2VisionModel``), as a part of
``Siglip2ForImageClassification`` (hf_siglip2). Its input is NaFlex's: ``pixel_values``
patchified by the image processor, (B, N, P*P*C), each image's grid in ``spatial_shapes`` and
its real patches in ``pixel_attention_mask`` (``Family.pixel_layout = "patch_sequence"``).

Rules as siglip_vision (docs/method.md, section 5): the patch embedding (a linear on the
patches) and linears plain, LayerNorms std constant, GELU-tanh identity, attention AttnLRP's
uniform rule on the stock kernel (the padding masked as the stock code masks it), the
attention-pool head's ``nn.MultiheadAttention`` uniform on ``Q K^T`` and ``A V``. Position: the
learned (G x G) table, resized by the stock code to each image's grid and added to the patch
embeddings: that addend, (B, N, D) as added, is the positional leaf (the epsilon rule on the
sum, K = 1), found as the one sum of two (B, N, D) tensors in the embeddings' forward
(:mod:`palrp.modules.adapters.patch_sequence`). The stream is reported on a canvas of the
batch's largest grid, each image in its top-left corner (pixels unpatchified in the processor's
order); no prefix token."""
from ..family import Family
from ..patching import RuleMap
from ..positional import VISION_PAPER
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"Siglip2VisionModel": "part"}

FAMILY = Family(
    name="siglip2_vision", library="transformers",
    rules=RuleMap(name="siglip2_vision", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                           "Siglip2Attention": "attention",
                           "Siglip2VisionEmbeddings": "patch_sequence_embeddings",
                           "Siglip2MultiheadAttentionPoolingHead.attention": "multihead_attention"},
                  plain=PLAIN + ("NonDynamicallyQuantizableLinear",) + tuple(
                      "Siglip2" + part for part in ("Encoder", "EncoderLayer", "MLP",
                                                    "MultiheadAttentionPoolingHead")),
                  namespaces=(*namespaces("siglip2"), "torch.nn.modules.linear")),
    tasks=_TASKS, stream="pixel_values", position="additive", pixel_layout="patch_sequence",
    combination=VISION_PAPER, baselines=frozenset(), _order=138,
    examples="Siglip2VisionModel (a NaFlex vision tower)")
