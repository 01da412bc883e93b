"""ModernBERT: a pre-LayerNorm rotary encoder (docs/method.md, sections 2, 3 and 5).

- LayerNorm (bias-free by default; the first layer's ``attn_norm`` is an Identity): std
  constant; GELU identity; the gated MLP ``act(input) * gate`` from one fused ``Wi``: uniform,
  the gradient entering ``Wo`` (the product's only consumer) halved;
- attention on the stock kernel wrapper; the local (sliding-window) layers' window is the stock
  mask's;
- position enters only through RoPE, with a different theta for the global layers
  (``full_attention``) and the local ones (``sliding_attention``): each layer's cos/sin as its
  attention module receives them become that layer's pair of leaves (uniform on the rotary
  products, gradients halved), so the global and the local tables are sources of their own;
  the fused ``Wqkv`` has its q and k parts halved, v untouched. ModernBERT has no NoPE layer
  (every layer type carries rotary parameters);
- heads: masked LM (one position per sample, ``palrp.explain(..., position=)``), sequence
  classifier (``classifier_pooling`` "cls" reads the first token, "mean" every real token;
  batches padded on the right).
"""
from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"ModernBertForMaskedLM": "masked_lm",
          "ModernBertForSequenceClassification": "classifier", "ModernBertModel": "part"}

FAMILY = Family(
    name="modernbert", library="transformers",
    rules=RuleMap(
        name="modernbert", model_classes=tuple(_TASKS),
        modules={**ACTIVATIONS, "LayerNorm": "layer_norm", "ModernBertAttention": "attention",
                 "ModernBertAttention.Wqkv": "rotary_qkv", "ModernBertMLP.Wo": "halve_input"},
        plain=PLAIN + ("ModernBertModel", "ModernBertEmbeddings", "ModernBertEncoderLayer",
                       "ModernBertMLP", "ModernBertRotaryEmbedding",
                       "ModernBertPredictionHead"),
        namespaces=namespaces("modernbert")),
    tasks=_TASKS, stream="input_ids", position="rotary", position_ids="stock", pooling="first",
    baselines=frozenset(), _order=99,
    examples="ModernBertForMaskedLM, ModernBertForSequenceClassification")
