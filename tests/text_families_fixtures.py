"""Tiny random models of every text family (no downloads), for tests/test_text_families.py."""
import torch
import transformers as tf

VOCAB, PAD = 61, 0

_COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=64, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
               num_labels=3)
_ROPE = dict(_COMMON, intermediate_size=48, num_key_value_heads=2, tie_word_embeddings=False)

# family -> (config class, causal class, classifier class, config kwargs)
FAMILY_CONFIGS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", "LlamaForSequenceClassification",
              dict(_ROPE, rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                           "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 16})),
    "mistral": ("MistralConfig", "MistralForCausalLM", "MistralForSequenceClassification",
                dict(_ROPE, sliding_window=4)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification", dict(_ROPE)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification",
              dict(_ROPE, head_dim=8)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", "Gemma2ForSequenceClassification",
               dict(_ROPE, head_dim=8, sliding_window=4, attn_logit_softcapping=5.0,
                    final_logit_softcapping=3.0, query_pre_attn_scalar=8)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", "Gemma3TextForSequenceClassification",
               dict(_ROPE, head_dim=8, sliding_window=4, query_pre_attn_scalar=8,
                    layer_types=["sliding_attention", "full_attention"])),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", "Phi3ForSequenceClassification",
             dict(_ROPE, partial_rotary_factor=0.5)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", "GPT2ForSequenceClassification",
             dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                  pad_token_id=PAD, bos_token_id=1, eos_token_id=2, num_labels=3)),
    "bert": ("BertConfig", "BertLMHeadModel", "BertForSequenceClassification",
             dict(_COMMON, intermediate_size=48, type_vocab_size=2)),
    "roberta": ("RobertaConfig", "RobertaForCausalLM", "RobertaForSequenceClassification",
                dict(_COMMON, intermediate_size=48, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                     max_position_embeddings=70)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", "GemmaForSequenceClassification",
              dict(_ROPE, head_dim=8)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", "Olmo2ForSequenceClassification", dict(_ROPE)),
    "olmo3": ("Olmo3Config", "Olmo3ForCausalLM", "Olmo3ForSequenceClassification",
              dict(_ROPE, sliding_window=4)),
    "helium": ("HeliumConfig", "HeliumForCausalLM", "HeliumForSequenceClassification",
               dict(_ROPE, head_dim=8)),
    "seed_oss": ("SeedOssConfig", "SeedOssForCausalLM", "SeedOssForSequenceClassification",
                 dict(_ROPE, head_dim=8, attention_bias=True)),
    "glm": ("GlmConfig", "GlmForCausalLM", "GlmForSequenceClassification",
            dict(_ROPE, head_dim=8, partial_rotary_factor=0.5)),
    # Granite has no sequence-classification head in transformers
    "granite": ("GraniteConfig", "GraniteForCausalLM", None,
                dict(_ROPE, embedding_multiplier=2.0, residual_multiplier=0.5,
                     attention_multiplier=0.2, logits_scaling=3.0)),
    # layer 1 of 2 is a NoPE layer (use_rope false)
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", "SmolLM3ForSequenceClassification",
                dict(_ROPE, no_rope_layer_interval=2)),
}
FAMILIES = tuple(FAMILY_CONFIGS)
# the heads that are decoders need is_decoder for BERT-like encoders
_DECODER = {"bert", "roberta"}


def pad_id(family):
    return FAMILY_CONFIGS[family][3]["pad_token_id"]


def tiny(family, kind="causal", dtype=torch.float32, seed=0, std=0.25, impl="sdpa", **over):
    """A tiny random model of ``family`` (weights larger than the default init so attention is
    far from uniform; norm weights random around their identity value)."""
    cfg_name, causal, classifier, kwargs = FAMILY_CONFIGS[family]
    if kind != "causal" and classifier is None:
        import pytest
        pytest.skip(f"transformers has no sequence-classification head for {family}")
    kwargs = dict(kwargs, **over)
    if kind == "causal" and family in _DECODER:
        kwargs["is_decoder"] = True
    config = getattr(tf, cfg_name)(**kwargs)
    torch.manual_seed(seed)
    model = getattr(tf, causal if kind == "causal" else classifier)(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and p.dim() == 1:
                if family.startswith("gemma"):   # (1 + w) RMSNorm: w around 0
                    p.copy_(0.3 * torch.randn_like(p))
                elif name.endswith("bias"):
                    p.normal_(0.0, 0.1)
                else:
                    p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    model = model.to(dtype).eval()
    model.config._attn_implementation = impl
    return model


def random_ids(family, batch, seq, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (batch, seq), generator=g)
