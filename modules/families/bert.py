"""BERT: post-LayerNorm encoder (std constant), GELU (identity), attention on the stock kernel
(bidirectional; causal for ``BertLMHeadModel``), word + token-type + learned absolute position
embeddings (the epsilon rule on the three-way sum: each addend is a leaf; positions are the
positional sink, K = 1, token types are reported on their own). The pooler's ``tanh`` gets the
identity rule. The classifier reads the first token ([CLS]), so batches are padded on the right."""
from ._transformers import bert_like_family

FAMILY = bert_like_family(
    "bert", "Bert", "bert", order=28, causal_head="LMHeadModel",
    parts=("Embeddings", "Encoder", "Layer", "Attention", "SelfOutput", "Intermediate", "Output",
           "Pooler", "OnlyMLMHead", "LMPredictionHead", "PredictionHeadTransform"))
