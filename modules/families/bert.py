"""BERT: post-LayerNorm encoder (std constant), GELU (identity), attention on the stock kernel
(bidirectional; causal for ``BertLMHeadModel``), word + token-type + learned absolute position
embeddings (the epsilon rule on the three-way sum: each addend is a leaf; positions are the
positional sink, K = 1, token types are reported on their own). The pooler's ``tanh`` gets the
identity rule. The classifier reads the first token ([CLS]), so batches are padded on the right."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_PLAIN = tuple("Bert" + part for part in (
    "Model", "Embeddings", "Encoder", "Layer", "Attention", "SelfOutput",
    "Intermediate", "Output", "Pooler", "OnlyMLMHead", "LMPredictionHead",
    "PredictionHeadTransform"))
_TASKS = {"BertLMHeadModel": "causal_lm", "BertForSequenceClassification": "classifier",
          "BertModel": "part"}

FAMILY = Family(
    name="bert", library="transformers",
    rules=RuleMap(name="bert", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                           "BertSelfAttention": "attention", "Tanh": "identity"},
                  plain=PLAIN + _PLAIN, namespaces=namespaces("bert")),
    tasks=_TASKS, stream="input_ids", position="additive",
    position_module="embeddings.position_embeddings",
    token_type_module="embeddings.token_type_embeddings", pooling="first",
    baselines=frozenset(), _order=28, examples="BertLMHeadModel, BertForSequenceClassification")
