"""The text engine on every family of docs/text_families.md, on tiny random configs.

Per family, with both heads (causal LM and sequence classification): patched == stock forward
on the model's kernel, exact restore, eager == sdpa relevances (float64), padded batches ==
one by one, finite results for a left-padded float64 batch, PE conservation where it is exact
(docs/method.md), no (S x S) attention matrix kept with SDPA; unsupported models refused.
The slow explicit references for Llama are in tests/test_llama.py.
"""
import contextlib
import copy

import pytest
import torch

import palrp
from palrp.modules import explain_text
from palrp.modules.engine import lrp
from palrp.modules.family import UnsupportedModelError
from text_families_fixtures import FAMILIES, pad_id, random_ids, tiny

KINDS = ("causal", "classifier")


def families():
    """The registered text families (the registry holds vision families too, text towers that
    are only parts of a dual encoder (CLIP's, SigLIP's), and language models that only run
    inside a vision-language model, such as Qwen2-VL's M-RoPE decoder, tested through it:
    tests/test_vlm.py)."""
    return [f for f in palrp.families() if f.stream == "input_ids" and not f.composite
            and set(f.tasks.values()) != {"part"}]


_MAPS = {f.name.lower(): f for f in families()}
ROTARY = tuple(f for f in FAMILIES if _MAPS[f].position == "rotary")
# transformers has no SDPA path for Gemma 2's soft-capped attention (the engine runs it eager)
SDPA = tuple(f for f in FAMILIES if "sdpa" in _MAPS[f].kernels_checked)


def lrp_text(model, pe=True):
    return lrp(model, "pa_lrp" if pe else "attn_lrp")


def tokens(result):
    """(B, S) token relevance."""
    return result.relevance["input_ids"]


def sinks(result):
    """(B, K, S) relevance of each positional sink (None without positional attribution)."""
    return result.streams["input_ids"].sinks


def token_types(result):
    """(B, S) relevance of the token-type embeddings (None for families without them)."""
    return result.relevance.get("token_type_ids")


def pe_layers(result):
    """The per-layer (B, L, 2, S) view of rotary sinks (cos at 0, sin at 1)."""
    stream = result.streams["input_ids"]
    if not all(label.startswith(("cos_", "sin_")) for label in stream.labels):
        raise ValueError(f"the sinks are {list(stream.labels)}, not rotary: use positional")
    b, k, s = stream.sinks.shape
    return stream.sinks.view(b, k // 2, 2, s)


def _padded(family, lengths, side, seed=10):
    seqs = [random_ids(family, 1, n, seed=seed + i)[0] for i, n in enumerate(lengths)]
    S = max(lengths)
    ids = torch.full((len(seqs), S), pad_id(family))
    mask = torch.zeros(len(seqs), S, dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(S - len(s), S)
        ids[i, sl], mask[i, sl] = s, 1
    return seqs, ids, mask


def _close(actual, expected, rel):
    scale = expected.abs().max().clamp(min=1e-12)
    err = (actual - expected).abs().max()
    assert err <= rel * scale, f"max error {err:.3g} vs scale {scale:.3g}"


def test_every_family_has_a_map_and_a_test():
    from family_models import BUILDERS

    names = [f.name.lower() for f in families()]
    # the fixtures' families, in the registry's order; every other text family brings its
    # tiny models in a tests/builders_<kind>.py (tests/test_engine.py runs them)
    assert [n for n in names if n in FAMILIES] == list(FAMILIES)
    assert set(names) <= set(BUILDERS)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
def test_patched_forward_equals_stock_and_restores(family, kind):
    impls = ("eager", "sdpa") if family in SDPA else ("eager",)
    for impl in impls:
        model = tiny(family, kind, impl=impl)
        twin = copy.deepcopy(model)
        _, ids, mask = _padded(family, [9, 6], "right")
        state = [(n, sorted(vars(m))) for n, m in model.named_modules()]
        with torch.no_grad():
            stock = model(ids, attention_mask=mask).logits
            for pe in (True, False):
                with lrp_text(model, pe=pe):
                    patched = model(ids, attention_mask=mask).logits
                real = mask.bool() if kind == "causal" else slice(None)
                torch.testing.assert_close(patched[real], stock[real], rtol=1e-6, atol=1e-6)
        with pytest.raises(RuntimeError, match="boom"):
            with lrp_text(model):
                raise RuntimeError("boom")
        assert [(n, sorted(vars(m))) for n, m in model.named_modules()] == state
        assert model.config._attn_implementation == impl
        for m in (model, twin):
            m(ids, attention_mask=mask).logits.square().mean().backward()
        for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
            assert torch.equal(p.grad, q.grad), (impl, name)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
def test_eager_equals_sdpa_relevance(family, kind):
    """(Gemma 2 configured for sdpa runs its soft-capped attention on the eager kernel, with
    the eager masks: the same numbers.)"""
    _, ids, mask = _padded(family, [8, 5], "right", seed=20)
    out = {}
    for impl in ("eager", "sdpa"):
        model = tiny(family, kind, dtype=torch.float64, impl=impl)
        out[impl] = explain_text(model, ids, mask, pe=True)
    a, b = out["eager"], out["sdpa"]
    assert torch.equal(a.target, b.target)
    # the stock eager kernels compute the softmax in float32 even for a float64 model (sdpa
    # stays float64), so the comparison is at 1e-5 of each map's largest magnitude
    _close(tokens(a), tokens(b), 1e-5)
    _close(sinks(a), sinks(b), 1e-5)
    assert sinks(a).abs().sum() > 1e-3 * tokens(a).abs().sum()
    # float32 models: correlation of the combined maps above 0.99999
    maps = []
    for impl in ("eager", "sdpa"):
        model = tiny(family, kind, impl=impl)
        maps.append(explain_text(model, ids, mask, target=a.target, pe=True).combined())
    corr = torch.corrcoef(torch.stack([m.flatten() for m in maps]))[0, 1]
    assert corr > 0.99999, float(corr)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_equals_one_by_one(family, kind, side):
    model = tiny(family, kind)
    seqs, ids, mask = _padded(family, [9, 5, 7], side)
    if kind == "classifier" and family in ("bert", "roberta") and side == "left":
        with pytest.raises(ValueError, match="pad on the right"):
            explain_text(model, ids, mask)
        return
    batch = explain_text(model, ids, mask, pe=True)
    S = ids.shape[1]
    for i, s in enumerate(seqs):
        single = explain_text(model, s[None], pe=True)
        sl = slice(0, len(s)) if side == "right" else slice(S - len(s), S)
        assert int(batch.target[i]) == int(single.target[0])
        torch.testing.assert_close(batch.logits[i], single.logits[0], rtol=1e-5, atol=1e-5)
        _close(tokens(batch)[i, sl], tokens(single)[0], 1e-5)
        _close(sinks(batch)[i, :, sl], sinks(single)[0], 1e-5)
        _close(batch.combined()[i, sl], single.combined()[0], 1e-5)
        assert torch.all(tokens(batch)[i][mask[i] == 0] == 0)
        assert torch.all(sinks(batch)[i][:, mask[i] == 0] == 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_float64_batch_is_finite(family):
    """A left-padded float64 batch: the stock eager kernel's float32 softmax turns the
    float64 mask minimum into -inf and pad rows into NaN; the engine must give finite
    numbers on every kernel."""
    kind = "classifier" if family not in ("bert", "roberta") else "causal"
    for impl in ("eager", "sdpa") if family in SDPA else ("eager",):
        model = tiny(family, kind, dtype=torch.float64, impl=impl)
        _, ids, mask = _padded(family, [8, 4], "left")
        r = explain_text(model, ids, mask)
        for t in (tokens(r), sinks(r), r.logits):
            assert torch.isfinite(t).all(), impl


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
def test_positional_shape_and_combined_map(family, kind):
    model = tiny(family, kind)
    ids = random_ids(family, 2, 7)
    r = explain_text(model, ids, pe=True)
    layers = model.config.num_hidden_layers
    if family in ROTARY:
        # a NoPE layer (SmolLM3's use_rope false) has no rotary products, hence no leaves
        rope = [i for i, layer in enumerate(model.base_model.layers)
                if getattr(layer.self_attn, "use_rope", True)]
        assert len(rope) == (1 if family == "smollm3" else layers)
        assert sinks(r).shape == (2, 2 * len(rope), 7)
        assert r.streams["input_ids"].labels == tuple(
            f"{p}_{l}" for l in rope for p in ("cos", "sin"))
        assert pe_layers(r).shape == (2, len(rope), 2, 7)
    else:
        assert sinks(r).shape == (2, 1, 7)
        with pytest.raises(ValueError, match="use positional"):
            pe_layers(r)
    expected = tokens(r) + sinks(r).abs().sum(1)
    expected = expected / expected.abs().amax(-1, keepdim=True)
    torch.testing.assert_close(r.combined(), expected)
    assert (token_types(r) is not None) == (family in ("bert", "roberta"))
    plain = explain_text(model, ids, target=r.target, pe=False)
    assert sinks(plain) is None and token_types(plain) is None or family in ("bert", "roberta")


def _zero_biases(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and "norm" not in name.lower():
                p.zero_()


@pytest.mark.parametrize("family", ROTARY)
@pytest.mark.parametrize("kind", KINDS)
def test_rotary_conservation_one_layer(family, kind):
    """docs/method.md: sum R(tokens) + sum R(PE) == sum R(tokens) without PE, exact when no
    attention block lies below a RoPE (one layer) and no bias absorbs relevance. Partial rotary
    (Phi-3) checks that pass-through dims are not halved; soft-capping (Gemma 2) that its
    identity rule conserves."""
    model = tiny(family, kind, dtype=torch.float64, num_hidden_layers=1,
                 **({"layer_types": ["full_attention"]} if family == "gemma3" else {}))
    _zero_biases(model)
    ids = random_ids(family, 3, 10, seed=5)
    with_pe = explain_text(model, ids, pe=True)
    without = explain_text(model, ids, target=with_pe.target, pe=False)
    total = tokens(with_pe).sum(-1) + sinks(with_pe).sum((1, 2))
    torch.testing.assert_close(total, tokens(without).sum(-1), rtol=1e-6, atol=1e-9)
    assert sinks(with_pe).abs().sum() > 1e-3 * tokens(with_pe).abs().sum()


@pytest.mark.parametrize("kind", KINDS)
def test_nope_layer_above_a_rope_layer_keeps_its_relevance(kind):
    """SmolLM3, layer 0 with RoPE, layer 1 without (NoPE): the NoPE layer's q/k are not halved
    and make no leaves, so conservation stays exact (only layer 0's rotary products, with no
    attention below them, carve out the positional share). Halving the NoPE layer's q/k as if
    it had RoPE would lose relevance and break the equality."""
    model = tiny("smollm3", kind, dtype=torch.float64)
    assert [layer.self_attn.use_rope for layer in model.base_model.layers] == [True, False]
    _zero_biases(model)
    ids = random_ids("smollm3", 3, 10, seed=5)
    with_pe = explain_text(model, ids, pe=True)
    without = explain_text(model, ids, target=with_pe.target, pe=False)
    assert with_pe.streams["input_ids"].labels == ("cos_0", "sin_0")
    total = tokens(with_pe).sum(-1) + sinks(with_pe).sum((1, 2))
    torch.testing.assert_close(total, tokens(without).sum(-1), rtol=1e-6, atol=1e-9)
    assert sinks(with_pe).abs().sum() > 1e-3 * tokens(with_pe).abs().sum()


@pytest.mark.parametrize("family", ("gpt2", "bert", "roberta"))
@pytest.mark.parametrize("kind", KINDS)
def test_absolute_pe_is_exact_at_the_sum(family, kind):
    """The epsilon rule on ``z = E + P (+ T)``: R(E) + R(P) + R(T) = R(z) per position, and the
    token relevance does not depend on whether P is attributed."""
    model = tiny(family, kind, dtype=torch.float64)
    ids = random_ids(family, 2, 8, seed=6)
    captured = {}
    base = getattr(model, model.base_model_prefix)
    first = base.h[0] if family == "gpt2" else base.embeddings.LayerNorm

    def grab(module, args):
        captured["z"] = args[0]
        args[0].retain_grad()

    handle = first.register_forward_pre_hook(grab)
    try:
        with lrp_text(model, pe=True) as state:
            logits = model(ids).logits
            score = logits[:, -1].max(-1).values.sum() if kind == "causal" else \
                logits.max(-1).values.sum()
            score.backward()
            part = state.parts[0]
            leaves = [part.token_leaf] + part.source.leaves() + (
                [part.token_type_leaf] if part.token_type_leaf is not None else [])
            parts = sum((t.detach() * t.grad).sum(-1) for t in leaves)
    finally:
        handle.remove()
    z = captured["z"]
    torch.testing.assert_close(parts, (z.detach() * z.grad).sum(-1), rtol=1e-10, atol=1e-12)
    target = logits[:, -1].argmax(-1) if kind == "causal" else logits.argmax(-1)
    a = explain_text(model, ids, target=target, pe=True)
    b = explain_text(model, ids, target=target, pe=False)
    torch.testing.assert_close(tokens(a), tokens(b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", ("llama", "gpt2", "bert"))
def test_sdpa_keeps_no_attention_matrix(family):
    """Memory stays that of the kernel: with SDPA the LRP forward saves exactly as many
    (S x S) tensors for the backward as the stock forward (the mask), with eager it keeps the
    (B, H, S, S) probabilities. S differs from every other dim of the tiny model."""
    S = 40

    def square_saved(model, lrp):
        shapes = []

        def pack(t):
            shapes.append(tuple(t.shape))
            return t

        ids = random_ids(family, 2, S)
        mask = torch.ones_like(ids)
        mask[1, S - 6:] = 0
        ctx = lrp_text(model, pe=True) if lrp else contextlib.nullcontext()
        with ctx, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if lrp:
                model(ids, attention_mask=mask)
            else:
                embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
                model(inputs_embeds=embeds, attention_mask=mask)
        return [s for s in shapes if len(s) >= 2 and s[-2:] == (S, S)]

    sdpa = tiny(family, "classifier", impl="sdpa")
    assert len(square_saved(sdpa, True)) == len(square_saved(sdpa, False))
    assert not [s for s in square_saved(sdpa, True) if len(s) == 4 and s[1] > 1]
    eager = tiny(family, "classifier", impl="eager")
    heads = eager.config.num_attention_heads
    assert [s for s in square_saved(eager, True) if len(s) == 4 and s[1] == heads]


def test_unsupported_model_is_refused_with_the_families():
    from transformers import OPTConfig, OPTForCausalLM
    model = OPTForCausalLM(OPTConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                     ffn_dim=32, num_attention_heads=2,
                                     word_embed_proj_dim=16))
    for call in (lambda: explain_text(model, torch.tensor([[1, 2, 3]])),
                 lambda: lrp(model).__enter__()):
        with pytest.raises(UnsupportedModelError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "OPTForCausalLM" in message
        for name in ("llama", "qwen3", "gemma2", "phi3", "gpt2", "bert", "roberta"):
            assert f"{name} (" in message


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_checkpointing_changes_nothing(family, kind):
    model = tiny(family, kind)
    _, ids, mask = _padded(family, [8, 6], "right")
    plain = explain_text(model, ids, mask, pe=True)
    ckpt = explain_text(model, ids, mask, pe=True, gradient_checkpointing=True)
    torch.testing.assert_close(tokens(ckpt), tokens(plain), rtol=0, atol=0)
    torch.testing.assert_close(sinks(ckpt), sinks(plain), rtol=0, atol=0)


def _hooked(model, ids, places):
    """Inputs/outputs of ``places`` (name -> (module path, "in" or "out")) of one LRP forward
    and backward seeded at the argmax logit of the explained row; returns name -> x * grad."""
    seen, handles = {}, []
    for name, (path, where) in places.items():
        module = model.get_submodule(path)

        def keep(t, name=name):
            t.retain_grad()
            seen[name] = t

        if where == "in":
            handles.append(module.register_forward_pre_hook(lambda m, a, keep=keep: keep(a[0])))
        else:
            handles.append(module.register_forward_hook(lambda m, a, o, keep=keep: keep(o)))
    try:
        with lrp_text(model, pe=True):
            logits = model(ids).logits
            row = logits[:, -1] if logits.dim() == 3 else logits
            score = row.gather(1, row.argmax(-1, keepdim=True)).sum()
            score.backward()
    finally:
        for h in handles:
            h.remove()
    return {name: (t.detach() * t.grad) for name, t in seen.items()}, row.detach(), score


@pytest.mark.parametrize("family,kind,before,after", [
    ("bert", "classifier", "bert.pooler.dense", ("bert.pooler.activation", "out")),
    ("roberta", "classifier", "classifier.dense", ("classifier.out_proj", "in")),
    ("roberta", "causal", "lm_head.dense", ("lm_head.layer_norm", "in")),
])
def test_elementwise_maps_get_the_identity_rule(family, kind, before, after):
    """tanh (BERT's pooler, RoBERTa's classification head) and RoBERTa's inline gelu:
    R_in = R_out element by element (with a plain gradient they differ)."""
    model = tiny(family, kind, dtype=torch.float64)
    ids = random_ids(family, 2, 7)
    rel, _, _ = _hooked(model, ids, {"z": (before, "out"), "y": after})
    z, y = rel["z"], rel["y"]
    if kind == "causal":
        z, y = z[:, -1], y[:, -1]
    torch.testing.assert_close(z, y, rtol=1e-10, atol=1e-12)
    assert y.abs().sum() > 0


def test_gemma2_final_soft_cap_gets_the_identity_rule():
    """``logits = cap * tanh(z / cap)``: the relevance reaching the lm_head output z at the
    target is the capped logit itself (the seed), not ``z * (1 - tanh^2)``."""
    model = tiny("gemma2", "causal", dtype=torch.float64)
    ids = random_ids("gemma2", 2, 7)
    rel, row, score = _hooked(model, ids, {"z": ("lm_head", "out")})
    target = row.argmax(-1)
    at_target = rel["z"][torch.arange(2), -1, target]
    torch.testing.assert_close(at_target, row[torch.arange(2), target], rtol=1e-12, atol=0)
    assert (rel["z"][:, :-1] == 0).all()


def test_unchecked_module_is_refused():
    """A configuration holding a module class no map names (here an activation nobody
    checked) is refused with one line naming it."""
    model = tiny("llama", "causal", hidden_act="relu2")
    with pytest.raises(UnsupportedModelError, match="ReLUSquaredActivation") as info:
        explain_text(model, random_ids("llama", 1, 4))
    assert "\n" not in str(info.value)


def test_non_finite_result_is_an_error():
    """A NaN anywhere in a result is an error, never an output (one line)."""
    model = tiny("llama", "classifier")
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite") as info:
        explain_text(model, random_ids("llama", 2, 5))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_causal_head_computes_only_the_explained_positions(family):
    """The LM head runs on the explained positions only (``logits_to_keep``), not on all S:
    a (B, S, vocab) logits tensor would dominate memory at long contexts. Two right-padded
    samples of lengths 9 and 6 are explained at positions 8 and 5, so the output embedding sees
    2 positions, and the target logits are the stock ones at those positions."""
    model = tiny(family, "causal", impl="sdpa" if family in SDPA else "eager")
    _, ids, mask = _padded(family, [9, 6], "right")
    seen = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        result = explain_text(model, ids, mask)
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0][:2] == (2, 2), seen
    with torch.no_grad():
        stock = model(ids, attention_mask=mask).logits
    expected = stock[torch.arange(2), torch.tensor([8, 5])]
    torch.testing.assert_close(result.logits, expected, rtol=1e-5, atol=1e-6)
