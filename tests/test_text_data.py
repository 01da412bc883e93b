"""Procedural text generators and the NLP loaders (docs/protocols.md, sections 3, 4 and 6)."""
import csv
import json

import pytest

from palrp.data import text_data as td
from palrp.data import text_procedural as tp


# --- generators ----------------------------------------------------------------------------

def test_generators_are_deterministic_for_a_seed():
    assert tp.imdb_rows(40, 3) == tp.imdb_rows(40, 3)
    assert tp.imdb_rows(40, 3) != tp.imdb_rows(40, 4)
    assert tp.arc_items(30, 3, held_out=True) == tp.arc_items(30, 3, held_out=True)
    assert tp.arc_items(30, 3, held_out=False) != tp.arc_items(30, 4, held_out=False)
    assert tp.wiki_articles(20, 3) == tp.wiki_articles(20, 3)
    assert tp.wiki_articles(20, 3) != tp.wiki_articles(20, 4)


def test_review_label_is_carried_by_the_evidence_words():
    rows = tp.imdb_rows(300, 0)
    assert {r["sentiment"] for r in rows} == {"positive", "negative"}
    assert sum(r["sentiment"] == "positive" for r in rows) == 150
    word_sets = [tp.POSITIVE_WORDS, tp.NEGATIVE_WORDS, tp.NEGATIONS, tp.DISTRACTOR_WORDS]
    assert sum(map(len, word_sets)) == len(set().union(*word_sets))
    for r in rows:
        score = tp.review_score(r["review"])
        assert (score > 0) == (r["sentiment"] == "positive") and score != 0
        support = tp.supporting_words(r["review"], r["sentiment"])
        against = tp.supporting_words(r["review"], "negative" if r["sentiment"] == "positive"
                                      else "positive")
        assert len(support) == len(tp.words(r["review"]))
        assert sum(support) > sum(against) >= 0
    # a negation turns the opposite word into evidence for the label
    text = "The plot was not boring. The acting was superb."
    roles = dict(tp.word_roles(text))
    assert roles["not"] == "negation" and roles["boring"] == "negative" and roles["The"] == "filler"
    flags = tp.supporting_words(text, "positive")
    assert [w for w, f in zip(tp.words(text), flags) if f] == ["not", "boring", "superb"]
    assert tp.review_score(text) == 2


def test_arc_items_are_answerable_from_the_stated_facts():
    train = tp.arc_items(400, 1, held_out=False)
    test = tp.arc_items(200, 2, held_out=True)
    keys = lambda items: {(it["question"], frozenset(it["choices"]["text"])) for it in items}
    assert not keys(train) & keys(test)
    assert len({(it["question"], tuple(it["choices"]["text"])) for it in test}) == len(test)
    letters = set()
    for it in train + test:
        assert it["choices"]["label"] == ["A", "B", "C", "D"]
        answer = it["choices"]["text"][it["choices"]["label"].index(it["answerKey"])]
        q = it["question"]
        subject = q.rstrip("?").split()[-1] if not q.startswith("Where") else q.split()[3]
        if q.startswith("Which"):
            assert tp.KIND_OF[answer] == subject
            assert sum(tp.KIND_OF[c] == subject for c in it["choices"]["text"]) == 1
        elif q.startswith("What kind"):
            assert tp.KIND_OF[subject] == answer
        elif q.startswith("Where"):
            assert tp.HABITAT[subject] == answer
        else:
            assert tp.COLOR[subject] == answer
        letters.add(it["answerKey"])
    assert letters == {"A", "B", "C", "D"}


def test_wiki_articles_state_the_facts():
    arts = tp.wiki_articles(60, 5)
    assert all(set(a) == {"id", "title", "text"} and a["text"].startswith(a["title"]) for a in arts)
    text = " ".join(a["text"] for a in tp.wiki_articles(400, 5))
    assert "The heron is a bird." in text and "The heron lives in the marsh." in text
    # cut articles stop just before a fact word
    facts = {**tp.KIND_OF, **tp.HABITAT, **tp.COLOR, **tp.USE}
    for a in tp.wiki_articles(100, 6, cut=True):
        subject = [w for w in tp.words(a["text"].split("\n")[-1]) if w in facts][-1]
        assert a["next_word"] in (facts[subject], tp.KIND_OF[subject]), a["text"]
        assert not a["text"].endswith(".")


def test_word_tokenizer_keeps_letters_newlines_and_unk(tmp_path):
    from transformers import AutoTokenizer

    tok = tp.build_word_tokenizer(["The heron is a bird.\nAnswer is: B"], 64)
    tp.save_tokenizer(tok, tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = loaded("The zebra is a bird.\nAnswer is: B")["input_ids"]
    assert loaded.convert_ids_to_tokens(ids) == ["<s>", "The", "<unk>", "is", "a", "bird", ".",
                                                 "\n", "Answer", "is", ":", "B"]
    assert (loaded.unk_token, loaded.pad_token, loaded.eos_token) == ("<unk>", "<pad>", "</s>")
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == \
        "PreTrainedTokenizerFast"


# --- IMDB CSV -----------------------------------------------------------------------------

KAGGLE_ROWS = [
    ("One of the other reviewers has mentioned that after watching just 1 Oz episode you'll be "
     "hooked. They are right, as this is exactly what happened with me.<br /><br />The first "
     "thing that struck me about Oz was its brutality", "positive"),
    ('Basically there\'s a family where a little boy (Jake) thinks there\'s a zombie in his '
     'closet & his parents are fighting all the time.<br /><br />"Awful", he said.', "negative"),
    ("A wonderful little production.\nThe filming technique is very unassuming, old-time-BBC "
     "fashion", "positive"),
]


def _write_kaggle(path, rows, header=("review", "sentiment")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        w.writerow(header)
        w.writerows(rows)


def test_csv_loader_reads_the_exact_kaggle_layout(tmp_path):
    path = tmp_path / "IMDB Dataset.csv"
    _write_kaggle(path, KAGGLE_ROWS)
    raw = path.read_text()
    assert raw.startswith("review,sentiment\n") and '"One of the other reviewers' in raw
    reviews, sentiments = td.load_imdb_csv(path)
    assert reviews == [r for r, _ in KAGGLE_ROWS]
    assert sentiments == ["positive", "negative", "positive"]


@pytest.mark.parametrize("content, fragment", [
    ("", "is empty"),
    ("review,sentiment\n", "no rows"),
    ("text,label\nnice film,positive\n", "lacks column(s) review, sentiment"),
    ("review,sentiment\nnice film,positive\nbad film,neutral\n",
     "unknown sentiment 'neutral' in data row 2"),
    ("review,sentiment\n ,positive\n", "empty review in data row 1"),
])
def test_csv_loader_bad_input(tmp_path, content, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(td.DataError) as err:
        td.load_imdb_csv(path)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(td.DataError, match="not found"):
        td.load_imdb_csv(tmp_path / "missing.csv")


def test_split_is_the_original_train_test_split():
    from sklearn.model_selection import train_test_split

    rows = tp.imdb_rows(50, 1)
    reviews, sentiments = [r["review"] for r in rows], [r["sentiment"] for r in rows]
    train_rows, test_rows = train_test_split(rows, test_size=0.3, random_state=42)
    split = td.imdb_split(reviews, sentiments, None, None)
    assert split["train"][0] == [r["review"] for r in train_rows]
    assert split["test"][1] == [r["sentiment"] for r in test_rows]
    assert len(split["train"][0]) == 35 and len(split["test"][0]) == 15
    capped = td.imdb_split(reviews, sentiments, 10, 4)
    assert capped["train"][0] == split["train"][0][:10]
    assert capped["test"][0] == split["test"][0][:4]


def test_sentiment_label_ids():
    assert td.sentiment_label_ids(None) == {"positive": 0, "negative": 1}
    assert td.sentiment_label_ids({0: "LABEL_0", 1: "LABEL_1"}) == {"positive": 0, "negative": 1}
    assert td.sentiment_label_ids({"0": "NEGATIVE", "1": "Positive"}) == {"positive": 1,
                                                                          "negative": 0}


# --- ARC and Wikipedia ----------------------------------------------------------------------

def test_arc_loader_formats_and_prompt(tmp_path):
    items = tp.arc_items(6, 1, held_out=True)
    odd = {"id": "x", "question": "Pick one?", "choices": {"text": ["a", "b"], "label": ["1", "2"]},
           "answerKey": "1"}
    jsonl = tmp_path / "arc.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in items + [odd]) + "\n")
    as_json = tmp_path / "arc.json"
    as_json.write_text(json.dumps(items))
    import pandas as pd
    parquet = tmp_path / "arc.parquet"
    pd.DataFrame(items).to_parquet(parquet)
    for path in (jsonl, as_json, parquet):
        loaded = td.load_arc(path)
        assert [it["answerKey"] for it in loaded] == [it["answerKey"] for it in items]
        assert [it["choices"]["text"] for it in loaded] == [it["choices"]["text"] for it in items]
    assert len(td.load_arc(jsonl, letters_only=False)) == 7
    it = {"question": "Q?", "choices": {"text": ["x", "y", "z"], "label": ["A", "B", "C"]},
          "answerKey": "C"}
    assert td.arc_prompt(it) == ("The following is multiple choice question (with answers).\n\n"
                                 "Q?\nA. x\nB. y\nC. z\n\nPlease make sure to answer (A,B,C, or D)"
                                 "\nAnswer is:")


def test_arc_and_wiki_bad_input(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?", "answerKey": "A"}) + "\n")
    with pytest.raises(td.DataError, match="lacks choices"):
        td.load_arc(bad)
    txt = tmp_path / "arc.txt"
    txt.write_text("hello")
    with pytest.raises(td.DataError, match="unsupported format"):
        td.load_arc(txt)
    with pytest.raises(td.DataError, match="not found"):
        td.load_arc(tmp_path / "missing.jsonl")
    notjson = tmp_path / "w.jsonl"
    notjson.write_text("{not json}\n")
    with pytest.raises(td.DataError, match="line 1 is not JSON"):
        td.load_wiki(notjson)
    notext = tmp_path / "w2.jsonl"
    notext.write_text(json.dumps({"title": "x"}) + "\n")
    with pytest.raises(td.DataError, match="no 'text'"):
        td.load_wiki(notext)


def test_wiki_loader(tmp_path):
    arts = tp.wiki_articles(5, 2)
    path = tmp_path / "wiki.jsonl"
    path.write_text("\n".join(json.dumps(a) for a in arts))
    assert td.load_wiki(path) == [a["text"] for a in arts]
    assert td.load_wiki(path, max_articles=2) == [a["text"] for a in arts[:2]]


def test_dataset_name_outside_the_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))
    with pytest.raises(td.DataError, match="neither a local file nor in the local datasets cache"):
        td.load_arc("someone/no_such_arc_dataset")
