"""RoBERTa: BERT's map with the stock padding-offset position ids (``padding_idx + cumsum`` of
the non-pad tokens, made by the stock code from the input ids); the classification head's and
the LM head's inline ``tanh`` / ``gelu`` get the identity rule."""
from ..patching import RuleMap
from . import ACTIVATIONS, PLAIN, TextFamily

_PLAIN = tuple("Roberta" + part for part in (
    "Model", "Embeddings", "Encoder", "Layer", "Attention", "SelfOutput",
    "Intermediate", "Output", "Pooler", "LMHead", "ClassificationHead"))
_HEADS = {"RobertaForCausalLM": "causal_lm", "RobertaForSequenceClassification": "classifier"}

FAMILY = TextFamily(
    rules=RuleMap(name="RoBERTa", model_classes=tuple(_HEADS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                           "RobertaSelfAttention": "attention", "Tanh": "identity"},
                  plain=PLAIN + _PLAIN),
    heads=_HEADS, position="absolute", position_module="embeddings.position_embeddings",
    token_type_module="embeddings.token_type_embeddings", position_ids="stock",
    pooling="first", identity_functions=("tanh", "gelu"))
