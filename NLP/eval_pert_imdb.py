#!/usr/bin/env python3
"""IMDB token-perturbation evaluation of AttnLRP / PA-LRP (docs/protocols.md).

    python NLP/eval_pert_imdb.py --mode pert --model-path runs/imdb/llama_tiny/best --pe --single-norm
    python NLP/eval_pert_imdb.py --mode analyze
    python NLP/eval_pert_imdb.py --demo --mode pert --pe --single-norm

The fine-tuned classifier explains its predicted class on the test split (70/30 split of the
Kaggle CSV, docs/protocols.md). As in the original, every test review is scored in data order,
correctly classified or not, until --max-samples correctly classified ones have been scored
(the misclassified reviews in between stay in the curves); metrics.json records how many were
scored (num_samples) and how many of them were correct (num_correct).
"""
from __future__ import annotations

from palrp import config
from palrp.nlp.pert_driver import Sample, Task
from palrp.nlp.perturbation import IMDB
from palrp.runtime.cli import perturbation_main


def load_samples(options: None, data, tokenizer) -> list[Sample]:
    """The test split of the Kaggle CSV ``data`` (the task has no options of its own)."""
    from palrp.data.text_data import imdb_split, load_imdb_csv
    reviews, sentiments = load_imdb_csv(data)
    test_reviews, test_sentiments = imdb_split(reviews, sentiments, None, None)["test"]
    return [Sample(i, text, gold) for i, (text, gold) in enumerate(zip(test_reviews, test_sentiments))]


TASK = Task(
    protocol=IMDB, head="classifier", load_samples=load_samples,
    demo_model=config.DEMO_TEXT_DIR / "classifier", demo_data=config.DEMO_TEXT_DIR / "imdb.csv",
    default_data=config.IMDB_CSV_PATH, default_model_size="llama_tiny",
    selection="until_correct", reference_is_gold=True,
    max_samples_help="stop after this many correctly classified reviews; the misclassified "
                     "ones before it are scored too, as in the original",
)


def main(argv=None):
    """The command line (palrp.runtime.cli.perturbation_main): the metrics of a pert run, the
    runs of analyze."""
    return perturbation_main(TASK, argv)


if __name__ == "__main__":
    main()
