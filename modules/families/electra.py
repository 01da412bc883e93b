"""ELECTRA: BERT's map (docs/method.md, sections 2, 3 and 5): post-LayerNorm std constant, GELU
identity (also the generator head's and the classification head's), attention on the stock
kernel, words + token types + learned absolute positions summed (epsilon rule on the sum: the
position table's output is the positional leaf, K = 1); a factorised embedding
(``embedding_size`` < ``hidden_size``) goes through ``embeddings_project``, a plain linear
(epsilon). Heads: masked LM (the generator), causal LM, sequence classifier (first token)."""
from ._transformers import bert_like_family

FAMILY = bert_like_family(
    "electra", "Electra", "electra", order=91, causal_head="ForCausalLM",
    parts=("Embeddings", "Encoder", "Layer", "Attention", "SelfOutput", "Intermediate", "Output",
           "GeneratorPredictions", "ClassificationHead"))
