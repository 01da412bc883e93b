"""Family map: timm ``VisionTransformer`` and ``VisionTransformerDistilled``.

Covers deit_*, vit_* (class token or average pool with ``fc_norm``), deit_*_distilled (two heads
averaged in eval), deit3_* (LayerScale, ``pos_embed`` without the class entry), vit_*_dinov2
(LayerScale, patch 14, ``dynamic_img_size``), vit_*_clip_* (``norm_pre``, quick-GELU),
register-token ViTs, ``qk_norm`` ViTs and the attention-pool head of SigLIP-style ViTs
(``global_pool='map'``: a learned latent query, its attention under the rule set's attention
rule, modules/adapters/attention_pool.py). Rules: docs/method.md; table: docs/vision_families.md.
"""
from ..family import Family
from ..patching import RuleMap
from ..positional import VISION_PAPER
from ..rules import PAPER_RULES
from ._timm import ALL_BASELINES, SHARED

MODEL_CLASSES = ("VisionTransformer", "VisionTransformerDistilled")

RULE_MAP = RuleMap(
    name="vit",
    model_classes=MODEL_CLASSES,
    namespaces=("timm.models.vision_transformer", "timm.models.deit", *SHARED),
    modules={
        "PatchEmbed.proj": "gamma_conv",            # Gamma 100
        "Mlp.fc1": "gamma_linear",                  # Gamma 0.05
        "Mlp.fc2": "gamma_linear",
        "VisionTransformer.head": "gamma_linear",
        "VisionTransformerDistilled.head": "gamma_linear",
        "VisionTransformerDistilled.head_dist": "gamma_linear",
        "LayerNorm": "layer_norm",                  # std constant (norm1/2, norm, fc_norm, norm_pre, qk_norm)
        "GELU": "identity",
        "QuickGELU": "identity",
        "Attention": "attention",                   # the rule set's attention rule
        "AttentionPoolLatent": "attention_pool",    # global_pool='map': the same attention rule
    },
    methods={
        "VisionTransformer._pos_embed": "additive_position",
        "VisionTransformerDistilled._pos_embed": "additive_position",
    },
    plain=("Block", "Sequential", "ModuleList", "Identity", "Dropout", "LayerScale", "Linear",
           "Conv2d", "PatchEmbed", "Mlp"),
    notes="qkv and proj linears, residual adds, LayerScale, the position add and the token "
          "concat keep their stock (epsilon) backward",
)

FAMILY = Family(
    name="vit",
    library="timm",
    rules=RULE_MAP,
    tasks={cls: "image_classifier" for cls in MODEL_CLASSES},
    stream="pixel_values",
    position="additive",
    default_rules=PAPER_RULES,
    rule_sets=("paper", "conservative", "uniform", "custom"),
    combination=VISION_PAPER,
    baselines=ALL_BASELINES,
    _order=10,
    examples="timm VisionTransformer/VisionTransformerDistilled: deit, vit, deit3, dinov2, "
             "clip, registers, qk_norm",
    notes="additive pos_embed, a leaf where _pos_embed adds it (after resampling for a "
          "dynamic image size); with no_embed_class it skips the prefix tokens",
)
