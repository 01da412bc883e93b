"""AttnLRP (``method="attn_lrp"``) against LXT, the AttnLRP authors' own implementation.

LXT 2.1 (``lxt.efficient.monkey_patch``) patches transformers 4.x modelling code and cannot be
installed beside the project's transformers 5, so its numbers were made once in a separate
environment by ``scripts/make_lxt_reference.py`` (its docstring and every stored file hold the
command: LXT 2.1, transformers 4.52.4, torch 2.14.1) and stored in ``tests/data/lxt_reference``
with the tiny model they explain (the causal LM of each decoder, BERT's sequence classifier):
per family, the config, the state dict, a batch of two
sequences (the second right-padded), the target, the stock logits and LXT's per-token relevance
``(embeds * embeds.grad).sum(-1)``. Here the same model is rebuilt with transformers 5 from
the stored config and weights (no key was renamed between the two releases for these
families), first checked to be the same model (stock logits equal), then explained.

The rules are the same on both sides (docs/method.md, sections 2 and 5; LXT's
``lxt/efficient/patches.py`` and ``models/*.py``), only implemented differently:

- RMSNorm / LayerNorm: LXT detaches the RMS (std) inside its own norm forward; the project
  applies the identity rule ``g * y / x`` around the stock RMSNorm and a constant-std LayerNorm
  (M6): the same gradient.
- SiLU, GELU(-tanh), BERT's pooler ``tanh``: the identity rule (M4) on both sides (LXT adds
  1e-10 to the denominator).
- gated MLP ``act(gate) * up``: LXT halves the product's gradient, the project the gradient at
  ``down_proj``'s input, the product's only consumer (M5).
- attention: LXT divides the gradients of q and k by 4 and of v by 2 at the kernel's inputs
  (BERT: the scores and the context by 2); the project halves q, k and the kernel's output
  (which halves A's and V's shares): q and k get 1/4, v 1/2 on both sides; softmax, scale and
  masks are plain autograd on both (AttnLRP's softmax rule). RoPE's cos/sin are constants
  under AttnLRP on both sides.

So the relevances must agree to rounding, and they do. Two implementation details of LXT
account for all of the measured difference: its identity rule saves ``y / (x + 1e-10)``
(``lxt/efficient/rules.py``), and its RMSNorm detaches the RMS inside the stock float32
computation (``patches.py``, ``models/gemma3.py``; the stored models run in float64, but the
stock Llama-like and Gemma 3 norms compute in float32 on both sides), where the project takes
the ratio ``y / x`` of the float32-rounded output around the stock norm. As shipped the two
agree to 1.9e-7 of the map's largest value (RMSNorm families, float32 rounding) and 5e-9
(GPT-2, BERT: LXT's 1e-10); with those two details done LXT's way the relevances are equal
to 1e-15, bitwise for the RMSNorm families (``test_equal_with_lxts_numerics``). A rule that
differs moves relevances by far more: PA-LRP's token relevance (half of q/k's share on the
rotary dims goes to cos/sin) is over 1000 times the tolerance away from LXT's
(``test_a_change_of_rule_is_seen``), so this comparison is known to see a change of rule.
"""
import pathlib

import pytest
import torch
import transformers as tf

import palrp
import palrp.modules.adapters.transformers as adapter

REFERENCE = pathlib.Path(__file__).parent / "data" / "lxt_reference"
#: The families that LXT 2.1's efficient AttnLRP and the project both cover.
SHARED = {"llama", "qwen2", "qwen3", "gemma3", "gpt2", "bert"}
#: max |R_palrp - R_lxt| / max |R_lxt| as shipped: float32 rounding where the stock norms compute
#: in float32 (RMSNorm families, measured 1.9e-7 at most), LXT's 1e-10 in the identity rule
#: elsewhere (measured 5.2e-9 at most).
TOLERANCE = {"llama": 1e-6, "qwen2": 1e-6, "qwen3": 1e-6, "gemma3": 1e-6,
             "gpt2": 1e-7, "bert": 1e-7}
ROTARY = ("llama", "qwen2", "qwen3", "gemma3")


def test_every_shared_family_has_a_reference():
    stored = {path.stem for path in REFERENCE.glob("*.pt")}
    assert stored == SHARED
    assert sum(path.stat().st_size for path in REFERENCE.glob("*.pt")) < 1_500_000


def _model(record):
    """The stored model rebuilt in transformers 5 from its config and state dict."""
    config = getattr(tf, record["config_class"])(**record["config"])
    config._attn_implementation = record["attn_implementation"]
    model = getattr(tf, record["model_class"])(config)
    model.load_state_dict(record["state_dict"], strict=True)
    return model.to(getattr(torch, record["dtype"])).eval()


@pytest.fixture(scope="module", params=sorted(SHARED))
def case(request):
    """(record, model): the stored LXT record and its model rebuilt in transformers 5."""
    record = torch.load(REFERENCE / f"{request.param}.pt", weights_only=True)
    return record, _model(record)


def _inputs(record):
    return {"input_ids": record["input_ids"], "attention_mask": record["attention_mask"]}


def _explained_logits(record, model):
    with torch.no_grad():
        logits = model(**_inputs(record)).logits
    if logits.dim() == 3:       # a causal LM: at each sample's last real token
        mask = record["attention_mask"]
        logits = logits[torch.arange(logits.shape[0]), mask.sum(-1) - 1]
    return logits


def _deviation(relevance, record):
    """max |R - R_lxt| as a fraction of max |R_lxt|."""
    lxt = record["relevance"]
    return float((relevance - lxt).abs().max() / lxt.abs().max())


def test_the_record_is_lxts_attn_lrp(case):
    record, _ = case
    assert record["lxt_version"] == "2.1"
    assert record["transformers_version"].startswith("4.")
    assert "make_lxt_reference.py" in record["command"]


def test_same_model_as_lxts(case):
    record, model = case
    torch.testing.assert_close(_explained_logits(record, model), record["logits"],
                               atol=1e-12, rtol=0)


def test_attn_lrp_equals_lxt(case):
    record, model = case
    result = palrp.explain(model, _inputs(record), record["target"], method="attn_lrp")
    torch.testing.assert_close(result.logits, record["logits"], atol=1e-12, rtol=0)
    ours, lxt = result.relevance["input_ids"], record["relevance"]
    pad = record["attention_mask"] == 0
    assert pad.any() and (ours[pad] == 0).all() and (lxt[pad] == 0).all()
    assert lxt.abs().max() > 0.1
    assert _deviation(ours, record) <= TOLERANCE[record["family"]]


def test_a_change_of_rule_is_seen(case):
    """PA-LRP on the same model: with RoPE, cos/sin take half of q/k's share on the rotary
    dims, so its token relevance is not AttnLRP's, and the comparison above resolves far finer
    differences (over 1000 times the tolerance apart). With an added position table the
    epsilon split at the sum is exact (M9): the token relevance stays LXT's, and the
    positional leaf gets the rest."""
    record, model = case
    family = record["family"]
    result = palrp.explain(model, _inputs(record), record["target"], method="pa_lrp")
    assert result.positional["input_ids"].abs().max() > 1e-3
    deviation = _deviation(result.relevance["input_ids"], record)
    if family in ROTARY:
        assert deviation > 1e3 * TOLERANCE[family]
    else:
        assert deviation <= TOLERANCE[family]


class _LxtIdentity(torch.autograd.Function):
    """LXT's identity rule: the backward multiplies by ``y / (x + 1e-10)``, saved in the
    forward (its ``identity_rule_implicit``)."""

    @staticmethod
    def forward(ctx, x, fn):
        y = fn(x)
        ctx.save_for_backward(y / (x + 1e-10))
        return y

    @staticmethod
    def backward(ctx, grad):
        return ctx.saved_tensors[0] * grad, None


def _lxt_identity(x, fn):
    return _LxtIdentity.apply(x, fn)


def _lxt_rms_norm(x, call, module):
    """LXT's RMSNorm: the stock float32 computation with the RMS detached (Llama-like
    ``w * x / rms``, or Gemma's ``(1 + w) * x / rms``)."""
    x32 = x.to(torch.float32)
    eps = getattr(module, "variance_epsilon", None)
    rms = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + (module.eps if eps is None else eps))
    normed = x32 * rms.detach()
    if eps is not None:
        return module.weight * normed.to(x.dtype)
    return (normed * (1.0 + module.weight.float())).type_as(x)


def test_equal_with_lxts_numerics(case, monkeypatch):
    """With LXT's epsilon in the identity rule and its RMSNorm computation (the two differences
    of implementation, not of rule, described above) the engine gives LXT's numbers to float64
    rounding."""
    record, model = case
    monkeypatch.setattr(adapter, "identity_act", _lxt_identity)
    monkeypatch.setattr(adapter, "_rms_norm", _lxt_rms_norm)
    result = palrp.explain(model, _inputs(record), record["target"], method="attn_lrp")
    assert _deviation(result.relevance["input_ids"], record) <= 1e-13
