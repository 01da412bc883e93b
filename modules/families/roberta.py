"""RoBERTa: BERT's map with the stock padding-offset position ids (``padding_idx + cumsum`` of
the non-pad tokens, made by the stock code from the input ids); the classification head's and
the LM head's inline ``tanh`` / ``gelu`` get the identity rule."""
from ._transformers import bert_like_family

FAMILY = bert_like_family(
    "roberta", "Roberta", "roberta", order=29, causal_head="ForCausalLM",
    parts=("Embeddings", "Encoder", "Layer", "Attention", "SelfOutput", "Intermediate", "Output",
           "Pooler", "LMHead", "ClassificationHead"),
    position_ids="stock", identity_functions=("tanh", "gelu"))
