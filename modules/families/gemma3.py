"""Gemma 3 (text): Gemma 2's map plus q_norm / k_norm, local and global RoPE per layer type
(each layer's cos/sin are the ones it receives); embeddings scaled inside the embedding module
(the token leaf is its output). Soft-capping, when the config sets it, gets the identity rule."""
from ._transformers import rotary_family

FAMILY = rotary_family("gemma3", "Gemma3", "gemma3", order=25, identity_functions=("tanh",),
                       plain_extra=("TextModel", "TextScaledWordEmbedding"),
                       tasks={"Gemma3ForCausalLM": "causal_lm",
                              "Gemma3TextForSequenceClassification": "classifier",
                              "Gemma3TextModel": "part"})
