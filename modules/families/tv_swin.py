"""Family map: torchvision ``SwinTransformer`` (``swin_t``, ``swin_s``, ``swin_b`` and the V2
models ``swin_v2_t``, ... : the same class, with ``SwinTransformerBlockV2`` blocks).

Position enters only as each block's relative position bias (V1: a learned table; V2: the
continuous position bias, ``16 sigmoid(cpb_mlp(log-spaced coordinates))``), added to the window
attention's scores: the bias as added is a positional leaf on the input patch grid, read per key
patch, coarser stages spread over the input patches a token covers (docs/method.md, section 14;
modules/adapters/windows.py). K = one sink per block. Rules: the patch conv Gamma 100, MLP
linears and head Gamma 0.05, LayerNorm std constant, GELU identity, window attention uniform
(softmax plain; V2's cosine attention: the q and k norms constant, the logit scale a constant
factor); qkv, proj, the merging reduction, residual adds, the pool plain (epsilon).
Table: docs/vision_families.md.
"""
from ..patching import RuleMap
from ._timm import image_family

RULE_MAP = RuleMap(
    name="tv_swin",
    model_classes=("SwinTransformer",),
    namespaces=("torchvision.models.swin_transformer", "torchvision.ops.misc",
                "torchvision.ops.stochastic_depth"),
    modules={
        "Conv2d": "patch_conv",                      # features[0][0], the only conv
        "MLP.0": "gamma_linear",
        "MLP.3": "gamma_linear",
        "SwinTransformer.head": "gamma_linear",
        "LayerNorm": "layer_norm",
        "GELU": "identity",
        "ShiftedWindowAttention": "window_attention",
        "ShiftedWindowAttentionV2": "window_attention",
    },
    plain=("SwinTransformerBlock", "SwinTransformerBlockV2", "PatchMerging", "PatchMergingV2",
           "MLP", "Permute", "StochasticDepth", "Sequential", "Dropout", "Linear", "ReLU",
           "AdaptiveAvgPool2d", "Flatten"),
    notes="qkv, proj, V2's cpb_mlp (it makes the bias; the leaf is its output as added), the "
          "merging reduction, residual adds and the pool keep their stock (epsilon) backward",
)

FAMILY = image_family(
    "tv_swin", "torchvision", "SwinTransformer", RULE_MAP,
    position="relative",
    order=115,
    examples="torchvision SwinTransformer: swin_t/s/b, swin_v2_t/s/b",
    notes="relative position bias (V2: continuous) of each block, a leaf on the input patch "
          "grid",
)
