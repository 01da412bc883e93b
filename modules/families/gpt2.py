"""GPT-2: LayerNorm (std constant), GELU-new (identity), Conv1D linears (plain), attention on the
stock kernel, learned absolute positions ``wpe`` added to ``wte`` (the epsilon rule on the sum:
the ``wpe`` output is the positional leaf, K = 1)."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"GPT2LMHeadModel": "causal_lm", "GPT2ForSequenceClassification": "classifier",
          "GPT2Model": "part"}

FAMILY = Family(
    name="gpt2", library="transformers",
    rules=RuleMap(name="gpt2", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm", "GPT2Attention": "attention"},
                  plain=PLAIN + ("Conv1D", "GPT2Model", "GPT2Block", "GPT2MLP"),
                  namespaces=namespaces("gpt2")),
    tasks=_TASKS, stream="input_ids", position="additive", position_module="wpe",
    baselines=frozenset(), _order=27, examples="GPT2LMHeadModel, GPT2ForSequenceClassification")
