"""Loaders of the NLP data in their real formats (docs/protocols.md, sections 3 and 4), shared by
``NLP/main_imdb.py`` and ``NLP/eval_pert_*.py``.

- IMDB: the Kaggle "IMDB Dataset.csv" (columns ``review``, ``sentiment`` in {positive, negative});
  :func:`imdb_split` is the original's 70/30 split, ``train_test_split(rows, test_size=0.3,
  random_state=42)`` over the rows in file order, then the first ``max_train``/``max_test`` rows
  of each part; :func:`sentiment_label_ids` maps sentiments to class indices (docs/protocols.md, section 3).
- ARC: the ``allenai/ai2_arc`` schema (``question``, ``choices`` = {``text``, ``label``},
  ``answerKey``) from a local JSON / JSONL / parquet file or, by name, from the local
  ``datasets`` cache; :func:`arc_prompt` is the prompt of docs/protocols.md, section 4.
- Wikipedia: records with ``text`` from a local JSON / JSONL / parquet file or the cache.

Every problem with the input raises :class:`DataError` whose message is one line naming the
problem and the fix; scripts turn it into ``error: <message>`` and a non-zero exit.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

SENTIMENTS = ("positive", "negative")
# The original's mapping when the model does not name the sentiments (docs/protocols.md, section 3).
DEFAULT_LABEL_IDS = {"positive": 0, "negative": 1}
ARC_LETTERS = ("A", "B", "C", "D")
ARC_HEADER = "The following is multiple choice question (with answers).\n\n"
ARC_FOOTER = "\n\nPlease make sure to answer (A,B,C, or D)\nAnswer is:"
LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")


class DataError(ValueError):
    """Bad input data; the message is one line naming the problem and the fix."""


# --- IMDB --------------------------------------------------------------------------------

def load_imdb_csv(path: str | Path) -> tuple[list[str], list[str]]:
    """Reviews and sentiments of an IMDB CSV in the Kaggle layout, in file order.

    Quoted fields (commas, quotes, ``<br />`` tags, newlines) are read by pandas' CSV parser;
    sentiments are matched case-insensitively after stripping and returned in lower case."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"IMDB CSV not found: {path}; download 'IMDB Dataset.csv' (Kaggle, 50k "
                        f"movie reviews) or pass --data-path")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"IMDB CSV {path} is empty; expected a header 'review,sentiment' and rows")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"IMDB CSV {path} cannot be parsed ({first}); expected the Kaggle CSV "
                        f"layout with columns 'review,sentiment'")
    missing = [c for c in ("review", "sentiment") if c not in frame.columns]
    if missing:
        raise DataError(f"IMDB CSV {path} lacks column(s) {', '.join(missing)} (has: "
                        f"{', '.join(map(str, frame.columns)) or 'none'}); expected the Kaggle "
                        f"layout with columns 'review,sentiment'")
    if len(frame) == 0:
        raise DataError(f"IMDB CSV {path} has a header but no rows; expected review rows")
    sentiments = frame["sentiment"].str.strip().str.lower()
    bad = ~sentiments.isin(SENTIMENTS)
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"IMDB CSV {path}: unknown sentiment {frame['sentiment'].iloc[row]!r} in "
                        f"data row {row + 1}; allowed values are 'positive' and 'negative'")
    reviews = frame["review"].tolist()
    empty = [i for i, r in enumerate(reviews) if not r.strip()]
    if empty:
        raise DataError(f"IMDB CSV {path}: empty review in data row {empty[0] + 1}; every row "
                        f"needs review text")
    return reviews, sentiments.tolist()


def imdb_split(reviews: list[str], sentiments: list[str], max_train: int | None = 5000,
               max_test: int | None = 5000) -> dict[str, tuple[list[str], list[str]]]:
    """The original's split (docs/protocols.md, section 3): ``train_test_split`` of the rows in file order
    with ``test_size=0.3, random_state=42``, then the first ``max_train`` / ``max_test`` rows of
    each part (``None``: all). Returns ``{"train": (reviews, sentiments), "test": (...)}``."""
    from sklearn.model_selection import train_test_split

    if len(reviews) != len(sentiments):
        raise ValueError("reviews and sentiments differ in length")
    if len(reviews) < 2:
        raise DataError(f"IMDB data has {len(reviews)} row(s); the 70/30 split needs at least 2")
    train_idx, test_idx = train_test_split(list(range(len(reviews))), test_size=0.3,
                                           random_state=42)
    out = {}
    for name, idx, cap in (("train", train_idx, max_train), ("test", test_idx, max_test)):
        idx = idx if cap is None else idx[:cap]
        out[name] = ([reviews[i] for i in idx], [sentiments[i] for i in idx])
    return out


def sentiment_label_ids(id2label: dict | None) -> dict[str, int]:
    """Class index of each sentiment (docs/protocols.md, section 3): from the model config's ``id2label`` when
    it names both sentiments (case-insensitively), otherwise positive = 0, negative = 1."""
    if id2label:
        names = {str(v).strip().lower(): int(k) for k, v in id2label.items()}
        if all(s in names for s in SENTIMENTS) and len(id2label) == 2:
            return {s: names[s] for s in SENTIMENTS}
    return dict(DEFAULT_LABEL_IDS)


# --- generic local / cached records -------------------------------------------------------

def _read_local_records(path: Path, what: str) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix not in LOCAL_SUFFIXES:
        raise DataError(f"{what} file {path} has an unsupported format '{suffix or 'none'}'; use "
                        f"a .json, .jsonl or .parquet file")
    try:
        if suffix == ".parquet":
            import pandas as pd
            return pd.read_parquet(path).to_dict(orient="records")
        text = path.read_text(encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise DataError(f"{what} file {path} cannot be read ({type(exc).__name__}); expected a "
                        f"valid {suffix} file")
    if not text.strip():
        raise DataError(f"{what} file {path} is empty")
    if suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None  # the HF hub serves JSON-lines files under .json too
        if obj is not None:
            if isinstance(obj, dict) and isinstance(obj.get("data"), list):
                obj = obj["data"]
            if isinstance(obj, dict):
                obj = [obj]
            if not isinstance(obj, list):
                raise DataError(f"{what} file {path} holds a JSON {type(obj).__name__}; expected "
                                f"a list of records or JSON lines")
            return obj
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{what} file {path}: line {lineno} is not JSON ({exc.msg}); expected "
                            f"one JSON record per line")
    return records


@contextmanager
def _offline():
    """Hugging Face hub offline mode for the duration (only the local cache is read)."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _read_cached_dataset(name: str, config: str | None, splits: Iterable[str], what: str,
                         limit: int | None = None) -> list[dict]:
    try:
        import datasets
        records = []
        with _offline():
            for split in splits:
                spec = split if limit is None else f"{split}[:{limit}]"
                records += datasets.load_dataset(name, config, split=spec).to_list()
        return records
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable from the cache"
        raise DataError(f"{what}: '{name}' is neither a local file nor in the local datasets cache "
                        f"({type(exc).__name__}); pass --data-path to a local "
                        f".json/.jsonl/.parquet file, or download it with "
                        f"datasets.load_dataset('{name}', {config!r}) on a machine with internet")


def _records(source: str | Path, what: str, config: str | None, splits: Iterable[str],
             limit: int | None = None) -> list[dict]:
    path = Path(source)
    if path.is_file():
        return _read_local_records(path, what)
    if path.suffix.lower() in LOCAL_SUFFIXES or path.is_dir() or str(source).startswith((".", "/")):
        raise DataError(f"{what} file not found: {path}; pass --data-path to an existing "
                        f".json/.jsonl/.parquet file")
    return _read_cached_dataset(str(source), config, splits, what, limit)


# --- ARC ---------------------------------------------------------------------------------

def _check_arc(item, where: str) -> dict:
    if not isinstance(item, dict):
        raise DataError(f"{where} is not a record; expected the allenai/ai2_arc schema "
                        f"(question, choices{{text,label}}, answerKey)")
    missing = [k for k in ("question", "choices", "answerKey") if k not in item]
    choices = item.get("choices")
    if not missing and not (isinstance(choices, dict) and "text" in choices and "label" in choices):
        missing = ["choices.text/choices.label"]
    if missing:
        raise DataError(f"{where} lacks {', '.join(missing)}; expected the allenai/ai2_arc schema "
                        f"(question, choices{{text,label}}, answerKey)")
    text, label = list(choices["text"]), list(choices["label"])
    if len(text) != len(label) or not text:
        raise DataError(f"{where}: choices.text and choices.label differ in length or are empty")
    return {**item, "choices": {"text": [str(t) for t in text], "label": [str(x) for x in label]},
            "answerKey": str(item["answerKey"])}


def arc_is_letter_item(item: dict) -> bool:
    """Only items whose answer key and choice labels are letters A-D (docs/protocols.md, section 4)."""
    labels = item["choices"]["label"]
    return item["answerKey"] in ARC_LETTERS and all(x in ARC_LETTERS for x in labels)


def load_arc(source: str | Path, config: str = "ARC-Easy",
             splits: Iterable[str] = ("train", "test"), letters_only: bool = True) -> list[dict]:
    """ARC items from a local file or the cached ``datasets`` name ``source`` (its ``config``,
    ``splits`` concatenated), schema-checked, keeping A-D items only when ``letters_only``."""
    items = [_check_arc(r, f"ARC record {i + 1} of {source}")
             for i, r in enumerate(_records(source, "ARC", config, splits))]
    if letters_only:
        items = [it for it in items if arc_is_letter_item(it)]
    if not items:
        raise DataError(f"ARC data {source} has no item with answer key A-D; expected "
                        f"allenai/ai2_arc records")
    return items


def arc_prompt(item: dict) -> str:
    """The ARC prompt of docs/protocols.md, section 4 (the model is to continue with the answer letter)."""
    lines = [item["question"]]
    choices = item["choices"]
    lines += [f"{lab}. {txt}" for lab, txt in zip(choices["label"], choices["text"])]
    return ARC_HEADER + "\n".join(lines) + ARC_FOOTER


# --- Wikipedia ----------------------------------------------------------------------------

def load_wiki(source: str | Path, config: str = "20231101.en", max_articles: int | None = 2500
              ) -> list[str]:
    """Article texts (the ``text`` field) from a local file or the cached ``datasets`` name
    ``source`` (split ``train``), the first ``max_articles`` of them (docs/protocols.md, section 4)."""
    records = _records(source, "Wikipedia", config, ("train",), max_articles)
    texts = []
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not isinstance(r.get("text"), str):
            raise DataError(f"Wikipedia record {i + 1} of {source} has no 'text' string; expected "
                            f"records with a 'text' field")
        if r["text"].strip():
            texts.append(r["text"])
    if not texts:
        raise DataError(f"Wikipedia data {source} has no non-empty article text")
    return texts if max_articles is None else texts[:max_articles]
