"""Swin (transformers ``SwinForImageClassification``; ``SwinModel`` as a part): window attention
with a learned relative position bias per block, patch merging between stages, mean pooling.

Rules (docs/method.md, section 5 and "Relative position bias"): the patch conv, linears (q, k,
v, o, MLP, the merging ``reduction``), residual adds, the window partition and cyclic shift
(reshapes, rolls), the mean pool and the head plain (epsilon); every LayerNorm std constant;
GELU identity. Attention: transformers 5.24 computes Swin's window attention on the attention
interface, with the block's relative position bias (plus the shifted-window mask) as the
kernel's additive mask, so the adapter's kernel wrapper gives it AttnLRP's uniform rule on
``Q K^T`` and ``A V`` with the stock kernel (eager, sdpa) and no inline code is replaced.

Position: each block's bias ``SwinRelativePositionBias`` output is a positional leaf on the
input patch grid, read at the score addition (``R(b) = b * dR/ds``, the epsilon rule on the
sum) per key patch: windows mapped back to the block's grid, the shift undone, the window
padding's keys (a stage grid not divisible by the window) dropped, as they are no image
position; a block of stage s (grid merged 2^s x 2^s times) has its per-token relevance spread
evenly over the first-stage patches the token covers, so every sink (K = number of blocks) lies
on the first stage's patch grid and sums to the bias's relevance at the image's keys
(:func:`palrp.modules.adapters.windows.bias_on_patch_grid`, the mechanism of every Swin, via
:mod:`palrp.modules.adapters.hf_relative_bias`). With ``use_absolute_embeddings`` the (1, N, D)
table as added (resampled with ``interpolate_pos_encoding=True``) is one more sink. No prefix
token."""
from ..family import Family
from ..patching import RuleMap
from ..positional import VISION_PAPER
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"SwinForImageClassification": "image_classifier", "SwinModel": "part"}

FAMILY = Family(
    name="hf_swin", library="transformers",
    rules=RuleMap(name="hf_swin", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm", "SwinAttention": "attention",
                           "SwinRelativePositionBias": "window_position_bias",
                           "SwinLayer": "window_layer"},
                  plain=PLAIN + ("Conv2d", "AdaptiveAvgPool1d") + tuple(
                      "Swin" + part for part in ("Model", "Embeddings", "PatchEmbeddings",
                                                 "Encoder", "Stage", "PatchMerging", "MLP",
                                                 "DropPath")),
                  namespaces=namespaces("swin")),
    tasks=_TASKS, stream="pixel_values", position="additive+relative",
    position_parameter="embeddings.position_embeddings", combination=VISION_PAPER,
    baselines=frozenset(), _order=130,
    examples="transformers SwinForImageClassification (relative position bias per block)")
