"""ALBERT: BERT's map on ALBERT's classes (docs/method.md, sections 2, 3 and 5): one
``AlbertAttention`` per layer group (its q/k/v, output dense and post-LayerNorm in one class) on
the stock kernel, LayerNorm std constant, GELU identity, the pooler's ``tanh`` identity. Layers
are shared: a layer group called several times gets the same rules at every call, and its
gradients (so its relevance) add up over the calls, as for any reused module. Embeddings are
factorised: words + token types + learned absolute positions summed at ``embedding_size``
(epsilon on the sum: the position table's output is the positional leaf, K = 1), then the
plain linear ``embedding_hidden_mapping_in``. Heads: masked LM, sequence classifier (first
token)."""
from ._transformers import bert_like_family

FAMILY = bert_like_family(
    "albert", "Albert", "albert", order=92, causal_head=None, attention="Attention",
    parts=("Embeddings", "Transformer", "LayerGroup", "Layer", "MLMHead"))
