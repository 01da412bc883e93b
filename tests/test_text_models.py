"""The one text-model loader (palrp/loaders/text_models.py): every family folder the engine explains
loads with the asked head; every folder that would give a wrong or random model is refused
with one line before long work."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import OPTConfig, OPTForCausalLM

from palrp.loaders.text_models import (ModelFolderError, explainable_heads, load_text_model,
                                 resolve_dtype)
from test_explain_text_cli import _tokenizer
from text_reference import tiny_model


def _save(path, family="llama", head="causal", tokenizer=True):
    model = tiny_model(family, head, dtype=torch.float32)
    model.save_pretrained(path)
    if tokenizer:
        _tokenizer().save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_models")
    models = {"lm": _save(root / "lm"), "clf": _save(root / "clf", head="classifier")}
    return root, models


def _refused(path, match, **kw):
    with pytest.raises(ModelFolderError, match=match) as info:
        load_text_model(path, **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_loads_the_saved_model_with_its_head(folders):
    root, models = folders
    ids = torch.tensor([[3, 5, 7, 9]])
    for name, head, cls in (("lm", "causal_lm", "ForCausalLM"),
                            ("clf", "classifier", "ForSequenceClassification")):
        loaded = load_text_model(root / name, device="cpu")
        assert loaded.head == head and type(loaded.model).__name__.endswith(cls)
        assert loaded.model.dtype == torch.float32 and not loaded.model.training
        assert loaded.tokenizer.unk_token == "[UNK]"
        with torch.no_grad():
            torch.testing.assert_close(loaded.model(ids).logits, models[name](ids).logits,
                                       rtol=0, atol=0)
        asked = load_text_model(root / name, head, device="cpu", dtype="bfloat16")
        assert asked.model.dtype == torch.bfloat16 and asked.head == head


def test_dtype_one_way():
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype(None, torch.device("cuda", 0)) == torch.bfloat16
    assert resolve_dtype("float64", "cuda") == torch.float64
    assert resolve_dtype(torch.float16, "cpu") == torch.float16
    with pytest.raises(ModelFolderError, match="unknown dtype"):
        resolve_dtype("int8", "cpu")


def test_device_map_places_the_model(folders):
    root, models = folders
    loaded = load_text_model(root / "lm", device_map="auto")
    assert loaded.model.get_input_embeddings().weight.device.type in ("cpu", "cuda")


def test_missing_head_weights_are_refused(folders):
    """Issue 14 item 3: a causal LM passed as the classifier would get a random score head."""
    root, _ = folders
    msg = _refused(root / "lm", "no trained LlamaForSequenceClassification head",
                   head="classifier")
    assert "score.weight" in msg and "NLP/main_imdb.py" in msg
    _refused(root / "clf", "lm_head.weight", head="causal_lm")
    # fine-tuning asks for a new head: then (only) the head may be missing
    new = load_text_model(root / "lm", "classifier", new_head=True, num_labels=2, device="cpu")
    assert new.model.config.num_labels == 2


def test_missing_body_weights_are_refused_even_for_a_new_head(folders, tmp_path):
    root, _ = folders
    shutil.copytree(root / "lm", tmp_path / "lm")
    weights = load_file(tmp_path / "lm" / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, tmp_path / "lm" / "model.safetensors", metadata={"format": "pt"})
    for kw in ({}, {"head": "classifier", "new_head": True}):
        _refused(tmp_path / "lm", "1 missing: model.layers.1.mlp.up_proj.weight", **kw)


def test_bad_folders_are_refused_with_one_line(folders, tmp_path):
    root, _ = folders
    assert "not found" in _refused(tmp_path / "nowhere", "model folder not found")
    _refused(root / "lm" / "config.json", "is a file, not a model folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(empty, "has no config.json")

    def copy(name):
        dst = tmp_path / name
        shutil.copytree(root / "lm", dst)
        return dst

    bad = copy("badjson")
    (bad / "config.json").write_text("{\"model_type\": \"llama\",")
    _refused(bad, r"config.json is not valid JSON \(line 1")
    typeless = copy("typeless")
    (typeless / "config.json").write_text(json.dumps({"hidden_size": 4}))
    _refused(typeless, "names no model_type")
    unknown = copy("unknown")
    cfg = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps(dict(cfg, model_type="no_such_model")))
    _refused(unknown, "transformers cannot read")
    nowt = copy("noweights")
    (nowt / "model.safetensors").unlink()
    _refused(nowt, "no weights")
    trunc = copy("truncated")
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    _refused(trunc, "cannot read the weights .* truncated")
    notok = tmp_path / "notok"
    _save(notok, tokenizer=False)
    _refused(notok, "no usable tokenizer")


def test_unsupported_family_names_the_supported_ones(tmp_path):
    cfg = OPTConfig(vocab_size=61, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                    num_attention_heads=2, max_position_embeddings=32, word_embed_proj_dim=16)
    OPTForCausalLM(cfg).save_pretrained(tmp_path / "opt")
    _tokenizer().save_pretrained(tmp_path / "opt")
    families = dict.fromkeys(f for _, f in explainable_heads().values())
    msg = _refused(tmp_path / "opt", "OPTForCausalLM, which the text engine does not explain")
    assert all(name in msg for name in families) and "llama" in msg
    _refused(tmp_path / "opt", "explains no sequence classifier of that family",
             head="classifier")
