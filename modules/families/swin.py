"""Family map: timm ``SwinTransformer`` (Swin: shifted-window attention with a relative
position bias table, patch merging between stages, average pool).

Position enters only as each block's relative position bias, added to the window attention's
scores: the bias is a positional leaf (the epsilon rule on the score sum), its relevance read
per key patch and, for a stage coarser than the input patch grid, spread uniformly over the
input patches each token covers (docs/method.md, section 14; modules/adapters/windows.py).
K = one sink per block. The bias receives relevance only through the scores, so the family is
explained with the uniform attention rule (AttnLRP: uniform on ``Q K^T`` and ``A V``, softmax
plain); the constant rule is refused. Patch-embedding conv Gamma 100, MLP linears and the
classifier Gamma 0.05, every LayerNorm std constant, GELU identity; qkv, proj, the patch-merging
reduction, residual adds and the pool plain (epsilon). Table: docs/vision_families.md.
"""
from ..patching import RuleMap
from ._timm import SHARED, image_family, vision_rules

RULE_MAP = RuleMap(
    name="swin",
    model_classes=("SwinTransformer",),
    namespaces=("timm.models.swin_transformer", "timm.layers.adaptive_avgmax_pool", *SHARED),
    modules=vision_rules("ClassifierHead.fc"),
    methods={"SwinTransformerBlock._attn": "window_attention"},
    plain=("SwinTransformerStage", "SwinTransformerBlock", "WindowAttention", "PatchMerging",
           "PatchEmbed", "Mlp", "ClassifierHead", "SelectAdaptivePool2d", "FastAdaptiveAvgPool",
           "AdaptiveAvgPool2d", "Flatten", "Sequential", "Identity", "Dropout", "DropPath",
           "Linear", "Conv2d", "Softmax"),
    notes="WindowAttention's forward is not called: the block's _attn runs the window "
          "attention with the bias leaf; qkv, proj, the merging reduction, residual adds and "
          "the pool keep their stock (epsilon) backward",
)

FAMILY = image_family(
    "swin", "timm", "SwinTransformer", RULE_MAP,
    position="relative",
    order=110,
    examples="timm SwinTransformer: swin_*",
    notes="relative position bias of each block, a leaf on the input patch grid (per key "
          "patch; coarser stages spread over the patches they cover)",
)
