"""Family map: timm ``Eva`` (EVA-02: absolute ``pos_embed`` plus 2-D axial RoPE, SwiGLU MLP; the
RoPE ViTs ``vit_*_rope_*``: ``AttentionRope`` blocks with axial or learned per-head ("mixed")
RoPE, with or without the absolute table).

Position enters twice: the additive ``pos_embed`` (one sink) and each block's rotary sin/cos,
applied to the patch tokens only (two sinks per block; a mixed RoPE's per-head tables are read
per patch, heads summed: docs/method.md, section 14). Relevance reaches the rotary sinks only
through q and k, so the default rule set uses the uniform (AttnLRP) attention rule; the paper's
constant-attention rule is available and then gives the rotary sinks nothing.
Rules: docs/method.md; table: docs/vision_families.md.
"""
from ..family import Family
from ..patching import RuleMap
from ..positional import VISION_PAPER
from ..rules import UNIFORM_RULES
from ._timm import SHARED

RULE_MAP = RuleMap(
    name="eva",
    model_classes=("Eva",),
    namespaces=("timm.models.eva", *SHARED),
    modules={
        "PatchEmbed.proj": "gamma_conv",
        "Mlp.fc1": "gamma_linear",
        "Mlp.fc2": "gamma_linear",
        "GluMlp": "glu_mlp",                  # fc1 (packed gate|x) and fc2 Gamma, gate product uniform
        "GluMlp.fc1": "gamma_linear",
        "GluMlp.fc2": "gamma_linear",
        "SwiGLU": "swiglu",                   # fc1_g, fc1_x, fc2 Gamma, gate product uniform
        "SwiGLU.fc1_g": "gamma_linear",
        "SwiGLU.fc1_x": "gamma_linear",
        "SwiGLU.fc2": "gamma_linear",
        "Eva.head": "gamma_linear",
        "LayerNorm": "layer_norm",
        "GELU": "identity",
        "SiLU": "identity",
        "EvaAttention": "eva_attention",      # attention rule + rotary sinks (uniform products)
        "AttentionRope": "eva_attention",     # the RoPE ViTs' attention: the same rules
    },
    methods={"Eva._pos_embed": "additive_position"},
    plain=("EvaBlock", "ModuleList", "Sequential", "Identity", "Dropout", "Linear", "Conv2d",
           "PatchEmbed", "Mlp", "RotaryEmbeddingCat", "RotaryEmbeddingMixed"),
    notes="qkv and proj linears, residual adds, the gamma_1/gamma_2 layer scales and the token "
          "concat keep their stock (epsilon) backward",
)

FAMILY = Family(
    name="eva",
    library="timm",
    rules=RULE_MAP,
    tasks={"Eva": "image_classifier"},
    stream="pixel_values",
    position="additive+rotary",
    default_rules=UNIFORM_RULES,
    rule_sets=("paper", "conservative", "uniform", "custom"),
    combination=VISION_PAPER,
    baselines=frozenset({"attention", "gradient"}),
    _order=11,
    examples="timm Eva: eva02, vit_*_rope_* (axial or mixed RoPE)",
    notes="additive pos_embed (as vit) and, per block, the rotary sin and cos leaves, "
          "patch tokens only (offset = prefix tokens)",
)
