"""BEiT (transformers ``BeitForImageClassification``; ``BeitModel`` as a part): a ViT-like
encoder with a class token, learned relative position biases added to the attention scores
(one ``BeitRelativePositionBias`` per layer with ``use_relative_position_bias``, or one shared
by every layer with ``use_shared_relative_position_bias``), LayerScale lambdas, and mean pooling
of the patch tokens (``use_mean_pooling``: the pooler's LayerNorm on the mean) or the class
token.

Rules (docs/method.md, section 5 and "Relative position bias"): linears, the patch conv, the
class-token concat, the lambdas (elementwise scales), residual adds, the mean and the head plain
(epsilon); every LayerNorm std constant; GELU identity; attention AttnLRP's uniform rule on the
stock kernel (eager, sdpa): the bias reaches the kernel as its additive mask. Position: each
bias module's output, (1, heads, 1 + N, 1 + N), becomes a per-sample leaf read at the score
addition (``R(b) = b * dR/ds``, the epsilon rule on the sum) per key token (``position_dim=3``);
the shared bias is one leaf whose relevance sums its uses in every layer. K = number of bias
modules (+ 1 with ``use_absolute_position_embeddings``: the table as added, always through
``interpolate_pos_encoding``). Prefix: the class token (the bias's keys minus the patch grid).
With ``interpolate_pos_encoding=True`` the biases are resampled by the stock code before they
are returned, so the leaf is the bias as added."""
from ._hf_vision import vit_like_family

FAMILY = vit_like_family(
    "hf_beit", "Beit", "beit", order=131, position="additive+relative",
    tasks={"BeitForImageClassification": "image_classifier", "BeitModel": "part"},
    extra={"BeitRelativePositionBias": "relative_position_bias"},
    plain_extra=("Pooler", "DropPath"),
    examples="transformers BeitForImageClassification (relative position bias per layer or "
             "shared)")
