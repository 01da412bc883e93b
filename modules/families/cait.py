"""Family map: timm ``Cait`` (CaiT: talking-heads self-attention blocks, class-attention blocks
that the class token joins late, layer scale everywhere).

Position enters once: ``pos_embed`` added to the patch tokens before any block (the class token
is concatenated in front after the self-attention blocks, so the table's offset is the one
prefix token; the class token carries no position, reported as 0). The leaf is the table as
added (M9). Talking heads: the score and probability mixes across heads (``proj_l``,
``proj_w``) are linear maps, plain (epsilon); ``q k^T`` and ``A V`` get the rule set's attention
rule; class attention as the ViT's attention (docs/method.md, section 14;
modules/adapters/cait.py). Patch conv Gamma 100, MLP linears and head Gamma 0.05, LayerNorm std
constant, GELU identity; qkv, proj, the gammas, residual adds, the concat and the readout plain.
Default rules: the paper's (the position table is additive, as in DeiT).
Table: docs/vision_families.md.
"""
from ..patching import RuleMap
from ..rules import PAPER_RULES
from ._timm import SHARED, image_family, vision_rules

RULE_MAP = RuleMap(
    name="cait",
    model_classes=("Cait",),
    namespaces=("timm.models.cait", *SHARED),
    modules=vision_rules("Cait.head", TalkingHeadAttn="talking_heads_attention",
                         ClassAttn="class_attention"),
    methods={"Cait.forward_features": "cait_features"},
    plain=("LayerScaleBlock", "LayerScaleBlockClassAttn", "ModuleList", "Sequential",
           "Identity", "Dropout", "DropPath", "Linear", "Conv2d", "PatchEmbed", "Mlp"),
    notes="qkv, q, k, v, proj, proj_l, proj_w, the gammas, residual adds and the class-token "
          "concat keep their stock (epsilon) backward",
)

FAMILY = image_family(
    "cait", "timm", "Cait", RULE_MAP,
    position="additive",
    order=113,
    examples="timm Cait: cait_*",
    notes="pos_embed on the patch tokens (offset = the class token)",
    rule_sets=("paper", "conservative", "uniform", "custom"),
    default_rules=PAPER_RULES,
)
