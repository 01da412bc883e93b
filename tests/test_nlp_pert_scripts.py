"""NLP/eval_pert_*.py end to end on tiny random Llamas (built here) and on the embedded default;
causal mask, padding, bad input (docs/protocols.md, section 4, issue 7)."""
import json

import pytest
import torch

from palrp import config
from conftest import make_tiny_text_models
from palrp.data import text_procedural as tp
from NLP import eval_pert_arc, eval_pert_imdb, eval_pert_wiki
from palrp.nlp.pert_driver import _perturbable_positions, _scorer
from palrp.runtime.cli import perturbation_main as main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny causal LM and a tiny classifier sharing a word-level tokenizer, plus data."""
    return make_tiny_text_models(tmp_path_factory.mktemp("nlp"))


def _argv(tiny, out, *extra):
    return ["--mode", "pert", "--device", "cpu", "--output-dir", str(out), "--max-samples", "3",
            "--max-length", "64", *map(str, extra)]


def test_imdb_pert_then_analyze(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    for flags in ([], ["--pe", "--single-norm"]):
        metrics = main(eval_pert_imdb.TASK, _argv(tiny, out, "--model-path", tiny / "clf",
                                                  "--data-path", tiny / "imdb.csv", *flags))
        # IMDB counts correctly classified reviews against --max-samples; the misclassified
        # ones before the third correct one are scored too
        assert metrics["num_correct"] == 3 and metrics["num_samples"] >= 3
        n_scored = metrics["num_samples"]
        curves = metrics["curves"]
        assert len(curves["generate_o1_evidence"]) == 11
        # the clean input is generate's last point and pruning's first
        assert curves["generate_o1_logit"][-1] == pytest.approx(curves["pruning_o3_logit"][0])
        assert curves["pruning_o3_mse"][0] == pytest.approx(0.0, abs=1e-9)
    runs = main(eval_pert_imdb.TASK, ["--mode", "analyze", "--output-dir", str(out), "--latex"])
    printed = capsys.readouterr().out
    assert {r["run"] for r in runs} == {"attnlrp", "pa_lrp-single_norm"}
    assert f"| clf | attnlrp | {n_scored} | 3 |" in printed and r"\begin{tabular}" in printed


def test_wiki_records_count_real_tokens_only(tiny, tmp_path):
    out = tmp_path / "wiki"
    main(eval_pert_wiki.TASK, _argv(tiny, out, "--model-path", tiny / "lm", "--data-path",
                                    tiny / "wiki.jsonl", "--pe", "--replacement-token", "the"))
    parts = list(out.rglob("samples.rank0.jsonl"))
    records = [json.loads(line) for line in parts[0].read_text().splitlines()]
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny / "lm")
    texts = [json.loads(line)["text"] for line in (tiny / "wiki.jsonl").read_text().splitlines()]
    for record in records:
        ids = tok(texts[record["index"]], truncation=True, max_length=64)["input_ids"]
        special = set(tok.all_special_ids)
        assert record["tokens"] == sum(i not in special for i in ids)   # no BOS, no padding


def test_perturbable_positions_skip_special_tokens(tiny):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny / "lm")
    ids = torch.tensor([tok.bos_token_id, 5, 6, tok.pad_token_id, 7])
    assert _perturbable_positions(ids, tok).tolist() == [1, 2, 4]


def test_scoring_is_causal(tiny):
    """Changing the last token changes no earlier logit, in the scorer's forward and in the
    explanation forward (the original lost the causal mask on ARC and Wikipedia)."""
    from transformers import LlamaForCausalLM

    from palrp.modules.engine import lrp
    model = LlamaForCausalLM.from_pretrained(tiny / "lm").eval()
    ids = torch.randint(5, 100, (1, 12))
    other = ids.clone()
    other[0, -1] = 4
    full = lambda x: model(input_ids=x, attention_mask=torch.ones_like(x)).logits  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(full(ids)[0, :-1], full(other)[0, :-1])
        assert not torch.allclose(_scorer(model, "causal_lm")(ids), _scorer(model, "causal_lm")(other))
        with lrp(model, "pa_lrp"):
            torch.testing.assert_close(full(ids)[0, :-1], full(other)[0, :-1])


def test_bad_inputs_give_one_line(tiny, tmp_path):
    def error(task, *args):
        with pytest.raises(SystemExit) as exc:
            main(task, _argv(tiny, tmp_path / "bad", *args))
        message = str(exc.value)
        assert message.startswith("error: ") and "\n" not in message
        return message

    # a tokenizer without unk token and no --replacement-token
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny / "lm")
    no_unk = tmp_path / "no_unk"
    from transformers import LlamaForCausalLM
    LlamaForCausalLM.from_pretrained(tiny / "lm").save_pretrained(no_unk)
    tok.unk_token = None
    tok.save_pretrained(no_unk)
    assert "no unk token; pass --replacement-token" in error(
        eval_pert_wiki.TASK, "--model-path", no_unk, "--data-path", tiny / "wiki.jsonl")
    # a data file in the wrong format
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"title": "no text field"}\n')
    assert "has no 'text' string" in error(eval_pert_wiki.TASK, "--model-path", tiny / "lm",
                                           "--data-path", wrong)
    # no correctly answered sample: a random LM on ARC items
    arc = tmp_path / "arc.jsonl"
    arc.write_text("".join(json.dumps(item) + "\n" for item in tp.arc_items(3, 0, True)))
    assert "no correctly answered sample" in error(eval_pert_arc.TASK, "--model-path", tiny / "lm",
                                                   "--data-path", arc)
    assert "add --pe" in error(eval_pert_imdb.TASK, "--model-path", tiny / "clf", "--clamp")
    # --demo names the embedded model: another model beside it is refused, not overridden
    for other in (["--model-size", "llama_tiny"], ["--model-path", str(tiny / "clf")]):
        assert "--demo uses the embedded model" in error(eval_pert_imdb.TASK, "--demo", *other)
    assert "model folder not found: " in error(eval_pert_arc.TASK, "--model-path",
                                               tmp_path / "absent")


DEMO = config.DEMO_TEXT_DIR


@pytest.mark.skipif(not (DEMO / "lm" / "config.json").is_file() or
                    not (DEMO / "classifier" / "config.json").is_file(),
                    reason="embedded text models not built")
@pytest.mark.parametrize("script", [eval_pert_imdb, eval_pert_arc, eval_pert_wiki])
def test_every_script_on_the_embedded_default(script, tmp_path, capsys):
    out = tmp_path / "demo"
    for flags in ([], ["--pe", "--single-norm"]):
        metrics = main(script.TASK, ["--demo", "--mode", "pert", "--max-samples", "4",
                                     "--device", "cpu", "--output-dir", str(out), *flags])
        counted = "num_correct" if script is eval_pert_imdb else "num_samples"
        assert metrics[counted] == 4
    runs = main(script.TASK, ["--mode", "analyze", "--output-dir", str(out)])
    assert len(runs) == 2


def test_imdb_scores_misclassified_reviews_until_the_cap_th_correct_one(tiny, tmp_path):
    """The original's IMDB loop: every test review in data order, correct or not, until
    --max-samples correctly classified ones have been scored."""
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from palrp.data.text_data import imdb_split, load_imdb_csv
    model = LlamaForSequenceClassification.from_pretrained(tiny / "clf").eval()
    tok = AutoTokenizer.from_pretrained(tiny / "clf")
    reviews, sentiments = load_imdb_csv(tiny / "imdb.csv")
    test_reviews, test_sentiments = imdb_split(reviews, sentiments, None, None)["test"]
    correct = []
    with torch.no_grad():
        for text, gold in zip(test_reviews, test_sentiments):
            ids = torch.tensor([tok(text, truncation=True, max_length=64)["input_ids"]])
            correct.append(int(model(input_ids=ids).logits.argmax()) == {"positive": 0,
                                                                          "negative": 1}[gold])
    cap = 2
    last = [i for i, c in enumerate(correct) if c][cap - 1]
    assert not all(correct[:last + 1]), "the fixture needs a misclassified review before the cap"
    out = tmp_path / "runs"
    metrics = main(eval_pert_imdb.TASK, ["--mode", "pert", "--device", "cpu", "--output-dir",
                                         str(out), "--max-samples", str(cap), "--max-length", "64",
                                         "--model-path", str(tiny / "clf"),
                                         "--data-path", str(tiny / "imdb.csv")])
    assert metrics["num_samples"] == last + 1 and metrics["num_correct"] == cap
    records = [json.loads(line) for line in
               next(out.rglob("samples.rank0.jsonl")).read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(last + 1))
    assert [r["correct"] for r in records] == correct[:last + 1]


@pytest.mark.parametrize("case, fragment", [
    ("lm_as_classifier", "has no trained LlamaForSequenceClassification head"),
    ("no_weights", "has a config but no weights"),
    ("truncated", "cannot read the weights"),
    ("bad_json", "config.json is not valid JSON"),
    ("no_tokenizer", "no usable tokenizer"),
    ("missing", "model folder not found"),
])
def test_bad_model_folders_give_one_line(tiny, tmp_path, case, fragment):
    """Issue 14: the model folders of the NLP evaluations go through the one loader; a causal
    LM passed as the IMDB classifier is refused instead of scored with a random head."""
    import shutil

    folder = tmp_path / case
    if case != "missing":
        shutil.copytree(tiny / ("lm" if case == "lm_as_classifier" else "clf"), folder)
    weights = folder / "model.safetensors"
    if case == "no_weights":
        weights.unlink()
    elif case == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif case == "bad_json":
        (folder / "config.json").write_text("{not json")
    elif case == "no_tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).unlink(missing_ok=True)
    with pytest.raises(SystemExit) as exc:
        main(eval_pert_imdb.TASK, _argv(tiny, tmp_path / "out", "--model-path", folder,
                                        "--data-path", tiny / "imdb.csv"))
    message = str(exc.value)
    assert message.startswith("error: ") and fragment in message and "\n" not in message


@pytest.mark.parametrize("task, family, head", [
    ("wiki", "gpt2", "causal"),       # absolute positions, Conv1D
    ("imdb", "qwen3", "classifier"),  # q/k norms
    ("imdb", "bert", "classifier"),   # first-token pooler, token types
])
def test_other_families_through_the_loader(tiny, tmp_path, task, family, head):
    """Any folder of a family the engine explains runs through --model-path."""
    from transformers import AutoTokenizer

    from text_reference import tiny_model

    tok = AutoTokenizer.from_pretrained(tiny / "lm")
    folder = tmp_path / family
    over = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    if head == "classifier":
        over.update(num_labels=2, id2label={0: "positive", 1: "negative"},
                    label2id={"positive": 0, "negative": 1})
    tiny_model(family, head, dtype=torch.float32, std=0.1, **over).save_pretrained(folder)
    tp.save_tokenizer(tok, folder)
    module = eval_pert_wiki if task == "wiki" else eval_pert_imdb
    data = tiny / ("wiki.jsonl" if task == "wiki" else "imdb.csv")
    metrics = main(module.TASK, _argv(tiny, tmp_path / "out", "--model-path", folder,
                                      "--data-path", data, "--pe", "--max-samples", "1"))
    assert metrics["num_samples"] >= 1
    assert len(metrics["curves"]["pruning_o3_logit"]) == 11
