"""GPT-2: LayerNorm (std constant), GELU-new (identity), Conv1D linears (plain), attention on the
stock kernel, learned absolute positions ``wpe`` added to ``wte`` (the epsilon rule on the sum:
the ``wpe`` output is the positional leaf, K = 1)."""
from ..patching import RuleMap
from . import ACTIVATIONS, PLAIN, TextFamily

_HEADS = {"GPT2LMHeadModel": "causal_lm", "GPT2ForSequenceClassification": "classifier"}

FAMILY = TextFamily(
    rules=RuleMap(name="GPT2", model_classes=tuple(_HEADS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm", "GPT2Attention": "attention"},
                  plain=PLAIN + ("Conv1D", "GPT2Model", "GPT2Block", "GPT2MLP")),
    heads=_HEADS, position="absolute", position_module="wpe")
