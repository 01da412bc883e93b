"""T5 (v1.0, and the gated-GELU T5 v1.1 / Flan-T5 / mT5-style variant): an encoder-decoder
explained as two parts of one family in one backward (docs/method.md, "Encoders, masked LMs
and encoder-decoders"): the next decoder token over the encoder's ``input_ids`` and the
decoder prefix ``decoder_input_ids``.

- ``T5LayerNorm`` (RMS, no bias): RMS constant (identity rule); ReLU / GELU: identity;
- the gated FFN ``act(wi_0 x) * wi_1 x`` (``feed_forward_proj="gated-gelu"``): uniform, the
  gradient entering ``wo`` (the product's only consumer) halved;
- attention (self, causal self, cross) on the stock kernel wrapper: uniform on ``QK^T`` and
  ``AV``; T5's unscaled scores and its bias folded into the stock kernel's mask;
- position enters only as the relative-position bias of each stack's first self-attention
  layer (bucketed ``relative_attention_bias``, shared by every layer of the stack): that bias is
  the positional leaf of the stack's stream, read per key position (the epsilon rule on
  ``QK^T + bias``); the cross-attention's bias is zero and carries nothing;
- the tied LM head's ``d_model ** -0.5`` scale is a constant.
"""
from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"T5ForConditionalGeneration": "seq2seq_lm", "T5Model": "part",
          "T5EncoderModel": "part"}

FAMILY = Family(
    name="t5", library="transformers",
    rules=RuleMap(
        name="t5", model_classes=tuple(_TASKS),
        modules={**ACTIVATIONS, "T5LayerNorm": "rms_norm", "T5Attention": "attention",
                 "T5DenseGatedActDense.wo": "halve_input"},
        plain=PLAIN + ("T5Stack", "T5Block", "T5LayerSelfAttention", "T5LayerCrossAttention",
                       "T5LayerFF", "T5DenseActDense", "T5DenseGatedActDense"),
        namespaces=namespaces("t5")),
    tasks=_TASKS, stream="input_ids", decoder_stream="decoder_input_ids", position="relative",
    position_ids="stock", baselines=frozenset(), _order=95,
    examples="T5ForConditionalGeneration (T5, T5 v1.1, Flan-T5)")
