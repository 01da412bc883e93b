"""Shared fixtures: tiny DeiT models built from timm configs (nothing is downloaded)."""
from dataclasses import dataclass

import pytest
import timm
import torch

from palrp.loaders.checkpoints import load_deit
from palrp.modules.positional import per_unit_seed

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


@dataclass
class UnitSeedImage:
    """An image :class:`palrp.modules.explanation.Explanation` re-expressed for the paper's
    vision seed ``R(target) = 1`` (the engine seeds ``R(target) = logit``; every rule is linear
    in the relevance, so each sample divided by its explained logit is exactly what the float64
    references of tests/lrp_reference.py compute). Fields, all divided by the logit:

    - ``pixel`` (B, H, W): ``stream.pixels``;
    - ``positional`` (B, K, prefix + N): ``stream.sinks``, per sink, prefix tokens first;
    - ``pe_patch`` (B, N): ``stream.positional`` (sinks summed, patch tokens only);
    - ``pe`` (B, H, W): ``stream.positional_pixels()``;
    - ``total_relevance`` (B,): pixel plus patch positional relevance.
    """

    pixel: torch.Tensor
    positional: torch.Tensor | None
    pe_patch: torch.Tensor | None
    pe: torch.Tensor | None

    @property
    def total_relevance(self) -> torch.Tensor:
        return self.pixel.flatten(1).sum(1) + self.pe_patch.sum(1)


def unit(values, result):
    """``values`` (B, ...) of ``result`` (seeded ``R(target) = logit``) for ``R(target) = 1``."""
    return per_unit_seed(values, result.explained_logit)


def unit_seed(result, stream="pixel_values") -> UnitSeedImage:
    """The ``R(target) = 1`` view of ``result``'s image stream (see :class:`UnitSeedImage`)."""
    record = result.streams[stream]
    scaled = lambda values: None if values is None else unit(values, result)  # noqa: E731
    return UnitSeedImage(pixel=scaled(record.pixels), positional=scaled(record.sinks),
                         pe_patch=scaled(record.positional),
                         pe=scaled(record.positional_pixels()))


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
