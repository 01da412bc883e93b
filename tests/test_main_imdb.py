"""Fine-tuning Llama on IMDB (docs/protocols.md, section 3): true gradients, resume, checkpoints, bad input,
and the committed embedded default (docs/protocols.md, section 6)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from palrp import config
from palrp.data import text_data as td
from palrp.data import text_procedural as tp
from NLP import main_imdb
from palrp.nlp import imdb_model, imdb_state, imdb_train
from conftest import make_tiny_llama_folder

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "NLP" / "main_imdb.py"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama LM (GQA) with a word-level tokenizer, and a 60-row IMDB-style CSV."""
    return make_tiny_llama_folder(tmp_path_factory.mktemp("tiny"), rows=60)


def _batch(tiny, n=12):
    tok = imdb_model.load_tokenizer(tiny / "lm")
    reviews, sentiments = td.load_imdb_csv(tiny / "imdb.csv")
    split = imdb_train.encode_split(tok, reviews[:n], sentiments[:n], td.DEFAULT_LABEL_IDS, 64)
    ids, mask = imdb_train.collate(split.ids, tok.pad_token_id, "cpu")
    return tok, ids, mask, torch.tensor(split.labels)


def test_one_optimiser_step_lowers_the_loss(tiny):
    tok, ids, mask, labels = _batch(tiny)
    torch.manual_seed(0)
    model = imdb_model.build_model(tiny / "lm", tok, td.DEFAULT_LABEL_IDS)
    assert not model.model.embed_tokens.weight.requires_grad  # embeddings frozen
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    with torch.no_grad():
        before = float(imdb_train.compute_loss(model, ids, mask, labels))
    frozen = model.model.embed_tokens.weight.clone()
    loss = imdb_train.train_step(model, opt, sched, ids, mask, labels)
    with torch.no_grad():
        after = float(imdb_train.compute_loss(model, ids, mask, labels))
    assert loss == pytest.approx(before, rel=1e-5)
    assert after < before - 1e-3
    assert torch.equal(model.model.embed_tokens.weight, frozen)


def test_training_uses_true_stock_gradients(tiny):
    """The gradients of the training loss equal those of the stock transformers classifier
    computed by hand (last real token, cross-entropy), and finite differences (float64)."""
    from transformers import LlamaForSequenceClassification

    tok, ids, mask, labels = _batch(tiny, 6)
    torch.manual_seed(1)
    model = imdb_model.build_model(tiny / "lm", tok, td.DEFAULT_LABEL_IDS).double()
    loss = imdb_train.compute_loss(model, ids, mask, labels)
    loss.backward()
    train_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert model.model.embed_tokens.weight.grad is None

    ref = LlamaForSequenceClassification.from_pretrained(tiny / "lm", num_labels=2,
                                                         dtype=torch.float64)
    ref.load_state_dict(model.state_dict())
    hidden = ref.model(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = ref.score(hidden)[torch.arange(len(ids)), mask.sum(1) - 1]
    ref_loss = torch.nn.functional.cross_entropy(pooled, labels)
    ref_loss.backward()
    assert float(loss.detach()) == pytest.approx(float(ref_loss.detach()), rel=1e-12)
    ref_params = dict(ref.named_parameters())
    assert set(train_grads) == {n for n in ref_params if n != "model.embed_tokens.weight"}
    for n, g in train_grads.items():
        torch.testing.assert_close(g, ref_params[n].grad, rtol=1e-10, atol=1e-12)

    # directional derivative against central finite differences
    gen = torch.Generator().manual_seed(0)
    params = [p for p in model.parameters() if p.requires_grad]
    dirs = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    analytic = sum(float((p.grad * d).sum()) for p, d in zip(params, dirs))
    eps = 1e-3  # RMSNorm and RoPE compute in float32 even for a float64 model
    with torch.no_grad():
        for p, d in zip(params, dirs):
            p.add_(eps * d)
        plus = float(imdb_train.compute_loss(model, ids, mask, labels))
        for p, d in zip(params, dirs):
            p.sub_(2 * eps * d)
        minus = float(imdb_train.compute_loss(model, ids, mask, labels))
    assert (plus - minus) / (2 * eps) == pytest.approx(analytic, rel=1e-3)


def _argv(tiny, out, *extra):
    return ["--model-path", str(tiny / "lm"), "--data-path", str(tiny / "imdb.csv"),
            "--output-dir", str(out), "--max-train", "40", "--batch-size", "8",
            "--num-epochs", "2", "--lr", "3e-3", "--max-length", "64", *extra]


def test_resume_continues_at_the_next_step_with_the_same_state(tiny, tmp_path):
    full = main_imdb.main(_argv(tiny, tmp_path / "full"))
    assert [e["epoch"] for e in full["epochs"]] == [1, 2] and full["steps_per_epoch"] == 5

    class Crash(Exception):
        pass

    def crash_at_7(step, _loss):
        if step == 7:
            raise Crash

    with pytest.raises(Crash):
        main_imdb.main(_argv(tiny, tmp_path / "cut", "--save-steps", "1"), callback=crash_at_7)
    saved = torch.load(tmp_path / "cut" / imdb_state.STATE_FILE, weights_only=True)
    assert saved["step"] == 7 and len(saved["history"]) == 1
    seen = []
    resumed = main_imdb.main(_argv(tiny, tmp_path / "cut", "--save-steps", "1", "--resume"),
                      callback=lambda step, _loss: seen.append(step))
    assert seen == [8, 9, 10]

    a = torch.load(tmp_path / "full" / imdb_state.STATE_FILE, weights_only=True)
    b = torch.load(tmp_path / "cut" / imdb_state.STATE_FILE, weights_only=True)
    assert a["step"] == b["step"] == 10
    for n in a["trainable"]:
        torch.testing.assert_close(a["trainable"][n], b["trainable"][n], rtol=0, atol=0)
    assert a["scheduler"] == b["scheduler"]
    for key, st in a["optimizer"]["state"].items():
        for k in st:
            torch.testing.assert_close(st[k], b["optimizer"]["state"][key][k], rtol=0, atol=0)
    strip = lambda hist: [{k: v for k, v in e.items() if k != "seconds"} for e in hist]
    assert strip(full["epochs"]) == strip(resumed["epochs"])

    with pytest.raises(SystemExit, match="lr is 0.001 but the saved run used 0.003"):
        main_imdb.main(_argv(tiny, tmp_path / "cut", "--resume", "--lr", "1e-3"))
    with pytest.raises(SystemExit, match="no training_state.pt"):
        main_imdb.main(_argv(tiny, tmp_path / "nothing", "--resume"))


def test_best_checkpoint_lora_merge_and_eval(tiny, tmp_path, capsys):
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    out = tmp_path / "lora"
    metrics = main_imdb.main(_argv(tiny, out, "--lora", "--lora-rank", "4", "--num-epochs", "1"))
    best = out / "best"
    cfg = json.loads((best / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForSequenceClassification"]
    assert cfg["id2label"] == {"0": "positive", "1": "negative"}
    assert cfg["pad_token_id"] == AutoTokenizer.from_pretrained(best).pad_token_id
    model = LlamaForSequenceClassification.from_pretrained(best)  # plain, no peft needed
    assert not any("lora" in n for n, _ in model.named_parameters())
    saved = json.loads((out / imdb_train.METRICS_FILE).read_text())
    assert saved["best_accuracy"] == metrics["best_accuracy"] and len(saved["epochs"]) == 1
    capsys.readouterr()
    result = main_imdb.main(["--eval", "--model-path", str(best), "--data-path", str(tiny / "imdb.csv"),
                      "--output-dir", str(out), "--max-length", "64"])
    assert result["test_accuracy"] == pytest.approx(metrics["best_accuracy"])
    assert json.loads((out / "eval.json").read_text())["test_samples"] == 18
    assert "test accuracy" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="is not a 2-label sequence classifier"):
        main_imdb.main(["--eval", "--model-path", str(tiny / "lm"), "--data-path",
                 str(tiny / "imdb.csv"), "--output-dir", str(out)])


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_fine_tunes_another_family(tiny, tmp_path, family):
    """Any family the text engine explains fine-tunes through the one loader: the base LM's
    head is replaced by a new classifier head (BERT: pooler too), the rest loaded."""
    from transformers import AutoTokenizer

    from text_reference import tiny_model

    tok = AutoTokenizer.from_pretrained(tiny / "lm")
    base = tmp_path / family
    tiny_model(family, "causal", dtype=torch.float32, std=0.1, vocab_size=len(tok),
               pad_token_id=tok.pad_token_id).save_pretrained(base)
    tp.save_tokenizer(tok, base)
    out = tmp_path / "run"
    metrics = main_imdb.main(["--model-path", str(base), "--data-path", str(tiny / "imdb.csv"),
                       "--output-dir", str(out), "--max-train", "16", "--max-test", "8",
                       "--batch-size", "8", "--num-epochs", "1", "--max-length", "48"])
    assert len(metrics["epochs"]) == 1
    cfg = json.loads((out / "best" / "config.json").read_text())
    assert cfg["model_type"] == family and cfg["architectures"][0].endswith(
        "ForSequenceClassification")
    result = main_imdb.main(["--eval", "--model-path", str(out / "best"), "--data-path",
                      str(tiny / "imdb.csv"), "--max-test", "8", "--output-dir", str(out),
                      "--max-length", "48"])
    assert result["test_accuracy"] == pytest.approx(metrics["best_accuracy"])


def _bad_inputs(tiny, tmp_path):
    no_cols = tmp_path / "nocols.csv"
    no_cols.write_text("text,label\nnice,positive\n")
    bad_label = tmp_path / "badlabel.csv"
    bad_label.write_text("review,sentiment\n\"great, really\",positive\nmeh,neutral\n")
    other = tmp_path / "opt"  # a family the text engine does not explain
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "opt"}))
    lm, csv = str(tiny / "lm"), str(tiny / "imdb.csv")
    return [
        (["--model-path", lm, "--data-path", str(no_cols)], "lacks column(s) review, sentiment"),
        (["--model-path", lm, "--data-path", str(bad_label)], "unknown sentiment 'neutral'"),
        (["--model-path", str(other), "--data-path", csv],
         "explains no sequence classifier of that family (supported families: llama"),
    ]


def test_bad_input_gives_one_line_and_nonzero_exit(tiny, tmp_path):
    for args, fragment in _bad_inputs(tiny, tmp_path):
        proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--output-dir",
                               str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert "Traceback" not in proc.stderr
        assert lines[-1].startswith("error: ") and fragment in lines[-1], proc.stderr
    with pytest.raises(SystemExit, match="model folder not found"):
        main_imdb.main(["--model-path", str(tmp_path / "missing"), "--data-path",
                 str(tiny / "imdb.csv"), "--output-dir", str(tmp_path / "o")])


# --- the committed embedded default (docs/protocols.md, section 6) ----------------------------

def test_embedded_classifier_reaches_95_percent(tmp_path):
    clf = config.DEMO_TEXT_DIR / "classifier"
    result = main_imdb.main(["--eval", "--model-path", str(clf), "--data-path",
                      str(config.DEMO_TEXT_DIR / "imdb.csv"), "--output-dir", str(tmp_path)])
    assert result["test_accuracy"] >= 0.95 and result["test_samples"] == 900


def test_embedded_lm_answers_held_out_arc_items_above_chance():
    from transformers import AutoTokenizer, LlamaForCausalLM

    lm = config.DEMO_TEXT_DIR / "lm"
    model = LlamaForCausalLM.from_pretrained(lm, dtype=torch.float32).eval()
    cfg = model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
    tok = AutoTokenizer.from_pretrained(lm)
    assert tok.unk_token is not None
    items = td.load_arc(config.DEMO_TEXT_DIR / "arc_easy.jsonl")
    letters = tok.convert_tokens_to_ids(list(td.ARC_LETTERS))
    hits = 0
    with torch.no_grad():
        for it in items[:100]:
            ids = torch.tensor([tok(td.arc_prompt(it))["input_ids"]])
            hits += int(model(input_ids=ids).logits[0, -1].argmax()) == \
                letters[td.ARC_LETTERS.index(it["answerKey"])]
    assert hits >= 50  # chance is 25
    size = sum(f.stat().st_size for f in config.DEMO_TEXT_DIR.rglob("*") if f.is_file())
    assert size < 5.5e6
