"""Tiny random decoders of issue 20 (mixtures of experts, partial-rotary, parallel-block and
ALiBi decoders), for the registry-wide tests of tests/test_engine.py: ``BUILDERS`` maps each
family to builders returning ``(model, inputs, padding)``."""
import torch
import transformers as tf

from text_families_fixtures import random_ids

VOCAB, PAD = 61, 0
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=64, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
               num_labels=3, tie_word_embeddings=False)
_MOE = dict(_COMMON, intermediate_size=24, num_key_value_heads=2, num_experts_per_tok=2)

#: family -> (config class, causal-LM class, classifier class, config kwargs)
CONFIGS = {
    "mixtral": (tf.MixtralConfig, tf.MixtralForCausalLM, tf.MixtralForSequenceClassification,
                dict(_MOE, num_local_experts=4, sliding_window=None)),
    # layer 0 dense (mlp_only_layers), layer 1 sparse with the sigmoid-gated shared expert
    "qwen2_moe": (tf.Qwen2MoeConfig, tf.Qwen2MoeForCausalLM,
                  tf.Qwen2MoeForSequenceClassification,
                  dict(_MOE, num_experts=4, moe_intermediate_size=16,
                       shared_expert_intermediate_size=20, mlp_only_layers=[0])),
    "qwen3_moe": (tf.Qwen3MoeConfig, tf.Qwen3MoeForCausalLM,
                  tf.Qwen3MoeForSequenceClassification,
                  dict(_MOE, num_experts=4, moe_intermediate_size=16, head_dim=8,
                       norm_topk_prob=True)),
    "olmoe": (tf.OlmoeConfig, tf.OlmoeForCausalLM, None,
              dict(_MOE, num_experts=4)),
    # partial rotary (a quarter of each head's dims), parallel residual, biases
    "gpt_neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM, tf.GPTNeoXForSequenceClassification,
                 dict(_COMMON, intermediate_size=48, rotary_pct=0.25,
                      use_parallel_residual=True)),
    "bloom": (tf.BloomConfig, tf.BloomForCausalLM, tf.BloomForSequenceClassification,
              dict(_COMMON, n_head=4)),
    # interleaved partial rotary (4 of 8 dims per head), parallel attention and MLP
    "gptj": (tf.GPTJConfig, tf.GPTJForCausalLM, tf.GPTJForSequenceClassification,
             dict(_COMMON, rotary_dim=4, n_inner=48)),
    # Phi-2's layout: partial rotary, parallel block, LayerNorm, dense/fc layers
    "phi": (tf.PhiConfig, tf.PhiForCausalLM, tf.PhiForSequenceClassification,
            dict(_COMMON, intermediate_size=48, partial_rotary_factor=0.5)),
    "starcoder2": (tf.Starcoder2Config, tf.Starcoder2ForCausalLM,
                   tf.Starcoder2ForSequenceClassification,
                   dict(_COMMON, intermediate_size=48, num_key_value_heads=2, use_bias=True,
                        sliding_window=4)),
    "olmo": (tf.OlmoConfig, tf.OlmoForCausalLM, tf.OlmoForSequenceClassification,
             dict(_COMMON, intermediate_size=48, num_key_value_heads=2)),
    "mpt": (tf.MptConfig, tf.MptForCausalLM, tf.MptForSequenceClassification,
            dict(_COMMON, d_model=32, n_heads=4, n_layers=2, max_seq_len=64)),
    "falcon": (tf.FalconConfig, tf.FalconForCausalLM, tf.FalconForSequenceClassification,
               dict(_COMMON, ffn_hidden_size=48, bias=True)),
}
#: Falcon's variants: new decoder architecture (grouped kv, two norms), classic multi-query
#: with a parallel block, ALiBi without parallel block (Falcon-RW)
FALCON = {"new": dict(new_decoder_architecture=True, num_kv_heads=2),
          "multi_query": dict(new_decoder_architecture=False, multi_query=True,
                              parallel_attn=True),
          "alibi": dict(new_decoder_architecture=False, multi_query=False, parallel_attn=False,
                        alibi=True)}


def build(family, kind="causal", impl=None, seed=0, experts=None, **overrides):
    """A tiny random ``family`` model (``kind``: "causal" or "classifier") on the attention
    kernel ``impl`` (and the experts implementation ``experts``, for a mixture of experts)."""
    from family_models import perturbed   # here: family_models imports this module
    from palrp.modules.family import family_named

    config_class, causal, classifier, kwargs = CONFIGS[family]
    config = config_class(**{**kwargs, **overrides})
    torch.manual_seed(seed)
    model = (causal if kind == "causal" else classifier)(config)
    model = perturbed(model, seed)
    if impl is None:      # a kernel the family's stock model runs
        kernels = family_named(family).kernels_checked
        impl = "sdpa" if "sdpa" in kernels else kernels[0]
    model.set_attn_implementation(impl)
    if experts is not None:
        model.set_experts_implementation(experts)
    return model


def _builder(family, kind, **options):
    def make():
        model = build(family, kind, **options)
        return model, {"input_ids": random_ids(family, 2, 7)}, "left"
    return make


#: experts implementations running in float64 on CPUs (the padding test's dtype; grouped_mm,
#: the default, is float32/bf16 only there: tests/test_decoder_families.py compares it)
_EXPERTS = {"causal": "eager", "classifier": "batched_mm"}
_MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")

BUILDERS = {
    family: [_builder(family, kind, **({"experts": _EXPERTS[kind]}
                                       if family in _MOE_FAMILIES else {}))
             for kind, head in (("causal", spec[1]), ("classifier", spec[2]))
             if head is not None]
    for family, spec in CONFIGS.items() if family != "falcon"
}
BUILDERS["falcon"] = [_builder("falcon", "causal", **FALCON["new"]),
                      _builder("falcon", "classifier", **FALCON["multi_query"]),
                      _builder("falcon", "causal", **FALCON["alibi"]),
                      _builder("falcon", "causal", impl="eager", **FALCON["alibi"])]
