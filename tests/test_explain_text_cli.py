"""explain_text.py end to end on tiny Llama checkpoints saved here (no downloads)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification,
                          PreTrainedTokenizerFast)

import explain_text as cli

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["[PAD]", "[UNK]", "<s>", "</s>"] + (
    "the a movie film was is great bad awful plot acting and but not really good story "
    "<b> & ' \" ok").split()


def _tokenizer():
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   bos_token="<s>", eos_token="</s>")


def _save(path, cls, **extra):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=48,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64, pad_token_id=0, **extra)
    cls(cfg).save_pretrained(path)
    _tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "causal": _save(root / "causal", LlamaForCausalLM),
        "classifier": _save(root / "clf", LlamaForSequenceClassification, num_labels=2,
                            id2label={0: "positive", 1: "negative"},
                            label2id={"positive": 0, "negative": 1}),
    }


def test_causal_lm_end_to_end(checkpoints, tmp_path, capsys):
    cli.main([str(checkpoints["causal"]), "--text", "the movie was <b> & 'great'",
              "--target", "good", "--output-dir", str(tmp_path), "--top-k", "3"])
    out = capsys.readouterr().out
    good = WORDS.index("good")
    assert f"next token 'good' (id {good})" in out
    assert out.count("\n   ") >= 3  # three ranked rows
    data = json.loads((tmp_path / "explanation.json").read_text())
    assert data["tokens"] == ["the", "movie", "was", "<b>", "&", "[UNK]"]  # pieces as spelled
    assert set(data["maps"]) == {"AttnLRP", "PA-LRP", "PE-only"}
    assert max(abs(v) for v in data["maps"]["PA-LRP"]) == pytest.approx(1.0)
    page = (tmp_path / "explanation.html").read_text()
    assert "&lt;b&gt;" in page and "&amp;" in page and "<b>" not in page.split("<body>")[1]
    assert (tmp_path / "explanation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_printed_table_has_one_stated_scale(checkpoints, tmp_path, capsys):
    cli.main([str(checkpoints["causal"]), "--text", "the movie was really good but the plot",
              "--output-dir", str(tmp_path), "--top-k", "50"])
    out = capsys.readouterr().out
    assert "scale: every column is its map divided by the map's max |relevance|" in out
    data = json.loads((tmp_path / "explanation.json").read_text())
    lines = out.split("rank   pos")[1].strip().splitlines()[1:1 + len(data["tokens"])]
    table = np.array([[float(v) for v in line.split()[-3:]] for line in lines])  # all tokens
    assert table.shape == (len(data["tokens"]), 3)
    np.testing.assert_allclose(np.abs(table).max(axis=0), 1.0)   # PA-LRP, AttnLRP, PE-only
    raw = np.array(data["maps"]["AttnLRP"])
    np.testing.assert_allclose(table[:, 1], [raw[i] / np.abs(raw).max() for i in
                                             [int(line.split()[1]) for line in lines]], atol=1e-4)


def test_classifier_file_label_bf16_checkpointing(checkpoints, tmp_path, capsys):
    text = tmp_path / "review.txt"
    text.write_text("a really bad plot but good acting\n", encoding="utf-8")
    cli.main([str(checkpoints["classifier"]), "--file", str(text), "--target", "negative",
              "--bf16", "--gradient-checkpointing", "--device", "cpu",
              "--output-dir", str(tmp_path / "out")])
    assert "class 1 (negative)" in capsys.readouterr().out
    assert (tmp_path / "out" / "review.html").is_file()
    assert (tmp_path / "out" / "review.png").is_file()


@pytest.mark.parametrize("case, message", [
    ("no_config", "has no config.json"),
    ("missing", "model folder not found: "),
    ("other_model", "explains no causal LM of that family (supported families: llama"),
    ("untrained_head", "has no trained LlamaForSequenceClassification head"),
    ("vocab", "is outside the model's"),
    ("class", "target 2 is outside the model's 2 classes (0..1)"),
    ("empty", "the text is empty"),
    ("multi_piece", "not one token"),
])
def test_bad_input_one_line(checkpoints, tmp_path, case, message):
    args = {
        "no_config": [str(tmp_path), "--text", "the movie"],
        "missing": [str(tmp_path / "absent"), "--text", "the movie"],
        "other_model": [str(tmp_path), "--text", "the movie"],
        "vocab": [str(checkpoints["causal"]), "--text", "the movie", "--target", "999"],
        "class": [str(checkpoints["classifier"]), "--text", "the movie", "--target", "2"],
        "empty": [str(checkpoints["causal"]), "--text", "  \n "],
        "multi_piece": [str(checkpoints["causal"]), "--text", "the movie", "--target", "the movie"],
        "untrained_head": [str(tmp_path / "lm"), "--text", "the movie"],
    }[case]
    if case == "other_model":  # a family the text engine does not explain
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "opt"}))
    if case == "untrained_head":  # a causal LM that claims to be a classifier
        shutil.copytree(checkpoints["causal"], tmp_path / "lm")
        cfg = json.loads((tmp_path / "lm" / "config.json").read_text())
        cfg["architectures"] = ["LlamaForSequenceClassification"]
        (tmp_path / "lm" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit) as exc:
        cli.main(args + ["--output-dir", str(tmp_path / "out")])
    text = str(exc.value)
    assert text.startswith("error: ") and message in text and "\n" not in text


def test_cli_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, "explain_text.py", str(tmp_path), "--text", "x"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "has no config.json" in proc.stderr


def test_device_map_auto_gives_the_same_maps(checkpoints, tmp_path, capsys):
    """``--device-map auto`` (accelerate's placement; CPU-only here) explains like ``.to()``."""
    args = [str(checkpoints["causal"]), "--text", "the movie was good", "--device", "cpu"]
    cli.main(args + ["--output-dir", str(tmp_path / "plain")])
    cli.main(args + ["--output-dir", str(tmp_path / "mapped"), "--device-map", "auto"])
    plain = json.loads((tmp_path / "plain" / "explanation.json").read_text())
    mapped = json.loads((tmp_path / "mapped" / "explanation.json").read_text())
    for name in plain["maps"]:
        assert mapped["maps"][name] == pytest.approx(plain["maps"][name], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("family, head", [("gpt2", "causal"), ("qwen3", "classifier"),
                                          ("bert", "classifier")])
def test_other_families_end_to_end(tmp_path, capsys, family, head):
    """Any folder of a family the text engine explains (palrp/loaders/text_models.py)."""
    from text_reference import tiny_model

    over = dict(vocab_size=len(WORDS), pad_token_id=0)
    if head == "classifier":
        over.update(num_labels=2, id2label={0: "positive", 1: "negative"},
                    label2id={"positive": 0, "negative": 1})
    tiny_model(family, head, dtype=torch.float32, std=0.1, **over).save_pretrained(tmp_path / "m")
    _tokenizer().save_pretrained(tmp_path / "m")
    cli.main([str(tmp_path / "m"), "--text", "the movie was really good", "--device", "cpu",
              "--output-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert ("next token" if head == "causal" else "class ") in out
    data = json.loads((tmp_path / "out" / "explanation.json").read_text())
    assert len(data["maps"]["PA-LRP"]) == len(data["tokens"]) == 5
    assert max(abs(v) for v in data["maps"]["PA-LRP"]) == pytest.approx(1.0)
