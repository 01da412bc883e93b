"""DeBERTa-v2 and DeBERTa-v3 (``DebertaV2*``): disentangled attention (docs/method.md, section
10, "Relative-position biases"; the rules in ``modules/adapters/disentangled.py``).

- ``DisentangledSelfAttention`` computes its own scores (eager only, no SDPA path):
  ``Q K^T`` uniform (the ``query_proj`` / ``key_proj`` output gradients halved), ``A V``
  uniform (the gradient into ``DebertaV2SelfOutput.dense`` halved), softmax plain;
- position enters as the content-to-position and position-to-content terms ``c2p + p2c`` added
  to the scores: products of content and relative-position projections, so the uniform rule
  splits them: half to the content, half to a positional leaf (the term as added, read per key
  position; one sink per layer); under AttnLRP the content keeps all of them;
- DeBERTa-v2's absolute table (``position_biased_input``) is a second positional source (the
  epsilon rule on ``E + P``, its output a leaf); DeBERTa-v3 has none;
- LayerNorm std constant, GELU identity (also the pooler's inline activation), plain linears;
  the relative embeddings' LayerNorm acts on a parameter (no leaf below it);
- heads: masked LM (one position per sample, ``position=``), sequence classifier (the
  ``ContextPooler`` reads the first token: pad on the right). Token types
  (``type_vocab_size`` > 0) are summed into the embeddings but not reported as a stream;
  ``conv_kernel_size`` > 0 (a ``ConvLayer``) is refused by the map.
"""
from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"DebertaV2ForMaskedLM": "masked_lm", "DebertaV2ForSequenceClassification": "classifier",
          "DebertaV2Model": "part"}

FAMILY = Family(
    name="deberta_v2", library="transformers",
    rules=RuleMap(
        name="deberta_v2", model_classes=tuple(_TASKS),
        modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                 "DisentangledSelfAttention": "disentangled_attention",
                 "DisentangledSelfAttention.query_proj": "halve_output",
                 "DisentangledSelfAttention.key_proj": "halve_output",
                 "DebertaV2SelfOutput.dense": "halve_input"},
        methods={"DisentangledSelfAttention.disentangled_attention_bias": "relative_scores"},
        plain=PLAIN + tuple("DebertaV2" + p for p in (
            "Model", "Embeddings", "Encoder", "Layer", "Attention", "SelfOutput",
            "Intermediate", "Output", "OnlyMLMHead", "LMPredictionHead"))
        + ("LegacyDebertaV2OnlyMLMHead", "LegacyDebertaV2LMPredictionHead",
           "LegacyDebertaV2PredictionHeadTransform", "ContextPooler", "CrossEntropyLoss"),
        namespaces=namespaces("deberta_v2")),
    tasks=_TASKS, stream="input_ids", position="relative",
    position_module="embeddings.position_embeddings", position_ids="stock", pooling="first",
    identity_functions=("gelu",), kernels_checked=("eager",), baselines=frozenset(),
    _order=100, examples="DebertaV2ForMaskedLM, DebertaV2ForSequenceClassification (v2, v3)")
