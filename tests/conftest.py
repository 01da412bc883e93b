"""Shared fixtures: tiny DeiT models built from timm configs (nothing is downloaded)."""
import pytest
import timm
import torch

from palrp.loaders.checkpoints import load_deit

# Tiny models run faster on one thread than split over two (and CI shares its cores).
torch.set_num_threads(1)


def make_timm_vit(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=3,
                  num_classes=5, seed=0):
    """A random timm VisionTransformer in DeiT form (CLS token, no distillation)."""
    torch.manual_seed(seed)
    model = timm.create_model(
        "deit_tiny_patch16_224", pretrained=False, img_size=img_size, patch_size=patch_size,
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, num_classes=num_classes)
    # Non-trivial biases and LayerNorm affine parameters, so every rule is exercised.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_timm():
    return make_timm_vit()


@pytest.fixture(scope="session")
def tiny_deit(tiny_timm):
    return load_deit(tiny_timm.state_dict(), num_heads=3)


def make_tiny_llama_folder(root, rows: int = 45, seed: int = 0):
    """A tiny random Llama LM (GQA) saved with a word-level tokenizer in ``root/lm``, and an
    IMDB-style CSV of ``rows`` reviews at ``root/imdb.csv``."""
    import pandas as pd
    from transformers import LlamaConfig, LlamaForCausalLM

    from palrp.data import text_procedural as tp

    reviews = tp.imdb_rows(rows, seed)
    pd.DataFrame(reviews).to_csv(root / "imdb.csv", index=False)
    tok = tp.build_word_tokenizer([r["review"] for r in reviews], 256)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                      max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(root / "lm")
    tp.save_tokenizer(tok, root / "lm")
    return root


def make_tiny_text_models(root):
    """A tiny causal LM (``root/lm``) and a tiny classifier (``root/clf``, 2 labels) sharing a
    word-level tokenizer, with an IMDB-style CSV (``root/imdb.csv``, 40 rows) and 4 Wikipedia-
    style articles (``root/wiki.jsonl``); 512 positions."""
    import json

    import pandas as pd
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from palrp.data import text_procedural as tp

    rows = tp.imdb_rows(40, 1)
    pd.DataFrame(rows).to_csv(root / "imdb.csv", index=False)
    arts = tp.wiki_articles(4, 0)
    with open(root / "wiki.jsonl", "w") as stream:
        for art in arts:
            stream.write(json.dumps(art) + "\n")
    tok = tp.build_word_tokenizer([r["review"] for r in rows] + [a["text"] for a in arts], 512)
    cfg = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, intermediate_size=48, max_position_embeddings=512,
               pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**cfg)).save_pretrained(root / "lm")
    tp.save_tokenizer(tok, root / "lm")
    clf = LlamaForSequenceClassification(LlamaConfig(
        **cfg, num_labels=2, id2label={0: "positive", 1: "negative"},
        label2id={"positive": 0, "negative": 1}))
    clf.save_pretrained(root / "clf")
    tp.save_tokenizer(tok, root / "clf")
    return root


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_tiny_llama_folder(tmp_path_factory.mktemp("tiny_llama"))


def record_explain_batch(monkeypatch, module):
    """Record the normalised images each ``explain_batch`` call of a driver ``module`` receives
    (what is fed to the model), calling the real one; returns the list it fills."""
    seen = []
    original = module.explain_batch

    def recording(model, images, *args, **kwargs):
        seen.append(images.detach().cpu().clone())
        return original(model, images, *args, **kwargs)

    monkeypatch.setattr(module, "explain_batch", recording)
    return seen
