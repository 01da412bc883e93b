"""XLM-RoBERTa: RoBERTa's map on its own classes (docs/method.md, sections 2, 3 and 5): post-
LayerNorm std constant, GELU and the heads' inline ``tanh`` / ``gelu`` identity, attention on
the stock kernel, words + token types + learned absolute positions summed (the epsilon rule on
the sum: the position table's output is the positional leaf, K = 1), with the stock padding-
offset position ids. Heads: causal LM, masked LM (one position per sample,
``palrp.explain(..., position=)``), sequence classifier (first token: pad on the right)."""
from ._transformers import bert_like_family

FAMILY = bert_like_family(
    "xlm_roberta", "XLMRoberta", "xlm_roberta", order=90, causal_head="ForCausalLM",
    parts=("Embeddings", "Encoder", "Layer", "Attention", "SelfOutput", "Intermediate", "Output",
           "Pooler", "LMHead", "ClassificationHead"),
    position_ids="stock", identity_functions=("tanh", "gelu"))
