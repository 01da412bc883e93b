"""PA-LRP / AttnLRP on the released transformers Llama (docs/method.md, sections 3 and 5).

Tiny random ``LlamaConfig`` models are built here (no downloads). The slow reference below is
written from docs/method.md, section 5, with explicit relevance formulas (ratios ``R/z``, never autograd) and
plain tensors taken from the state dict; it does not use ``modules/``.
"""
import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from palrp.modules import Explanation, Stream, explain_text
from palrp.modules.adapters.transformers import open_empty_rows
from palrp.modules.engine import lrp
from palrp.modules.positional import TEXT_PAPER

VOCAB, PAD = 61, 0


def tiny_config(layers=2, heads=4, kv_heads=2, hidden=32, inter=48, labels=3, bias=False):
    return LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter,
                       num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=kv_heads, max_position_embeddings=128,
                       pad_token_id=PAD, num_labels=labels, attention_bias=bias,
                       mlp_bias=bias, tie_word_embeddings=False)


def tiny_model(kind="causal", dtype=torch.float32, seed=0, std=0.25, **cfg):
    """Weights larger than the default init (std 0.02) so that attention is far from uniform
    and every rule matters; RMSNorm weights random too."""
    torch.manual_seed(seed)
    cls = LlamaForCausalLM if kind == "causal" else LlamaForSequenceClassification
    model = cls(tiny_config(**cfg))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    return model.to(dtype).eval()


def random_ids(batch, seq, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, seq), generator=g)


def lrp_llama(model, pe=True):
    return lrp(model, "pa_lrp" if pe else "attn_lrp")


def tokens(result):
    """(B, S) token relevance."""
    return result.relevance["input_ids"]


def pe_layers(result):
    """The per-layer view (B, L, 2, S) of the rotary sinks (cos at index 0, sin at 1); None
    without positional relevance."""
    stream = result.streams["input_ids"]
    if stream.sinks is None:
        return None
    assert all(label.startswith(("cos_", "sin_")) for label in stream.labels), stream.labels
    b, k, s = stream.sinks.shape
    return stream.sinks.view(b, k // 2, 2, s)


# ----------------------------------------------------------------------------------------
# Slow reference: explicit per-layer forward, explicit relevance backward (docs/method.md, section 5).
# ----------------------------------------------------------------------------------------

def _ratio(r, z):
    """R / z with 0 where R is 0 (the epsilon-0 rule's S = R / z)."""
    return torch.where(r == 0, torch.zeros_like(r), r / z)


def _linear_back(x, w, z, r_z):
    """Epsilon rule of ``z = x W^T`` (no bias): ``R_x = x * (S @ W)``, ``S = R_z / z``."""
    return x * (_ratio(r_z, z) @ w)


def _rot(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), -1)


def _unrot_relevance(r):
    """Relevance of ``rot(x)`` handed back to x: rot(x)[d] is +-x[(d + half) mod hd]."""
    half = r.shape[-1] // 2
    return torch.cat((r[..., half:], r[..., :half]), -1)


def reference_relevance(model, ids, target, pe):
    """float64 reference for unpadded (B, S) ids; returns (tok (B,S), pe (B,L,2,S), rope_checks)
    where rope_checks[l] = (sum R(cos_l)+R(sin_l), 0.5 * (sum R(q'_l) + sum R(k'_l)))."""
    cfg = model.config
    sd = {k: v.detach().to(torch.float64) for k, v in model.state_dict().items()}
    B, S = ids.shape
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.hidden_size // H
    G, eps, L = H // KV, cfg.rms_norm_eps, cfg.num_hidden_layers
    inv_freq = model.model.rotary_emb.inv_freq.to(torch.float64)
    freqs = torch.arange(S, dtype=torch.float64)[:, None] * inv_freq[None]
    cos, sin = torch.cat((freqs, freqs), -1).cos(), torch.cat((freqs, freqs), -1).sin()
    causal = torch.tril(torch.ones(S, S, dtype=torch.bool))

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def heads(t, n):
        return t.view(B, S, n, hd).transpose(1, 2)

    x = sd["model.embed_tokens.weight"][ids]
    saved = []
    for l in range(L):
        p = f"model.layers.{l}."
        h = x
        n1 = rms(h, sd[p + "input_layernorm.weight"])
        wq, wk, wv, wo = (sd[p + f"self_attn.{n}_proj.weight"] for n in "qkvo")
        qf, kf, vf = n1 @ wq.T, n1 @ wk.T, n1 @ wv.T
        q, k, v = heads(qf, H), heads(kf, KV), heads(vf, KV)
        qc, qs, kc, ks = q * cos, _rot(q) * sin, k * cos, _rot(k) * sin
        qr, kr = qc + qs, kc + ks
        krr, vr = kr.repeat_interleave(G, 1), v.repeat_interleave(G, 1)
        raw = qr @ krr.transpose(-1, -2)
        sc = raw * hd ** -0.5
        prob = torch.softmax(sc.masked_fill(~causal, float("-inf")), -1)
        o = prob @ vr
        of = o.transpose(1, 2).reshape(B, S, H * hd)
        a = of @ wo.T
        x1 = h + a
        n2 = rms(x1, sd[p + "post_attention_layernorm.weight"])
        wg, wu, wd = (sd[p + f"mlp.{n}_proj.weight"] for n in ("gate", "up", "down"))
        gt, up = n2 @ wg.T, n2 @ wu.T
        act = torch.nn.functional.silu(gt)
        m = act * up
        d = m @ wd.T
        x = x1 + d
        saved.append(dict(h=h, n1=n1, wq=wq, wk=wk, wv=wv, wo=wo, qf=qf, kf=kf, vf=vf, qc=qc,
                          qs=qs, kc=kc, ks=ks, qr=qr, kr=kr, krr=krr, vr=vr, raw=raw, sc=sc,
                          prob=prob, o=o, of=of, a=a, x1=x1, n2=n2, wg=wg, wu=wu, wd=wd, gt=gt,
                          up=up, m=m, d=d, x=x))
    nf = rms(x, sd["model.norm.weight"])
    rows = torch.arange(B)
    if isinstance(model, LlamaForCausalLM):
        head = sd["lm_head.weight"]
    else:
        head = sd["score.weight"]
    logits = nf[:, -1] @ head.T  # explained at the last position (no padding here)
    r_logits = torch.zeros_like(logits)
    r_logits[rows, target] = logits[rows, target]   # seed R(target) = logit
    r_x = torch.zeros_like(nf)
    r_x[:, -1] = _linear_back(nf[:, -1], head, logits, r_logits)  # RMS: identity
    pe_rel = torch.zeros(B, L, 2, S, dtype=torch.float64)
    rope_checks = []
    for l in reversed(range(L)):
        s = saved[l]
        # x = x1 + d (epsilon on the sum)
        r_x1, r_d = s["x1"] * _ratio(r_x, s["x"]), s["d"] * _ratio(r_x, s["x"])
        r_m = _linear_back(s["m"], s["wd"], s["d"], r_d)
        r_gt, r_up = 0.5 * r_m, 0.5 * r_m                       # uniform; SiLU identity
        r_n2 = _linear_back(s["n2"], s["wg"], s["gt"], r_gt) \
            + _linear_back(s["n2"], s["wu"], s["up"], r_up)
        r_x1 = r_x1 + r_n2                                      # RMS identity
        # x1 = h + a
        r_h, r_a = s["h"] * _ratio(r_x1, s["x1"]), s["a"] * _ratio(r_x1, s["x1"])
        r_of = _linear_back(s["of"], s["wo"], s["a"], r_a)
        r_o = r_of.view(B, S, H, hd).transpose(1, 2)
        # o = A V, uniform: share of (i, j, d) is A_ij V_jd R_o[i,d] / o[i,d], halved
        ratio_o = _ratio(r_o, s["o"])
        r_prob = 0.5 * s["prob"] * (ratio_o @ s["vr"].transpose(-1, -2))
        r_vr = 0.5 * s["vr"] * (s["prob"].transpose(-1, -2) @ ratio_o)
        # softmax (AttnLRP): R_in = x (R - s sum R); masked entries carry nothing
        r_sc = s["sc"] * (r_prob - s["prob"] * r_prob.sum(-1, keepdim=True))
        r_raw = torch.where(causal, r_sc, torch.zeros_like(r_sc))  # scale and mask plain
        ratio_raw = _ratio(r_raw, s["raw"])
        r_qr = 0.5 * s["qr"] * (ratio_raw @ s["krr"])
        r_krr = 0.5 * s["krr"] * (ratio_raw.transpose(-1, -2) @ s["qr"])
        r_kr = r_krr.view(B, KV, G, S, hd).sum(2)
        r_v = r_vr.view(B, KV, G, S, hd).sum(2)
        # RoPE: sum plain; each product uniform with PE, cos/sin constant without
        r_qc, r_qs = s["qc"] * _ratio(r_qr, s["qr"]), s["qs"] * _ratio(r_qr, s["qr"])
        r_kc, r_ks = s["kc"] * _ratio(r_kr, s["kr"]), s["ks"] * _ratio(r_kr, s["kr"])
        share = 0.5 if pe else 1.0
        r_q = share * (r_qc + _unrot_relevance(r_qs))
        r_k = share * (r_kc + _unrot_relevance(r_ks))
        if pe:
            pe_rel[:, l, 0] = 0.5 * (r_qc.sum((1, 3)) + r_kc.sum((1, 3)))
            pe_rel[:, l, 1] = 0.5 * (r_qs.sum((1, 3)) + r_ks.sum((1, 3)))
            rope_checks.append((pe_rel[:, l].sum((1, 2)),
                                0.5 * (r_qr.sum((1, 2, 3)) + r_kr.sum((1, 2, 3)))))
        flat = lambda t, n: t.transpose(1, 2).reshape(B, S, n * hd)  # noqa: E731
        r_n1 = _linear_back(s["n1"], s["wq"], s["qf"], flat(r_q, H)) \
            + _linear_back(s["n1"], s["wk"], s["kf"], flat(r_k, KV)) \
            + _linear_back(s["n1"], s["wv"], s["vf"], flat(r_v, KV))
        r_x = r_h + r_n1
    return r_x.sum(-1), pe_rel, rope_checks


def _close(actual, expected, rel):
    scale = expected.abs().max().clamp(min=1e-12)
    err = (actual - expected).abs().max()
    assert err <= rel * scale, f"max error {err:.3g} vs scale {scale:.3g}"


# ----------------------------------------------------------------------------------------
# Forward parity and exact restoration.
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["causal", "classifier"])
@pytest.mark.parametrize("pe", [True, False])
def test_patched_forward_equals_stock(kind, pe):
    model = tiny_model(kind)
    ids = random_ids(3, 11)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    ids[1, :4] = PAD
    mask[2, 8:] = 0  # right padding
    ids[2, 8:] = PAD
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    stock, patched = {}, {}
    with torch.no_grad():
        for impl in ("eager", "sdpa"):  # the engine runs on the model's own kernel
            model.config._attn_implementation = impl
            stock[impl] = model(ids, attention_mask=mask, position_ids=pos).logits
            with lrp_llama(model, pe=pe):
                patched[impl] = model(ids, attention_mask=mask, position_ids=pos).logits
            assert model.config._attn_implementation == impl
    for impl in ("eager", "sdpa"):
        a, b = patched[impl], stock[impl]
        if kind == "causal":  # compare the real positions (padding query rows are arbitrary)
            a, b = a[mask.bool()], b[mask.bool()]
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(patched["eager"][mask.bool()] if kind == "causal"
                               else patched["eager"],
                               stock["sdpa"][mask.bool()] if kind == "causal" else stock["sdpa"],
                               rtol=1e-5, atol=1e-5)


def _module_state(model):
    return [(name, sorted(vars(m)), m.training) for name, m in model.named_modules()]


@pytest.mark.parametrize("kind", ["causal", "classifier"])
def test_exit_restores_forward_and_gradients(kind):
    model = tiny_model(kind)
    enable = getattr(model, "activation_checkpointing_enable", None) \
        or model.gradient_checkpointing_enable
    enable()  # flags the context must restore, too
    model.train()
    twin = copy.deepcopy(model)  # never patched
    before = _module_state(model)
    ids = random_ids(2, 9)
    explain_text(model, ids, pe=True, gradient_checkpointing=True)
    with pytest.raises(RuntimeError, match="boom"):
        with lrp_llama(model, pe=False):
            raise RuntimeError("boom")
    assert _module_state(model) == before
    assert model.config._attn_implementation == twin.config._attn_implementation
    for m in (model, twin):
        m.eval()
        (getattr(m, "activation_checkpointing_disable", None) or m.gradient_checkpointing_disable)()
        out = m(ids).logits
        out.square().mean().backward()
    torch.testing.assert_close(model(ids).logits, twin(ids).logits, rtol=0, atol=0)
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        assert torch.equal(p.grad, q.grad), name


# ----------------------------------------------------------------------------------------
# Relevance: reference, conservation, padding, dtype, checkpointing.
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["causal", "classifier"])
@pytest.mark.parametrize("pe", [True, False])
def test_matches_slow_reference(kind, pe):
    model = tiny_model(kind, dtype=torch.float64, layers=3, heads=4, kv_heads=2)
    ids = random_ids(2, 10, seed=3)
    target = torch.tensor([5, 2]) if kind == "causal" else torch.tensor([1, 2])
    result = explain_text(model, ids, target=target, pe=pe)
    tok, pe_rel, _ = reference_relevance(model, ids, target, pe)
    # stock RMSNorm (and rules.rms_norm_const) compute in float32: ~1e-7 relative noise
    _close(tokens(result), tok, 1e-5)
    if pe:
        _close(pe_layers(result), pe_rel, 1e-5)
    else:
        assert pe_layers(result) is None


def test_reference_rope_split_is_exact():
    """The positional rule (docs/method.md, section 3) at every layer: R(cos_l) + R(sin_l) is exactly half of the relevance
    reaching q'_l and k'_l; the engine's per-layer PE totals are that half."""
    model = tiny_model("causal", dtype=torch.float64, layers=3)
    ids = random_ids(2, 9, seed=4)
    result = explain_text(model, ids, pe=True)
    _, _, checks = reference_relevance(model, ids, result.target, pe=True)
    engine_totals = pe_layers(result).sum((2, 3))  # (B, L)
    for l, (pe_total, half_qk) in zip(reversed(range(3)), checks):
        torch.testing.assert_close(pe_total, half_qk, rtol=1e-10, atol=1e-12)
        _close(engine_totals[:, l], pe_total, 1e-5)


@pytest.mark.parametrize("kind", ["causal", "classifier"])
def test_conservation_one_layer(kind):
    """Conservation (docs/method.md, section 3): sum R(tokens) + sum R(PE) == sum R(tokens) without PE.

    The PE rule itself is exact at every RoPE (see the test above): half of R(q'), R(k') goes
    to cos/sin, half back to q, k. The totals agree exactly when those halves reach the inputs
    conservatively, i.e. when no attention block lies below a RoPE: one decoder layer without
    biases (below q/k only q_proj/k_proj and RMSNorm, linear and bias-free). Through a lower
    attention block relevance is not conserved: the uniform A*V rule hands half to A, and
    the AttnLRP softmax rule loses ``sum R - sum_i R_in = (sum x s) sum R - ...`` (shift
    invariance), so the PE run, which sends less relevance down that path, ends with a
    different total; biases absorb relevance likewise. Checked in float64; the tolerance is the
    float32 RMSNorm that the stock model (and ``rms_norm_const``) compute in."""
    model = tiny_model(kind, dtype=torch.float64, layers=1, heads=4, kv_heads=1)
    ids = random_ids(3, 12, seed=5)
    with_pe = explain_text(model, ids, pe=True)
    without = explain_text(model, ids, target=with_pe.target, pe=False)
    total_pe = tokens(with_pe).sum(-1) + pe_layers(with_pe).sum((1, 2, 3))
    torch.testing.assert_close(total_pe, tokens(without).sum(-1), rtol=1e-6, atol=1e-9)
    assert pe_layers(with_pe).abs().sum() > 1e-3 * tokens(with_pe).abs().sum()


def test_conservation_deep_model_condition():
    """Deeper model: exact once the lower layers' attention branches are silent (o_proj = 0,
    so no relevance enters their softmax / A*V); with them active the totals differ."""
    model = tiny_model("causal", dtype=torch.float64, layers=3)
    ids = random_ids(2, 8, seed=6)

    def totals(m):
        with_pe = explain_text(m, ids, pe=True)
        without = explain_text(m, ids, target=with_pe.target, pe=False)
        return tokens(with_pe).sum(-1) + pe_layers(with_pe).sum((1, 2, 3)), tokens(without).sum(-1)

    active_pe, active_plain = totals(model)
    assert not torch.allclose(active_pe, active_plain, rtol=1e-4)  # the leak is real
    with torch.no_grad():
        for layer in model.model.layers[:-1]:
            layer.self_attn.o_proj.weight.zero_()
    silent_pe, silent_plain = totals(model)
    torch.testing.assert_close(silent_pe, silent_plain, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", ["causal", "classifier"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_equals_one_by_one(kind, side):
    model = tiny_model(kind)
    lengths = [9, 5, 7]
    seqs = [random_ids(1, n, seed=10 + i)[0] for i, n in enumerate(lengths)]
    S = max(lengths)
    ids = torch.full((3, S), PAD)
    mask = torch.zeros(3, S, dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(S - len(s), S)
        ids[i, sl], mask[i, sl] = s, 1
    batch = explain_text(model, ids, mask, pe=True)
    for i, s in enumerate(seqs):
        single = explain_text(model, s[None], pe=True)
        sl = slice(0, len(s)) if side == "right" else slice(S - len(s), S)
        assert int(batch.target[i]) == int(single.target[0])
        torch.testing.assert_close(batch.logits[i], single.logits[0], rtol=1e-5, atol=1e-5)
        _close(tokens(batch)[i, sl], tokens(single)[0], 1e-5)
        _close(pe_layers(batch)[i, ..., sl], pe_layers(single)[0], 1e-5)
        assert torch.all(tokens(batch)[i][mask[i] == 0] == 0)
        assert torch.all(pe_layers(batch)[i][..., mask[i] == 0] == 0)
        _close(batch.combined()[i, sl], single.combined()[0], 1e-5)


def test_bfloat16_correlates_with_float32():
    model = tiny_model("causal", std=0.1, layers=2, hidden=64, inter=128, heads=4, kv_heads=2)
    ids = random_ids(2, 24, seed=7)
    ref = explain_text(model, ids, pe=True)
    low = explain_text(copy.deepcopy(model).to(torch.bfloat16), ids, target=ref.target, pe=True)
    assert tokens(low).dtype == torch.float32
    for name in ("tokens", "pe"):
        a = tokens(ref) if name == "tokens" else ref.combined()
        b = tokens(low) if name == "tokens" else low.combined()
        corr = torch.corrcoef(torch.stack((a.flatten(), b.flatten())))[0, 1]
        assert corr > 0.99, (name, float(corr))


def test_gradient_checkpointing_changes_nothing():
    model = tiny_model("causal", layers=3)
    ids = random_ids(2, 10, seed=8)
    plain = explain_text(model, ids, pe=True)
    ckpt = explain_text(model, ids, pe=True, gradient_checkpointing=True)
    torch.testing.assert_close(tokens(ckpt), tokens(plain), rtol=0, atol=0)
    torch.testing.assert_close(pe_layers(ckpt), pe_layers(plain), rtol=0, atol=0)
    assert torch.equal(ckpt.target, plain.target)


def test_default_targets_and_seed():
    causal = tiny_model("causal")
    ids = random_ids(2, 6, seed=9)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    ids[1, 4:] = PAD  # the classifier pools at the last non-pad token
    r = explain_text(causal, ids, mask, pe=False)
    with torch.no_grad():
        full = causal(ids, attention_mask=mask).logits
    assert r.positions.tolist() == [5, 3]
    expected = torch.stack((full[0, 5], full[1, 3]))
    torch.testing.assert_close(r.logits, expected, rtol=1e-5, atol=1e-5)
    assert r.target.tolist() == expected.argmax(-1).tolist()
    clf = tiny_model("classifier")
    rc = explain_text(clf, ids, mask, pe=False)
    with torch.no_grad():
        torch.testing.assert_close(rc.logits, clf(ids, attention_mask=mask).logits,
                                   rtol=1e-5, atol=1e-5)
    assert rc.target.tolist() == rc.logits.argmax(-1).tolist()
    other = explain_text(clf, ids, mask, target=[0, 2], pe=False)
    assert other.target.tolist() == [0, 2]


def test_fully_masked_rows_are_opened_on_their_own_key():
    """Left padding under a causal mask leaves pad query rows with no key; every kernel would
    make them NaN in some dtype. Each such row gets its own key; other rows are untouched."""
    causal = torch.ones(4, 4).tril().bool()
    pad = torch.tensor([False, False, True, True])           # two left pads
    allowed = (causal & pad[None, :])[None, None]             # (1, 1, 4, 4)
    opened = open_empty_rows(allowed)
    assert opened[0, 0, 0].tolist() == [True, False, False, False]
    assert opened[0, 0, 1].tolist() == [False, True, False, False]
    assert torch.equal(opened[..., 2:, :], allowed[..., 2:, :])
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        additive = torch.zeros(1, 1, 4, 4, dtype=dtype).masked_fill(~allowed,
                                                                   torch.finfo(dtype).min)
        out = open_empty_rows(additive)
        assert out[0, 0, 0, 0] == 0 and out[0, 0, 1, 1] == 0 and out[0, 0, 1, 0] < -1e30
        assert torch.equal(out[..., 2:, :], additive[..., 2:, :])
        inf = additive.masked_fill(~allowed, float("-inf"))
        assert torch.equal(open_empty_rows(inf)[..., 2:, :], inf[..., 2:, :])
        assert open_empty_rows(inf)[0, 0, 0, 0] == 0
    assert open_empty_rows(None) is None
    flat = torch.ones(2, 4, dtype=torch.long)
    assert open_empty_rows(flat) is flat                      # 2-D (flash) masks pass through
    # a left-padded batch in every dtype gives finite relevances, on both kernels
    for dtype in (torch.bfloat16, torch.float32, torch.float64):
        for impl in ("eager", "sdpa"):
            model = tiny_model("causal", dtype=dtype)
            model.config._attn_implementation = impl
            ids, mask = random_ids(2, 7), torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7])
            r = explain_text(model, ids, mask)
            assert torch.isfinite(tokens(r)).all() and torch.isfinite(pe_layers(r)).all()
            assert torch.isfinite(r.logits).all()


# ----------------------------------------------------------------------------------------
# The combined map of docs/method.md, section 5, by hand.
# ----------------------------------------------------------------------------------------

def _by_hand(tok, positional, method="pa_lrp"):
    """An explanation of one 3-token sample made by hand (K sinks in ``positional``)."""
    labels = () if positional is None else tuple(
        f"{p}_{l}" for l in range(positional.shape[1] // 2) for p in ("cos", "sin"))
    mask = torch.ones(1, 3, dtype=torch.long)
    stream = Stream.tokens(relevance=tok, sinks=positional, labels=labels, mask=mask,
                           combination=TEXT_PAPER, family="llama")
    return Explanation(method=method, logits=torch.zeros(1, 2), target=torch.tensor([0]),
                       streams={"input_ids": stream}, positions=torch.tensor([2]),
                       attention_mask=mask)


def test_combined_map_by_hand():
    tok = torch.tensor([[1.0, -2.0, 0.5]])
    pe = torch.tensor([[[[0.5, -1.0, 0.0], [0.0, 2.0, -0.5]]]])  # (1, L=1, 2, 3)
    r = _by_hand(tok, pe.flatten(1, 2))
    torch.testing.assert_close(r.combined(), torch.tensor([[1.5, 1.0, 1.0]]) / 1.5)
    torch.testing.assert_close(r.combined(pe_only=True), torch.tensor([[0.5, 3.0, 0.5]]) / 3.0)
    torch.testing.assert_close(r.combined(absolute=False), torch.tensor([[1.5, -1.0, 0.0]]) / 1.5)
    torch.testing.assert_close(r.combined(absolute=False, clamp_pe=True),
                               torch.tensor([[1.5, -1.0, 0.5]]) / 1.5)
    # per-part: tok / 2, |c| / 1, |s| / 2, summed, normalised again
    per_part = torch.tensor([[0.5 + 0.5 + 0.0, -1.0 + 1.0 + 1.0, 0.25 + 0.0 + 0.25]])
    torch.testing.assert_close(r.combined(normalise="per_part"), per_part / per_part.abs().max())
    no_pe = _by_hand(tok, None, method="attn_lrp")
    torch.testing.assert_close(no_pe.combined(), tok)
    with pytest.raises(ValueError, match="needs positional relevance"):
        no_pe.combined(pe_only=True)
    zero = _by_hand(torch.zeros(1, 3), torch.zeros(1, 2, 3))
    assert torch.equal(zero.combined(), torch.zeros(1, 3))  # no NaN on an all-zero map


# ----------------------------------------------------------------------------------------
# Bad input.
# ----------------------------------------------------------------------------------------

def test_bad_inputs():
    model = tiny_model("causal")
    with pytest.raises(ValueError, match="empty input"):
        explain_text(model, torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="outside the model.s .* vocabulary entries"):
        explain_text(model, random_ids(1, 4), target=VOCAB + 3)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        explain_text(model, torch.tensor([[1, VOCAB]]))
    with pytest.raises(ValueError, match="no real token"):
        explain_text(model, random_ids(1, 3), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="target 3 is outside the model.s 3 classes"):
        explain_text(tiny_model("classifier"), random_ids(1, 4), target=3)
    with pytest.raises(TypeError, match="LlamaForCausalLM"):
        explain_text(torch.nn.Linear(2, 2), random_ids(1, 4))
    with lrp_llama(model):
        with pytest.raises(RuntimeError, match="already active"):
            with lrp_llama(model):
                pass


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_equals_cpu(dtype):
    model = tiny_model("causal", layers=2)
    ids = random_ids(2, 16, seed=12)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    cpu = explain_text(model, ids, mask, pe=True)
    gpu_model = copy.deepcopy(model).to("cuda", dtype)
    gpu = explain_text(gpu_model, ids.cuda(), mask.cuda(), target=cpu.target.cuda(), pe=True,
                       gradient_checkpointing=True)
    assert tokens(gpu).device.type == "cuda"
    if dtype == torch.float32:  # TF32 may be on for matmuls: compare at 1e-3
        _close(tokens(gpu).cpu(), tokens(cpu), 1e-3)
        _close(pe_layers(gpu).cpu(), pe_layers(cpu), 1e-3)
    else:
        a, b = gpu.combined().cpu().flatten(), cpu.combined().flatten()
        assert torch.corrcoef(torch.stack((a, b)))[0, 1] > 0.99
