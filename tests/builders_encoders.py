"""Tiny random encoders (masked LMs and classifiers) and encoder-decoders for the engine's
parametrised tests (tests/test_engine.py): ``BUILDERS`` for the families of this file,
``MORE_BUILDERS`` for the masked-LM heads of BERT and RoBERTa (their first models are in
tests/family_models.py). Encoders read the first token / explain any position, so their
batches are padded on the right."""
import torch
import transformers as tf

VOCAB, PAD, MASK = 61, 0, 4
BERT_LIKE = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=48, max_position_embeddings=64, pad_token_id=PAD,
                 num_labels=3)


def perturbed(model, seed=0, std=0.25, keep=()):
    """Every weight moved far from its init (norm weights around 1, biases small), eval mode;
    parameters whose name holds a string of ``keep`` (a fixed sinusoidal table) stay."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            lowered = name.lower()
            if any(k in name for k in keep):
                continue
            if ("norm" in lowered or "layer_norm" in lowered) and p.dim() == 1:
                if name.endswith("bias"):
                    p.normal_(0.0, 0.1)
                else:
                    p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    return model.eval()


def token_ids(batch=2, seq=7, seed=1, low=5, mask_at=None):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, VOCAB, (batch, seq), generator=g)
    if mask_at is not None:
        ids[:, mask_at] = MASK
    return ids


def encoder(config_class, model_class, impl="sdpa", **config):
    def build():
        cfg = getattr(tf, config_class)(**{**BERT_LIKE, **config})
        cfg._attn_implementation = impl
        torch.manual_seed(0)
        model = perturbed(getattr(tf, model_class)(cfg))
        model.config._attn_implementation = impl
        return model, {"input_ids": token_ids()}, "right"
    return build


_ROBERTA = dict(pad_token_id=1, bos_token_id=0, max_position_embeddings=70, type_vocab_size=1)
_ELECTRA = dict(embedding_size=16)
_ALBERT = dict(embedding_size=16, num_hidden_layers=3, num_hidden_groups=1)
_DISTIL = dict(dim=32, n_layers=2, n_heads=4, hidden_dim=48, vocab_size=VOCAB,
               max_position_embeddings=64, pad_token_id=PAD, num_labels=3)

BUILDERS = {
    "xlm_roberta": [encoder("XLMRobertaConfig", "XLMRobertaForMaskedLM", **_ROBERTA),
                    encoder("XLMRobertaConfig", "XLMRobertaForSequenceClassification",
                            **_ROBERTA)],
    "electra": [encoder("ElectraConfig", "ElectraForMaskedLM", **_ELECTRA),
                encoder("ElectraConfig", "ElectraForSequenceClassification", **_ELECTRA)],
    "albert": [encoder("AlbertConfig", "AlbertForMaskedLM", **_ALBERT),
               encoder("AlbertConfig", "AlbertForSequenceClassification", **_ALBERT)],
    "distilbert": [encoder("DistilBertConfig", "DistilBertForMaskedLM", **_DISTIL),
                   encoder("DistilBertConfig", "DistilBertForSequenceClassification",
                           **_DISTIL)],
}

MORE_BUILDERS = {
    "bert": [encoder("BertConfig", "BertForMaskedLM", type_vocab_size=2)],
    "roberta": [encoder("RobertaConfig", "RobertaForMaskedLM", **_ROBERTA)],
}


def seq2seq_inputs(batch=2, source=7, target=5, seed=2):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(5, VOCAB, (batch, source), generator=g),
            "decoder_input_ids": torch.randint(5, VOCAB, (batch, target), generator=g)}


def seq2seq(config_class, model_class, impl="sdpa", keep=(), **config):
    def build():
        cfg = getattr(tf, config_class)(**config)
        cfg._attn_implementation = impl
        torch.manual_seed(0)
        model = perturbed(getattr(tf, model_class)(cfg), keep=keep)
        model.config._attn_implementation = impl
        return model, seq2seq_inputs(), "right"
    return build


T5 = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
          num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
          pad_token_id=PAD, eos_token_id=1, decoder_start_token_id=PAD)

BUILDERS["t5"] = [seq2seq("T5Config", "T5ForConditionalGeneration", **T5),
                  seq2seq("T5Config", "T5ForConditionalGeneration", **T5,
                          feed_forward_proj="gated-gelu", tie_word_embeddings=False)]

BART = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
            decoder_ffn_dim=48, max_position_embeddings=64, pad_token_id=PAD, bos_token_id=1,
            eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)

BUILDERS["bart"] = [seq2seq("BartConfig", "BartForConditionalGeneration", **BART)]
BUILDERS["mbart"] = [seq2seq("MBartConfig", "MBartForConditionalGeneration", **BART,
                             scale_embedding=True)]
BUILDERS["marian"] = [seq2seq("MarianConfig", "MarianMTModel", **BART, scale_embedding=True,
                              keep=("embed_positions",))]

# three layers: one global (rope theta 160000), two local (theta 10000, window 4 < 7 tokens)
MODERNBERT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                  num_attention_heads=4, max_position_embeddings=64, pad_token_id=PAD,
                  local_attention=4, num_labels=3, norm_bias=True)

BUILDERS["modernbert"] = [
    encoder("ModernBertConfig", "ModernBertForMaskedLM", **MODERNBERT),
    encoder("ModernBertConfig", "ModernBertForSequenceClassification", **MODERNBERT,
            classifier_pooling="mean")]

# DeBERTa-v3: relative only (c2p and p2c, shared keys, log buckets); v2: an absolute table too
DEBERTA_V3 = dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8,
                  max_relative_positions=-1, norm_rel_ebd="layer_norm", share_att_key=True,
                  position_biased_input=False, type_vocab_size=0, hidden_act="gelu")
DEBERTA_V2 = dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=-1,
                  max_relative_positions=6, share_att_key=False, position_biased_input=True,
                  type_vocab_size=0, hidden_act="gelu")

BUILDERS["deberta_v2"] = [
    encoder("DebertaV2Config", "DebertaV2ForMaskedLM", impl="eager", **DEBERTA_V3),
    encoder("DebertaV2Config", "DebertaV2ForSequenceClassification", impl="eager",
            **DEBERTA_V2)]

_GATED = dict(T5, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
BUILDERS["mt5"] = [seq2seq("MT5Config", "MT5ForConditionalGeneration", **_GATED)]
BUILDERS["umt5"] = [seq2seq("UMT5Config", "UMT5ForConditionalGeneration", **_GATED)]
