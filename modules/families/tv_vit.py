"""Family map: torchvision ``VisionTransformer`` (``vit_b_16``, ``vit_l_32``, ...; conv patch
embedding, class token, learned ``pos_embedding``, ``nn.MultiheadAttention`` blocks).

Rules (docs/method.md, sections 4 and 10; modules/adapters/torchvision.py): conv_proj Gamma 100,
the MLP linears and the head Gamma 0.05, every LayerNorm std constant, GELU (and the optional
pre-logits Tanh) identity; ``nn.MultiheadAttention`` under the uniform rule (``Q K^T`` and
``A V`` uniform, softmax plain: the stock module with its query, key and output gradients
halved, modules/adapters/multihead_attention.py; the constant rule is refused); the in/out
projections, residual adds, the class-token concat and readout plain (epsilon). Position: the
``encoder.pos_embedding`` (1, 1 + N, D) as ``Encoder.forward`` adds it, the positional leaf
(M9; K = 1, over the class token and the patches). Table: docs/vision_families.md.
"""
from ..patching import RuleMap
from ._timm import image_family

_NS = ("torchvision.models.vision_transformer", "torch.nn.modules.linear")

RULE_MAP = RuleMap(
    name="tv_vit",
    model_classes=("VisionTransformer",),
    namespaces=_NS,
    modules={
        "VisionTransformer.conv_proj": "gamma_conv",
        "MLPBlock.0": "gamma_linear",
        "MLPBlock.3": "gamma_linear",
        "Sequential.head": "gamma_linear",          # heads.head
        "Sequential.pre_logits": "gamma_linear",    # heads.pre_logits (representation_size)
        "LayerNorm": "layer_norm",
        "GELU": "identity",
        "Tanh": "identity",
        "MultiheadAttention": "multihead_attention",
    },
    methods={"Encoder.forward": "vit_encoder"},
    plain=("Encoder", "EncoderBlock", "MLPBlock", "Sequential", "Dropout", "Linear",
           "NonDynamicallyQuantizableLinear", "Conv2d"),
    notes="in_proj, out_proj, residual adds, the class-token concat and readout keep their "
          "stock (epsilon) backward",
)

FAMILY = image_family(
    "tv_vit", "torchvision", "VisionTransformer", RULE_MAP,
    position="additive",
    order=114,
    examples="torchvision VisionTransformer: vit_b_16, vit_l_16, vit_h_14, ...",
    notes="encoder.pos_embedding, a leaf where Encoder.forward adds it",
)
