"""DistilBERT: BERT's map without token types (docs/method.md, sections 2, 3 and 5): post-
LayerNorm std constant, GELU identity (FFN and the masked-LM head), the classifier's inline ReLU
plain (its gradient is the identity rule), attention on the stock kernel, words + learned
absolute positions summed (epsilon on the sum: the position table's output is the positional
leaf, K = 1; the stock position ids). Heads: masked LM, sequence classifier (first token)."""
from ._transformers import bert_like_family

FAMILY = bert_like_family(
    "distilbert", "DistilBert", "distilbert", order=93, causal_head=None, parts=(),
    unprefixed=("Embeddings", "Transformer", "TransformerBlock", "FFN", "CrossEntropyLoss"),
    token_type_module=None, position_ids="stock")
