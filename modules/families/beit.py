"""Family map: timm ``Beit`` (BEiT, BEiT v2: relative position bias per block or shared by
every block, optional absolute ``pos_embed``, layer-scale gammas, average pool with
``fc_norm`` or the class token).

Position enters as each block's relative position bias (and/or the shared one) added to the
attention scores, and as the absolute table where the model has one. Every bias is a positional
leaf, the epsilon rule on the score sum, read per key token (the class token's entries on the
class token): one sink per block (``rel_bias_b``), one for the shared table (``shared_rel_bias``)
and one for ``pos_embed``; docs/method.md, section 14; modules/adapters/relative_bias.py. The
bias reaches relevance only through the scores, so the default rule set is the uniform
(AttnLRP) one; the constant rule (``paper``, ``conservative``) is available and then gives the
biases nothing. Patch conv Gamma 100, MLP linears and head Gamma 0.05, LayerNorm std constant,
GELU identity; qkv, proj, the gammas, residual adds, the concat and the pool plain (epsilon).
Table: docs/vision_families.md.
"""
from ..patching import RuleMap
from ._timm import SHARED, image_family, vision_rules

RULE_MAP = RuleMap(
    name="beit",
    model_classes=("Beit",),
    namespaces=("timm.models.beit", *SHARED),
    modules=vision_rules("Beit.head", Attention="beit_attention"),
    methods={"Beit.forward_features": "beit_features"},
    plain=("Block", "RelativePositionBias", "ModuleList", "Identity", "Dropout", "DropPath",
           "Linear", "Conv2d", "PatchEmbed", "Mlp"),
    notes="qkv and proj linears, gamma_1/gamma_2, residual adds, the class-token concat and the "
          "pool keep their stock (epsilon) backward",
)

FAMILY = image_family(
    "beit", "timm", "Beit", RULE_MAP,
    position="additive+relative",
    order=111,
    examples="timm Beit: beit_*, beitv2_*",
    notes="relative position bias per block and/or shared, a leaf read per key token; "
          "optional absolute pos_embed",
    rule_sets=("paper", "conservative", "uniform", "custom"),
)
