"""Masked LMs and the ``position=`` argument of ``palrp.explain`` (docs/method.md, "Which
position is explained"): the default (first mask token where the mask token id is known, else
the last real token), one int, one per sample, and the refusals."""
import pytest
import torch

import palrp
from builders_encoders import MASK, encoder, token_ids

bert_mlm = encoder("BertConfig", "BertForMaskedLM", type_vocab_size=2)
bert_classifier = encoder("BertConfig", "BertForSequenceClassification", type_vocab_size=2)


def _stock(model, ids, mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_default_position_is_the_first_mask_token_when_its_id_is_given():
    model, _, _ = bert_mlm()
    ids = token_ids(seed=3)
    ids[0, [2, 5]] = MASK        # the first of two mask tokens is explained
    ids[1, 4] = MASK
    result = palrp.explain(model, {"input_ids": ids}, mask_token_id=MASK)
    assert result.positions.tolist() == [2, 4]
    stock = _stock(model, ids)
    torch.testing.assert_close(result.logits, stock[torch.arange(2), result.positions])
    # the config's mask token id is the same rule
    model.config.mask_token_id = MASK
    from_config = palrp.explain(model, {"input_ids": ids})
    assert from_config.positions.tolist() == [2, 4]
    torch.testing.assert_close(from_config.relevance["input_ids"],
                               result.relevance["input_ids"])


def test_default_position_without_a_known_mask_id_is_the_last_real_token():
    model, _, _ = bert_mlm()
    ids = token_ids()
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    result = palrp.explain(model, {"input_ids": ids, "attention_mask": mask})
    assert result.positions.tolist() == [6, 4]


def test_an_int_and_per_sample_positions():
    model, inputs, _ = bert_mlm()
    one = palrp.explain(model, inputs, position=3)
    assert one.positions.tolist() == [3, 3]
    stock = _stock(model, inputs["input_ids"])
    torch.testing.assert_close(one.logits, stock[:, 3])
    each = palrp.explain(model, inputs, position=[1, 5])
    assert each.positions.tolist() == [1, 5]
    torch.testing.assert_close(each.logits, stock[torch.arange(2), torch.tensor([1, 5])])
    # per sample == each sample alone at its position
    for n, at in enumerate((1, 5)):
        alone = palrp.explain(model, {"input_ids": inputs["input_ids"][n:n + 1]}, position=at)
        torch.testing.assert_close(each.relevance["input_ids"][n], alone.relevance["input_ids"][0])
        torch.testing.assert_close(each.positional["input_ids"][n],
                                   alone.positional["input_ids"][0])
    # another position explains another prediction
    assert not torch.allclose(one.relevance["input_ids"], each.relevance["input_ids"])
    # the text shortcut takes the same arguments
    short = palrp.explain_text(model, inputs["input_ids"], position=[1, 5])
    torch.testing.assert_close(short.relevance["input_ids"], each.relevance["input_ids"])


def test_a_causal_lm_explains_an_earlier_position_too():
    from text_families_fixtures import random_ids, tiny
    model = tiny("llama")
    ids = random_ids("llama", 2, 7)
    result = palrp.explain(model, {"input_ids": ids}, position=[2, 4])
    stock = _stock(model, ids)
    torch.testing.assert_close(result.logits, stock[torch.arange(2), torch.tensor([2, 4])])
    # the prediction at position 2 does not depend on later tokens
    assert torch.equal(result.relevance["input_ids"][0, 3:], torch.zeros(4))
    default = palrp.explain(model, {"input_ids": ids})
    assert default.positions.tolist() == [6, 6]


def test_positions_are_checked():
    model, inputs, _ = bert_mlm()
    mask = torch.ones_like(inputs["input_ids"])
    mask[1, 5:] = 0
    padded = dict(inputs, attention_mask=mask)
    with pytest.raises(ValueError, match="padding position"):
        palrp.explain(model, padded, position=6)
    with pytest.raises(ValueError, match="outside the sequence"):
        palrp.explain(model, inputs, position=7)
    with pytest.raises(ValueError, match="outside the sequence"):
        palrp.explain(model, inputs, position=-1)
    with pytest.raises(ValueError, match="batch of 2"):
        palrp.explain(model, inputs, position=[1, 2, 3])
    with pytest.raises(ValueError, match="integer"):
        palrp.explain(model, inputs, position=1.5)
    with pytest.raises(ValueError, match=r"sample\(s\) \[0, 1\] hold no mask token"):
        palrp.explain(model, inputs, mask_token_id=MASK)
    classifier, inputs, _ = bert_classifier()
    with pytest.raises(ValueError, match="one output per sample"):
        palrp.explain(classifier, inputs, position=0)
    with pytest.raises(ValueError, match="for masked LMs"):
        palrp.explain(classifier, inputs, mask_token_id=MASK)


def _seq2seq(name, index=0):
    from builders_encoders import BUILDERS
    return BUILDERS[name][index]()


@pytest.mark.parametrize("name", ["t5", "bart", "mbart", "marian"])
def test_encoder_decoder_streams_and_a_right_padded_decoder_prefix(name):
    """Two streams, each with its positional sink; the next decoder token of a right-padded
    decoder prefix equals that of the prefix alone; position= indexes the decoder prefix."""
    model, inputs, _ = _seq2seq(name)
    model = model.double()
    result = palrp.explain(model, inputs)
    assert set(result.streams) == {"input_ids", "decoder_input_ids"}
    for stream in result.streams.values():
        assert stream.sinks.shape[:2] == (2, len(stream.labels)) and len(stream.labels) >= 1
    assert result.positions.tolist() == [4, 4]
    dec = inputs["decoder_input_ids"]
    dmask = torch.ones_like(dec)
    dmask[1, 3:] = 0
    padded = palrp.explain(model, dict(inputs, decoder_attention_mask=dmask))
    assert padded.positions.tolist() == [4, 2]
    alone = palrp.explain(model, {"input_ids": inputs["input_ids"][1:2],
                                  "decoder_input_ids": dec[1:2, :3]})
    torch.testing.assert_close(padded.logits[1], alone.logits[0])
    for key, real in (("input_ids", slice(None)), ("decoder_input_ids", slice(0, 3))):
        torch.testing.assert_close(padded.relevance[key][1, real], alone.relevance[key][0])
        torch.testing.assert_close(padded.positional[key][1, real], alone.positional[key][0])
        assert torch.equal(padded.relevance["decoder_input_ids"][1, 3:], torch.zeros(2,
                           dtype=torch.float64))
    earlier = palrp.explain(model, inputs, position=[1, 3])
    with torch.no_grad():
        stock = model(**inputs).logits
    torch.testing.assert_close(earlier.logits, stock[torch.arange(2), torch.tensor([1, 3])])
    # the prediction after decoder token 1 does not read the later decoder tokens
    assert torch.equal(earlier.relevance["decoder_input_ids"][0, 2:], torch.zeros(3,
                       dtype=torch.float64))
    baseline = palrp.explain(model, inputs, method="attn_lrp")
    assert baseline.positional == {"input_ids": None, "decoder_input_ids": None}
    with pytest.raises(ValueError, match="decoder_input_ids"):
        palrp.explain(model, {"input_ids": inputs["input_ids"]})


def test_marian_table_is_the_fixed_sinusoid_and_a_positional_source():
    model, inputs, _ = _seq2seq("marian")
    table = model.model.encoder.embed_positions.weight
    assert not table.requires_grad
    dim = table.shape[1]
    angle = 3 / 10000 ** (2 * (torch.arange(dim // 2)) / dim)   # position 3, sin half
    torch.testing.assert_close(table[3, :dim // 2], torch.sin(angle), rtol=1e-5, atol=1e-6)
    result = palrp.explain(model, inputs)
    assert result.streams["input_ids"].labels == ("embed_positions",)
    assert result.streams["decoder_input_ids"].labels == ("decoder_embed_positions",)
    assert result.positional["decoder_input_ids"].abs().sum() > 0


def test_modernbert_global_and_local_layers_are_sources_of_their_own():
    """One (cos, sin) pair per layer, as each layer receives it: the global layer's (theta
    160000) differs from the local layers' (theta 10000); every pair carries relevance."""
    from builders_encoders import BUILDERS
    from palrp.modules.engine import lrp
    model, inputs, _ = BUILDERS["modernbert"][0]()
    result = palrp.explain(model, inputs)
    stream = result.streams["input_ids"]
    assert stream.labels == ("cos_0", "sin_0", "cos_1", "sin_1", "cos_2", "sin_2")
    assert bool((stream.sinks.abs().sum(-1) > 0).all())
    assert model.config.layer_types == ["full_attention", "sliding_attention",
                                        "sliding_attention"]
    with lrp(model) as state:
        with torch.no_grad():
            model(**inputs)
        cos = state.parts[0].source.leaves()[0::2]
    assert not torch.allclose(cos[0], cos[1])
    torch.testing.assert_close(cos[1], cos[2])


def test_deberta_relative_terms_split_conserves_relevance():
    """Uniform rule on c2p / p2c (DeBERTa-v3: relative terms only): in one layer with every
    bias zeroed (the linears and norms then conserve, and the softmax sees the same relevance
    under both methods), tokens + positions under PA-LRP carry exactly what the tokens carry
    under AttnLRP, and the positional share is not zero."""
    from builders_encoders import DEBERTA_V3
    model, inputs, _ = encoder("DebertaV2Config", "DebertaV2ForMaskedLM", impl="eager",
                               **DEBERTA_V3, num_hidden_layers=1)()
    model = model.double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    pa = palrp.explain(model, inputs)
    attn = palrp.explain(model, inputs, pa.target, "attn_lrp")
    stream = pa.streams["input_ids"]
    assert stream.labels == ("rel_0",)
    total = pa.relevance["input_ids"].sum(-1) + stream.sinks.sum((1, 2))
    torch.testing.assert_close(total, attn.relevance["input_ids"].sum(-1), rtol=1e-9,
                               atol=1e-9)
    assert bool((stream.sinks.abs().sum((1, 2)) > 1e-3 * total.abs()).all())


def test_deberta_v2_absolute_table_is_a_second_source():
    from builders_encoders import BUILDERS
    model, inputs, _ = BUILDERS["deberta_v2"][1]()
    stream = palrp.explain(model, inputs).streams["input_ids"]
    assert stream.labels == ("position_embeddings", "rel_0", "rel_1")
    assert bool((stream.sinks.abs().sum(-1) > 0).all())


@pytest.mark.parametrize("name", ["t5", "bart", "modernbert", "deberta_v2"])
def test_gradient_checkpointing_changes_no_number(name):
    """The relative-position leaves are made once per pass, not again when a checkpointed layer
    is recomputed in the backward."""
    from builders_encoders import BUILDERS
    model, inputs, _ = BUILDERS[name][0]()
    plain = palrp.explain(model, inputs)
    again = palrp.explain(model, inputs, gradient_checkpointing=True)
    for stream in plain.streams:
        torch.testing.assert_close(again.relevance[stream], plain.relevance[stream])
        torch.testing.assert_close(again.streams[stream].sinks, plain.streams[stream].sinks)


@pytest.mark.parametrize("name, index", [("t5", 0), ("t5", 1), ("mt5", 0)])
def test_t5_equals_the_explicit_reference(name, index):
    """The engine's T5 (v1.0 ReLU, tied head; v1.1 gated GELU, untied) and mT5 equal the slow
    explicit float64 reference of tests/t5_reference.py: tokens of both streams and the
    relative bias's relevance per key position."""
    import t5_reference
    from builders_encoders import BUILDERS
    model, inputs, _ = BUILDERS[name][index]()
    model = model.double()
    model.set_attn_implementation("eager")
    result = palrp.explain(model, inputs)
    enc, dec, enc_bias, dec_bias, logits = t5_reference.explain(
        model, inputs["input_ids"], inputs["decoder_input_ids"])
    torch.testing.assert_close(result.logits, logits, rtol=1e-10, atol=1e-10)
    for got, want in ((result.relevance["input_ids"], enc),
                      (result.relevance["decoder_input_ids"], dec),
                      (result.positional["input_ids"], enc_bias),
                      (result.positional["decoder_input_ids"], dec_bias)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert enc_bias.abs().sum() > 0 and dec_bias.abs().sum() > 0


def test_umt5_every_layer_bias_is_a_source_of_its_own():
    from builders_encoders import BUILDERS
    model, inputs, _ = BUILDERS["umt5"][0]()
    result = palrp.explain(model, inputs)
    for stream in ("input_ids", "decoder_input_ids"):
        record = result.streams[stream]
        assert record.labels == ("relative_bias_0", "relative_bias_1")
        assert bool((record.sinks.abs().sum(-1) > 0).all())
