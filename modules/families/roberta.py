"""RoBERTa: BERT's map with the stock padding-offset position ids (``padding_idx + cumsum`` of
the non-pad tokens, made by the stock code from the input ids); the classification head's and
the LM head's inline ``tanh`` / ``gelu`` get the identity rule."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_PLAIN = tuple("Roberta" + part for part in (
    "Model", "Embeddings", "Encoder", "Layer", "Attention", "SelfOutput",
    "Intermediate", "Output", "Pooler", "LMHead", "ClassificationHead"))
_TASKS = {"RobertaForCausalLM": "causal_lm", "RobertaForSequenceClassification": "classifier",
          "RobertaModel": "part"}

FAMILY = Family(
    name="roberta", library="transformers",
    rules=RuleMap(name="roberta", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                           "RobertaSelfAttention": "attention", "Tanh": "identity"},
                  plain=PLAIN + _PLAIN, namespaces=namespaces("roberta")),
    tasks=_TASKS, stream="input_ids", position="additive",
    position_module="embeddings.position_embeddings",
    token_type_module="embeddings.token_type_embeddings", position_ids="stock",
    pooling="first", identity_functions=("tanh", "gelu"), baselines=frozenset(), _order=29,
    examples="RobertaForCausalLM, RobertaForSequenceClassification")
