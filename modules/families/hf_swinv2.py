"""Swin V2 (transformers ``Swinv2ForImageClassification``; ``Swinv2Model`` as a part): window
attention with cosine scores, a learned logit scale and a continuous position bias
(``16 sigmoid(MLP(log-spaced relative coordinates))``), res-post-norm blocks, patch merging,
mean pooling.

Rules (docs/method.md, section 5 and "Relative position bias"): linears (q, k, v, output, MLP,
the merging ``reduction``), the patch conv, residual adds, window partition and cyclic shift,
the mean pool and the head plain (epsilon); every LayerNorm std constant; GELU identity.
Attention: transformers 5.24 computes it inline in ``Swinv2SelfAttention.forward``, so the
rule is a torch function mode around that stock forward
(:mod:`palrp.modules.adapters.cosine_window_attention`): the chosen way because it changes the
backward of four inline calls and nothing else, where a wrapper of q, k and the output could not
reach the normalisations, the bias or the products between them: the norms of ``normalize(q)``
and ``normalize(k)`` constant, the uniform rule on ``q^ k^T`` and on ``A v``, the logit scale,
mask and softmax plain. Only the eager computation exists (no attention interface), so no
eager == sdpa check applies.

Position: the continuous bias as added to the scores is each block's positional leaf on the
input patch grid, read at the score addition (M15) per key patch exactly as Swin's table bias
(:func:`palrp.modules.adapters.windows.bias_on_patch_grid`: windows mapped back, shift undone,
padding keys dropped, a merged stage's tokens spread over the patches they cover): K = blocks,
no prefix token. (Swin V2's
``use_absolute_embeddings`` table does not fit its own patch sequence in this release, so it is
not covered.)"""
from ..family import Family
from ..patching import RuleMap
from ..positional import VISION_PAPER
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"Swinv2ForImageClassification": "image_classifier", "Swinv2Model": "part"}

FAMILY = Family(
    name="hf_swinv2", library="transformers",
    rules=RuleMap(name="hf_swinv2", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                           "Swinv2SelfAttention": "cosine_window_attention",
                           "Swinv2Layer": "window_layer"},
                  plain=PLAIN + ("Conv2d", "AdaptiveAvgPool1d", "Sequential") + tuple(
                      "Swinv2" + part for part in (
                          "Model", "Embeddings", "PatchEmbeddings", "Encoder", "Stage",
                          "PatchMerging", "Attention", "SelfOutput", "Intermediate", "Output",
                          "DropPath")),
                  namespaces=namespaces("swinv2")),
    tasks=_TASKS, stream="pixel_values", position="relative", combination=VISION_PAPER,
    kernels_checked=("eager",), baselines=frozenset(), _order=137,
    examples="transformers Swinv2ForImageClassification (continuous position bias per block)")
