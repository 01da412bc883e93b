"""The rules of issue 20's decoders, checked where tests/test_engine.py does not look:

- mixture of experts (docs/method.md, "Mixture of experts"): a sparse block conserves relevance
  (bias-free experts, routing weights constant, the gated products uniform): the relevance at
  its input sums, per token, to that at its output, on every experts implementation; and the
  explanation is the same on the eager loop, ``batched_mm`` and ``grouped_mm``.
"""
import pytest
import torch

from builders_decoders import FALCON, build
from palrp.modules.engine import explain, lrp

MOE = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
EXPERTS = ("eager", "batched_mm", "grouped_mm")


@pytest.mark.parametrize("family", MOE)
def test_a_sparse_block_conserves_relevance_on_every_experts_implementation(family):
    model = build(family, "causal", impl="eager")
    block = model.model.layers[1].mlp
    x = torch.randn(2, 5, model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    for experts in EXPERTS:
        model.set_experts_implementation(experts)
        with lrp(model):
            leaf = x.clone().requires_grad_(True)
            out = block(leaf)
            seed = torch.randn_like(out, generator=torch.Generator().manual_seed(4))
            (grad,) = torch.autograd.grad(out, leaf, seed)
        r_in = (leaf * grad).sum(-1)
        r_out = (out.detach() * seed).sum(-1)
        torch.testing.assert_close(r_in, r_out, rtol=1e-4, atol=1e-5), experts
        # without the halving the block would give twice, with the router's path other numbers
        assert (r_out.abs() > 1e-3).all()


@pytest.mark.parametrize("family", MOE)
def test_the_explanation_is_the_same_on_every_experts_implementation(family):
    model = build(family, "causal", impl="sdpa")
    ids = {"input_ids": torch.randint(2, 61, (2, 7), generator=torch.Generator().manual_seed(1))}
    results = {}
    for experts in EXPERTS:
        model.set_experts_implementation(experts)
        results[experts] = explain(model, ids)
        with torch.no_grad():       # each implementation explains its own stock output
            stock = model(**ids).logits[:, -1]
        torch.testing.assert_close(results[experts].logits, stock, rtol=1e-6, atol=1e-6)
    reference = results["eager"]
    scale = reference.relevance["input_ids"].abs().max()
    for experts in EXPERTS[1:]:
        got = results[experts]
        assert torch.equal(got.target, reference.target)
        torch.testing.assert_close(got.relevance["input_ids"] / scale,
                                   reference.relevance["input_ids"] / scale, rtol=0, atol=1e-5)
        torch.testing.assert_close(got.positional["input_ids"] / scale,
                                   reference.positional["input_ids"] / scale, rtol=0, atol=1e-5)


def _bias_free(model):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
    return model.double()


#: rotary families of issue 20 (one layer each): their own q/k halving (fused per-head
#: projections, partial and interleaved rotary) is what the conservation below checks
ROTARY = [("gpt_neox", {}), ("gptj", {}), ("phi", {}), ("olmo", {}),
          ("starcoder2", {"sliding_window": None}),    # the last query sees position 0
          ("falcon", FALCON["new"]), ("falcon", FALCON["multi_query"]),
          ("falcon", dict(new_decoder_architecture=False, multi_query=False))]
#: OLMo's stock LayerNorm computes in float32 in a float64 model: its output is float32-exact,
#: so relevance is conserved through it to float32 precision only
TOLERANCE = {"olmo": 1e-7}


@pytest.mark.parametrize("family, overrides", ROTARY)
def test_rotary_relevance_is_carved_out_of_the_tokens(family, overrides):
    """One bias-free layer in float64: sum R(tokens) + sum R(cos, sin) under PA-LRP equals
    sum R(tokens) under AttnLRP (cos/sin constant), i.e. the positional share is what q and k
    give up in the rotary products; a wrong halving (all dims of a fused projection, or none)
    breaks it."""
    model = _bias_free(build(family, "causal", impl="eager", num_hidden_layers=1,
                             **overrides))
    ids = {"input_ids": torch.randint(2, 61, (2, 7), generator=torch.Generator().manual_seed(1))}
    pa = explain(model, ids)
    base = explain(model, ids, pa.target, "attn_lrp")
    total = pa.relevance["input_ids"].sum(-1) + pa.streams["input_ids"].sinks.sum((1, 2))
    tol = TOLERANCE.get(family, 1e-9)
    torch.testing.assert_close(total, base.relevance["input_ids"].sum(-1), rtol=tol, atol=tol)
    sinks = pa.streams["input_ids"].sinks
    assert (sinks.abs().sum((1, 2)) > 0).all()
    # sin(0) = 0: the sin leaf has no relevance at position 0, the cos leaf has (labels right
    # also where the module receives (sin, cos), as GPT-J's does)
    assert pa.streams["input_ids"].labels == ("cos_0", "sin_0")
    assert torch.equal(sinks[:, 1, 0], torch.zeros(2, dtype=sinks.dtype))
    assert (sinks[:, 0, 0].abs() > 0).all()


@pytest.mark.parametrize("family, overrides, match", [
    ("phi", dict(qk_layernorm=True), "PhiAttention|LayerNorm"),
    ("olmo", dict(clip_qkv=8.0), "clip_qkv"),
    ("mpt", dict(attn_config=dict(clip_qkv=8.0)), "clip_qkv"),
])
def test_configurations_without_a_rule_are_refused_by_name(family, overrides, match):
    from palrp.modules.family import UnsupportedModelError

    model = build(family, "causal", **overrides)
    ids = {"input_ids": torch.randint(2, 61, (1, 5), generator=torch.Generator().manual_seed(1))}
    with pytest.raises(UnsupportedModelError, match=match):
        explain(model, ids)
    assert type(model).forward is type(model).forward and "forward" not in vars(model)


#: (family, overrides, the key whose bias is 0: BLOOM and Falcon count from each sample's first
#: real token, MPT from the last key)
ALIBI = [("bloom", {}, "first"), ("falcon", dict(FALCON["alibi"], impl="eager"), "first"),
         ("falcon", dict(FALCON["alibi"], impl="sdpa"), "first"), ("mpt", {}, "last")]


@pytest.mark.parametrize("family, overrides, zero_key", ALIBI)
def test_alibi_relevance_is_the_bias_share_of_the_scores(family, overrides, zero_key):
    """The ALiBi bias is an addend of the attention scores: making it a leaf (PA-LRP) splits the
    scores' relevance by the epsilon rule and changes no token relevance (AttnLRP, bias
    constant, gives the same tokens); where the bias is 0 so is its relevance (and at padding);
    every layer reports one sink per key position."""
    model = build(family, "causal", **overrides).double()
    ids = torch.randint(2, 61, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    pa = explain(model, inputs)
    base = explain(model, inputs, pa.target, "attn_lrp")
    torch.testing.assert_close(pa.relevance["input_ids"], base.relevance["input_ids"],
                               rtol=1e-12, atol=1e-12)
    stream = pa.streams["input_ids"]
    layers = model.config.num_hidden_layers
    assert stream.labels == tuple(f"alibi_{i}" for i in range(layers))
    sinks = stream.sinks
    assert sinks.shape == (2, layers, 7)
    zero = torch.zeros(2, 7, dtype=torch.bool)
    zero[1, :2] = True                                       # padding
    if zero_key == "first":
        zero[0, 0] = zero[1, 2] = True
    else:
        zero[:, -1] = True
    assert torch.equal(sinks[zero[:, None, :].expand_as(sinks)],
                       torch.zeros(int(zero.sum()) * layers, dtype=sinks.dtype))
    assert (sinks[(~zero)[:, None, :].expand_as(sinks)].abs() > 0).all()


@pytest.mark.parametrize("variant", ["new", "multi_query"])
def test_falcon_rotary_eager_and_sdpa_give_the_same_explanation(variant):
    """Falcon's attention is inline (its own eager and SDPA code): both give one explanation
    for a rotary config (an ALiBi config is another model on each kernel, see the module)."""
    model = build("falcon", "causal", **FALCON[variant]).double()
    ids = {"input_ids": torch.randint(2, 61, (2, 7), generator=torch.Generator().manual_seed(1))}
    results = {}
    for kernel in ("eager", "sdpa"):
        model.set_attn_implementation(kernel)
        results[kernel] = explain(model, ids)
    for what in ("relevance", "positional"):
        eager, sdpa = (getattr(results[k], what)["input_ids"] for k in ("eager", "sdpa"))
        scale = eager.abs().max()
        torch.testing.assert_close(sdpa / scale, eager / scale, rtol=0, atol=1e-9)


def _lora(model, targets, **options):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM",
                             init_lora_weights=False, **options)
    return peft.get_peft_model(model, config).eval()


@pytest.mark.parametrize("family, targets", [
    ("llama", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    ("gpt_neox", ["query_key_value", "dense", "dense_h_to_4h"]),
])
def test_a_lora_model_is_explained_as_its_merged_model_and_left_as_it_was(family, targets):
    """An unmerged LoRA adapter is the linear map with the merged weight: relevance and
    positional relevance equal those of merge_and_unload() (on a copy), the rule of the
    adapted place included (rotary halving of a fused q/k/v LoRA projection, the gated
    product's halving at a LoRA down_proj); the PEFT model is unchanged after."""
    import copy

    from text_families_fixtures import tiny

    base = (tiny(family, "causal", dtype=torch.float64) if family == "llama"
            else build(family, "causal").double())
    model = _lora(base, targets)
    ids = {"input_ids": torch.randint(2, 61, (2, 7), generator=torch.Generator().manual_seed(1))}
    with torch.no_grad():
        before = model(**ids).logits
    state = {n: p.clone() for n, p in model.named_parameters()}
    modules = [(n, sorted(vars(m))) for n, m in model.named_modules()]
    got = explain(model, ids)
    merged = explain(copy.deepcopy(model).merge_and_unload(), ids, got.target)
    for what in ("relevance", "positional"):
        a, b = getattr(got, what)["input_ids"], getattr(merged, what)["input_ids"]
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, before)
    assert all(torch.equal(p, state[n]) for n, p in model.named_parameters())
    assert [(n, sorted(vars(m))) for n, m in model.named_modules()] == modules


def test_peft_models_other_than_lora_are_refused_by_name():
    peft = pytest.importorskip("peft")
    from palrp.modules.family import UnsupportedModelError
    from text_families_fixtures import tiny

    ids = {"input_ids": torch.randint(2, 61, (1, 5), generator=torch.Generator().manual_seed(1))}
    ia3 = peft.get_peft_model(tiny("llama"), peft.IA3Config(
        target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"],
        task_type="CAUSAL_LM"))
    with pytest.raises(UnsupportedModelError, match="IA3 adapters"):
        explain(ia3, ids)
    dora = _lora(tiny("llama"), ["q_proj"], use_dora=True)
    with pytest.raises(UnsupportedModelError, match="DoraLinearLayer"):
        explain(dora, ids)


@pytest.mark.parametrize("family, overrides", [
    ("mixtral", {"experts": "batched_mm"}), ("bloom", {}), ("mpt", {}), ("gptj", {}),
    ("falcon", dict(FALCON["alibi"], impl="eager")), ("falcon", FALCON["new"]),
])
def test_gradient_checkpointing_changes_no_number(family, overrides):
    """The layers recomputed in the backward reuse the leaves of their first pass (ALiBi and
    rotary leaves, routing weights recomputed identically)."""
    model = build(family, "causal", **overrides).double()
    ids = {"input_ids": torch.randint(2, 61, (2, 7), generator=torch.Generator().manual_seed(1))}
    plain = explain(model, ids)
    checkpointed = explain(model, ids, gradient_checkpointing=True)
    for what in ("relevance", "positional"):
        torch.testing.assert_close(getattr(checkpointed, what)["input_ids"],
                                   getattr(plain, what)["input_ids"], rtol=1e-12, atol=1e-14)
