"""Sanity of the slow float64 text references (tests/text_reference.py), so that they can serve
as oracles: their forward equals the stock model's, the explicit relevance formulas equal the
same rules computed as gradient x input, and the facts that hold by construction hold."""
import pytest
import torch

from text_reference import (FAMILIES, ROTARY_FAMILIES, float64_stock, random_ids,
                            reference_relevance, relative_error, stock_logits, tiny_model)
from test_llama import reference_relevance as llama_reference
from test_llama import tiny_model as llama_tiny_model

HEADS = ("causal", "classifier")


def _token_types(family, S):
    return torch.tensor([0] * (S // 2) + [1] * (S - S // 2)) if family == "bert" else None


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_equals_stock(family, head):
    model = tiny_model(family, head)
    ids = random_ids(9, seed=3)
    tt = _token_types(family, 9)
    ref = reference_relevance(model, ids, token_type_ids=tt)
    with float64_stock(model):
        exact = stock_logits(model, ids, token_type_ids=tt)
    assert relative_error(ref.logits, exact) < 1e-12
    # as shipped, the stock RMSNorms and eager softmax compute in float32
    assert relative_error(ref.logits, stock_logits(model, ids, token_type_ids=tt)) < 1e-5
    if head == "causal":  # another explained position
        mid = reference_relevance(model, ids, position=4, token_type_ids=tt)
        with float64_stock(model):
            assert relative_error(mid.logits, stock_logits(model, ids, 4, tt)) < 1e-12


@pytest.mark.parametrize("pe", [True, False])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("family", FAMILIES)
def test_explicit_rules_equal_gradient_x_input(family, head, pe):
    model = tiny_model(family, head, seed=1)
    ids = random_ids(10, seed=4)
    tt = _token_types(family, 10)
    ref = reference_relevance(model, ids, target=2, pe=pe, token_type_ids=tt)
    grad = reference_relevance(model, ids, target=2, pe=pe, token_type_ids=tt, autograd=True)
    assert relative_error(grad.tokens, ref.tokens) < 1e-10
    assert ref.tokens.shape == (10,) and ref.tokens.abs().max() > 0
    if pe:
        K = 2 * model.config.num_hidden_layers if family in ROTARY_FAMILIES else 1
        assert ref.positional.shape == (K, 10) and len(ref.labels) == K
        assert relative_error(grad.positional, ref.positional) < 1e-10
        if family == "bert":
            assert relative_error(grad.token_type, ref.token_type) < 1e-10
    else:
        assert ref.positional is None and grad.positional is None


@pytest.mark.parametrize("family", FAMILIES)
def test_facts_by_construction(family):
    model = tiny_model(family, "causal", seed=2)
    ids = random_ids(8, seed=5)
    ref = reference_relevance(model, ids, target=7)
    assert ref.checks["seed"] == pytest.approx(float(ref.logits[7]), rel=1e-15)
    if family in ROTARY_FAMILIES:  # R(cos_l) + R(sin_l) is half of R(q'_l) + R(k'_l)
        for _, pe_total, half_qk in ref.checks["rope"]:
            assert pe_total == pytest.approx(half_qk, rel=1e-10, abs=1e-14)
    else:  # epsilon at the embedding sum: exact per element; tokens unchanged by PE
        assert ref.checks["embedding_sum"] < 1e-12
        plain = reference_relevance(model, ids, target=7, pe=False)
        assert torch.equal(plain.tokens, ref.tokens)
    one = reference_relevance(model, ids, target=7, seed="one")  # the rules are linear in R
    assert relative_error(one.tokens * ref.logits[7], ref.tokens) < 1e-12


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen3", "gemma2"])
def test_rotary_conservation_one_layer(family):
    """One bias-free layer: below the RoPE only linears and norms, so the PE share is carved
    out of the tokens' exactly (docs/method.md, conservation)."""
    model = tiny_model(family, "classifier", num_hidden_layers=1, seed=3)
    ids = random_ids(9, seed=6)
    with_pe = reference_relevance(model, ids, target=1)
    without = reference_relevance(model, ids, target=1, pe=False)
    total = with_pe.tokens.sum() + with_pe.positional.sum()
    assert float(total) == pytest.approx(float(without.tokens.sum()), rel=1e-10)
    assert with_pe.positional.abs().sum() > 1e-3 * with_pe.tokens.abs().sum()


@pytest.mark.parametrize("pe", [True, False])
def test_llama_equals_the_independent_llama_reference(pe):
    """Two references written separately agree (tests/test_llama.py computes cos/sin in
    float64 itself; the stock ones are float32 values: ~1e-7)."""
    model = llama_tiny_model("causal", dtype=torch.float64, layers=3)
    ids = random_ids(10, seed=7)
    ours = reference_relevance(model, ids, target=5, pe=pe)
    tok, pe_rel, _ = llama_reference(model, ids[None], torch.tensor([5]), pe)
    assert relative_error(ours.tokens, tok[0]) < 1e-5
    if pe:
        assert relative_error(ours.positional, pe_rel[0].reshape(-1, 10)) < 1e-5
