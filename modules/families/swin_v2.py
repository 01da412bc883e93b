"""Family map: timm ``SwinTransformerV2`` (Swin V2: cosine window attention with a learned
logit scale, continuous position bias ``16 sigmoid(cpb_mlp(log-spaced coordinates))``,
post-norm residual blocks).

Position enters only as each block's continuous position bias, added to the scores: the bias as
added (after the MLP and the sigmoid, which only make it from fixed coordinates) is a positional
leaf on the input patch grid, read per key patch, coarser stages spread over the input patches a
token covers, exactly as for Swin (docs/method.md, section 14; modules/adapters/windows.py).
K = one sink per block. Cosine attention: the q and k norms constant (as LayerNorm's std), the
clamped logit scale a constant factor, ``Q K^T`` and ``A V`` uniform, softmax plain. Patch conv
Gamma 100, MLP linears and the classifier Gamma 0.05, LayerNorm std constant, GELU identity;
qkv, proj, cpb_mlp, the merging reduction, residual adds and the pool plain (epsilon).
Table: docs/vision_families.md.
"""
from ..patching import RuleMap
from ._timm import SHARED, image_family, vision_rules

RULE_MAP = RuleMap(
    name="swin_v2",
    model_classes=("SwinTransformerV2",),
    namespaces=("timm.models.swin_transformer_v2", "timm.layers.adaptive_avgmax_pool", *SHARED),
    modules=vision_rules("ClassifierHead.fc"),
    methods={"SwinTransformerV2Block._attn": "window_attention"},
    plain=("SwinTransformerV2Stage", "SwinTransformerV2Block", "WindowAttention",
           "PatchMerging", "PatchEmbed", "Mlp", "ClassifierHead", "SelectAdaptivePool2d",
           "FastAdaptiveAvgPool", "AdaptiveAvgPool2d", "Flatten", "Sequential", "ModuleList",
           "Identity", "Dropout", "DropPath", "Linear", "Conv2d", "Softmax", "ReLU"),
    notes="WindowAttention's forward is not called: the block's _attn runs the window "
          "attention with the bias leaf",
)

FAMILY = image_family(
    "swin_v2", "timm", "SwinTransformerV2", RULE_MAP,
    position="relative",
    order=112,
    examples="timm SwinTransformerV2: swinv2_*",
    notes="continuous position bias of each block, a leaf on the input patch grid",
)
