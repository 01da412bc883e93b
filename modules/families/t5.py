"""T5 (v1.0, and the gated-GELU T5 v1.1 / Flan-T5 variant): an encoder-decoder
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
from ._transformers import t5_like_family

FAMILY = t5_like_family("t5", "T5", "t5", order=95,
                        examples="T5ForConditionalGeneration (T5, T5 v1.1, Flan-T5)")
