"""The text engine against the slow explicit float64 references of tests/text_reference.py
(written from the rules, independent of modules/): token, positional and token-type relevance
per family and head, with and without positional attribution."""
import pytest
import torch

from palrp.modules import explain
from text_reference import (FAMILIES, float64_stock, random_ids, reference_relevance,
                            relative_error, tiny_model)

HEADS = ("causal", "classifier")


def tokens(result):
    """(B, S) token relevance."""
    return result.relevance["input_ids"]


def sinks(result):
    """(B, K, S) relevance of each positional sink (None without positional attribution)."""
    return result.streams["input_ids"].sinks


def _token_types(family, S):
    return torch.tensor([0] * (S // 2) + [1] * (S - S // 2)) if family == "bert" else None


@pytest.mark.parametrize("pe", [True, False])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("family", FAMILIES)
def test_engine_equals_reference(family, head, pe):
    model = tiny_model(family, head, seed=1)
    ids = random_ids(10, seed=4)
    tt = _token_types(family, 10)
    ref = reference_relevance(model, ids, target=2, pe=pe, token_type_ids=tt)
    inputs = {"input_ids": ids[None]}
    if tt is not None:
        inputs["token_type_ids"] = tt[None]
    method = "pa_lrp" if pe else "attn_lrp"
    # the stock RMSNorms and eager softmax compute in float32: exact in float64 only with
    # the reference's float64 stock; 1e-5 as shipped
    for exact in (True, False):
        with float64_stock(model) if exact else torch.no_grad():
            out = explain(model, inputs, target=2, method=method)
        tol = 1e-9 if exact else 1e-5
        assert int(out.positions[0]) == ref.position
        assert relative_error(out.logits[0], ref.logits) < tol
        assert relative_error(tokens(out)[0], ref.tokens) < tol, exact
        if pe:
            assert out.streams["input_ids"].labels[0] == ref.labels[0] or family != "llama"
            assert relative_error(sinks(out)[0], ref.positional) < tol, exact
        else:
            assert sinks(out) is None
        if family == "bert" and pe:
            assert relative_error(out.relevance["token_type_ids"][0], ref.token_type) < tol


@pytest.mark.parametrize("rope", [
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "dynamic", "factor": 2.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8},
], ids=lambda r: r["rope_type"])
def test_rope_scalings_are_the_stock_ones(rope):
    """Every rope scaling reaches the rule through the stock cos/sin: the engine equals the
    reference (which reads the stock rotary module) with the scaling on, and the scaling
    changes the numbers."""
    rope = dict(rope, rope_theta=10000.0)
    model = tiny_model("llama", "causal", seed=1, max_position_embeddings=8,
                       rope_parameters=rope)
    ids = random_ids(12, seed=4)
    ref = reference_relevance(model, ids, target=2, pe=True)
    with float64_stock(model):
        out = explain(model, {"input_ids": ids[None]}, target=2)
    assert relative_error(tokens(out)[0], ref.tokens) < 1e-9
    assert relative_error(sinks(out)[0], ref.positional) < 1e-9
    plain = explain(tiny_model("llama", "causal", seed=1), {"input_ids": ids[None]}, target=2)
    assert relative_error(sinks(plain)[0], sinks(out)[0]) > 1e-3
