"""The one engine, parametrised from the family registry: every registered family (vision, text,
composite) runs through the same tests on its tiny models (tests/family_models.py), so a new
family brings its tests with it.

- the registry: one list of vision and text families; every class name a map uses exists in
  the installed libraries; a tiny model for every family;
- parity and restore: inside ``lrp()`` the forward is the stock one and every module is in eval
  mode; after it the model is exactly as before (forwards, attributes, training flags, the
  gradients of a plain backward);
- the contract of ``palrp.explain``: logits (B, C) at the explained position, target (B,),
  relevance and positional per input stream, (B, N), the three methods;
- padding and batching: a batch equals its samples one by one (text padded on the side the
  family allows);
- kernels: eager == sdpa where the family lists both.
"""
import pytest
import torch

import palrp
from family_models import BUILDERS
from palrp.modules.engine import explain, lrp, plan

FAMILY_NAMES = [f.name for f in palrp.families()]


def _cases():
    """(family, builder index) for every builder, each builder once: a composite and its parts
    share one tiny model (LLaVA's serves llava, clip_vision and llama alike), run under the
    first family that lists it."""
    seen, cases = set(), []
    for name in FAMILY_NAMES:
        for index, build in enumerate(BUILDERS.get(name, ())):
            if build not in seen:
                seen.add(build)
                cases.append(pytest.param((name, index), id=f"{name}-{index}"))
    return cases


CASES = _cases()


def _call(model, inputs):
    return model(inputs) if torch.is_tensor(inputs) else model(**inputs)


def _stock_output(model, inputs):
    out = _call(model, inputs)
    if torch.is_tensor(out):
        return out
    return out.logits if hasattr(out, "logits") else out.logits_per_image   # a dual encoder


def _module_state(model):
    return [(name, sorted(vars(m)), m.training) for name, m in model.named_modules()]


@pytest.fixture(params=CASES)
def case(request):
    name, index = request.param
    model, inputs, padding = BUILDERS[name][index]()
    return name, model, inputs, padding


def test_one_registry_lists_vision_text_and_composite_families():
    families = palrp.families()
    assert [f.name for f in families] == FAMILY_NAMES
    assert len(set(FAMILY_NAMES)) == len(FAMILY_NAMES)
    streams = {f.stream for f in families}
    assert {"pixel_values", "input_ids", None} <= streams
    assert {f.library for f in families} >= {"timm", "transformers"}


def test_every_registered_family_has_a_tiny_model():
    assert set(BUILDERS) == set(FAMILY_NAMES), "add the new family's tiny model to family_models.py"


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_every_class_a_family_names_exists(name):
    family = palrp.modules.family.family_named(name)
    assert family.rules.unresolved() == []
    assert family.default_rules.name in family.rule_sets


def test_families_match_by_class_identity_not_by_name():
    from palrp.modules.family import UnsupportedModelError, family_of

    model, images, _ = BUILDERS["vit"][0]()
    assert family_of(model)[0].name == "vit"
    impostor = type("VisionTransformer", (torch.nn.Module,), {})()   # same name, other class
    with pytest.raises(UnsupportedModelError, match="not a model the engine explains"):
        family_of(impostor)


def test_forward_is_stock_inside_and_the_model_is_restored_after(case):
    name, model, inputs, _ = case
    model.eval()
    with torch.no_grad():
        stock = _stock_output(model, inputs)
    model.zero_grad()
    _stock_output(model, inputs).float().square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.train()
    before = _module_state(model)
    with lrp(model) as state:
        assert all(not m.training for m in model.modules())
        assert state.parts[0].family.name == plan(model)[0][0].name
        with torch.no_grad():
            torch.testing.assert_close(_stock_output(model, inputs), stock, rtol=1e-6, atol=1e-6)
    assert _module_state(model) == before
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    assert not [k for k in ALL_ATTENTION_FUNCTIONS.keys() if k.startswith("palrp_")]
    model.eval()
    with torch.no_grad():
        assert torch.equal(_stock_output(model, inputs), stock)
    _stock_output(model, inputs).float().square().sum().backward()
    for n, p in model.named_parameters():
        if n in grads:
            assert torch.equal(p.grad, grads[n]), n
    model.zero_grad()


def _expected_streams(model):
    streams = {}
    seen = set()
    for family, module, _ in plan(model):
        # an encoder-decoder's second part is its decoder, reading the decoder's stream
        stream = family.decoder_stream if family.name in seen else family.stream
        seen.add(family.name)
        if stream is not None:
            streams[stream] = family
            if family.token_type_module:
                streams["token_type_ids"] = family
    return streams


def test_explain_meets_the_contract(case):
    name, model, inputs, _ = case
    result = explain(model, inputs)
    batch = 2
    assert result.method == "pa_lrp"
    assert result.logits.dim() == 2 and result.logits.shape[0] == batch
    assert result.target.shape == (batch,)
    assert torch.equal(result.target, result.logits.argmax(-1))
    # the explained row is the stock model's output there
    with torch.no_grad():
        stock = _stock_output(model, inputs)
    if stock.dim() == 3:                                  # a causal LM: the last real position
        stock = stock[torch.arange(batch), result.positions]
    torch.testing.assert_close(result.logits, stock.float(), rtol=1e-5, atol=1e-5)
    expected = _expected_streams(model)
    assert set(result.relevance) == set(expected)
    for stream, family in expected.items():
        relevance = result.relevance[stream]
        record = result.streams[stream]
        if record.kind == "image":
            gh, gw = record.grid
            assert relevance.shape == (batch, gh * gw)
            images = inputs_pixels(inputs)
            if images.dim() == 4:
                assert record.pixels.shape == (batch, *images.shape[-2:])
            else:             # patch rows (Qwen2-VL), patch sequences (SigLIP 2), tiles:
                              # the grid of patches
                ph, pw = record.patch_size
                assert record.pixels.shape == (batch, gh * ph, gw * pw)
            assert result.combined(stream).shape == record.pixels.shape
        else:
            key = "input_ids" if stream == "token_type_ids" else stream
            assert relevance.shape == tuple(inputs[key].shape)
            assert result.combined(stream).shape == relevance.shape
        positional = result.positional[stream]
        if stream == "token_type_ids" or family.position == "none":
            assert positional is None
        else:
            assert positional.shape == relevance.shape
            assert positional.abs().sum() > 0, stream
        assert relevance.abs().sum() > 0, stream
    # attn_lrp: positions constant, the same target; pe_only: the positional term alone
    baseline = explain(model, inputs, result.target, "attn_lrp")
    assert torch.equal(baseline.target, result.target)
    assert all(v is None for v in baseline.positional.values())
    pe_only = explain(model, inputs, result.target, "pe_only")
    for stream in expected:
        if result.positional[stream] is not None:
            torch.testing.assert_close(pe_only.combined(stream),
                                       result.combined(stream, pe_only=True))
    # one target for every sample, and one per sample
    one = explain(model, inputs, 1)
    assert one.target.tolist() == [1, 1]
    torch.testing.assert_close(explain(model, inputs, [1, 1]).relevance,
                               one.relevance)


def inputs_pixels(inputs):
    return inputs if torch.is_tensor(inputs) else inputs["pixel_values"]


def _sample(inputs, n, real=slice(None)):
    """Sample ``n`` of a batch (its token positions ``real``): per-token inputs (B, S) are
    cut to ``real``; packed patch rows (``pixel_values`` with ``image_grid_thw``) keep the
    rows of the sample's image."""
    if torch.is_tensor(inputs):
        return inputs[n:n + 1]
    tokens = tuple(inputs["input_ids"].shape) if "input_ids" in inputs else None
    out = {}
    for k, v in inputs.items():
        if tuple(v.shape) == tokens:
            out[k] = v[n:n + 1, real]
        elif k == "pixel_values" and "image_grid_thw" in inputs:
            counts = inputs["image_grid_thw"].prod(-1).tolist()
            out[k] = v[sum(counts[:n]):sum(counts[:n + 1])]
        else:
            out[k] = v[n:n + 1]
    return out


#: the streams the padding test pads (the encoder's tokens and their token types)
PADDED = ("input_ids", "token_type_ids")


def test_a_batch_equals_its_samples_one_by_one_with_padding(case):
    """Images: batched == single. Text: the second sample two tokens shorter, padded on the
    side the family allows; its relevance at its real positions equals that of the unpadded
    sample alone, and padding positions get 0."""
    name, model, inputs, padding = case
    model = model.double()
    if torch.is_tensor(inputs) or "input_ids" not in inputs:     # images (maybe a mapping)
        inputs = inputs.double() if torch.is_tensor(inputs) else {
            k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
        batched = explain(model, inputs)
        for n in range(2):
            single = explain(model, _sample(inputs, n))
            for stream in batched.relevance:
                torch.testing.assert_close(batched.relevance[stream][n],
                                           single.relevance[stream][0], rtol=1e-7, atol=1e-10)
                torch.testing.assert_close(batched.positional[stream][n],
                                           single.positional[stream][0], rtol=1e-7, atol=1e-10)
        return
    inputs = {k: (v.double() if v.is_floating_point() else v.clone()) for k, v in inputs.items()}
    ids = inputs["input_ids"]
    seq = ids.shape[1]
    mask = torch.ones_like(ids)
    pad = getattr(model.config, "pad_token_id", None)
    pad = 0 if pad is None else pad
    short = 2
    if padding == "left":
        mask[1, :short] = 0
        ids[1, :short] = pad
        real = slice(short, seq)
    else:
        mask[1, seq - short:] = 0
        ids[1, seq - short:] = pad
        real = slice(0, seq - short)
    inputs = dict(inputs, input_ids=ids, attention_mask=mask)
    batched = explain(model, inputs)
    alone = _sample(inputs, 1, real)
    single = explain(model, alone)
    first = explain(model, _sample(inputs, 0))
    if batched.logits.shape[1] == single.logits.shape[1]:
        torch.testing.assert_close(batched.logits[1], single.logits[0], rtol=1e-7, atol=1e-9)
    else:   # a dual encoder's outputs are the batch's texts: the explained pair's score
        torch.testing.assert_close(batched.explained_logit[1], single.explained_logit[0],
                                   rtol=1e-7, atol=1e-9)
    for stream, values in batched.relevance.items():
        other = single.relevance[stream][0]
        # an encoder-decoder's decoder stream is not padded here: whole rows compare
        padded = batched.streams[stream].kind == "tokens" and stream in PADDED
        got = values[1, real] if padded else values[1]
        torch.testing.assert_close(got, other, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(values[0], first.relevance[stream][0], rtol=1e-6, atol=1e-9)
        if padded:
            outside = values[1].clone()
            outside[real] = 0
            assert torch.equal(outside, torch.zeros_like(outside))
        positional = batched.positional[stream]
        if positional is not None:
            got = positional[1, real] if padded else positional[1]
            torch.testing.assert_close(got, single.positional[stream][0], rtol=1e-6, atol=1e-9)


def test_eager_and_sdpa_kernels_give_the_same_explanation(case):
    name, model, inputs, _ = case
    kernels = {f.library for f, _, _ in plan(model)}
    checked = [f for f, _, _ in plan(model) if f.library == "transformers" and not f.composite]
    if "transformers" not in kernels or not all(
            {"eager", "sdpa"} <= set(f.kernels_checked) for f in checked):
        pytest.skip("the family's tests compare no two kernels (timm models use their own)")
    model = model.double()
    if not torch.is_tensor(inputs):
        inputs = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
    results = {}
    for kernel in ("eager", "sdpa"):
        model.set_attn_implementation(kernel)
        results[kernel] = explain(model, inputs)
    for stream in results["eager"].relevance:
        eager, sdpa = results["eager"].relevance[stream], results["sdpa"].relevance[stream]
        scale = eager.abs().max()
        torch.testing.assert_close(sdpa / scale, eager / scale, rtol=0, atol=1e-5)
