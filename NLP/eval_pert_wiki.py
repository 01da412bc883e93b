#!/usr/bin/env python3
"""Wikipedia next-token perturbation evaluation of AttnLRP / PA-LRP (docs/protocols.md).

    python NLP/eval_pert_wiki.py --mode pert --model-size llama_3_8b --pe --single-norm --bf16
    python NLP/eval_pert_wiki.py --mode pert --model-path Qwen/Qwen3-0.6B --pe   # hub id, HF cache
    python NLP/eval_pert_wiki.py --mode analyze
    python NLP/eval_pert_wiki.py --demo --mode pert --pe --single-norm

Each article (the first 2,500 by default) is truncated to --max-length tokens and the model's
predicted next token is explained.
"""
from __future__ import annotations

from dataclasses import dataclass

from palrp import config
from palrp.nlp.pert_driver import Sample, Task
from palrp.nlp.perturbation import WIKI
from palrp.runtime.cli import perturbation_main, positive_int


@dataclass(frozen=True)
class WikiOptions:
    """Which articles are read (part of the run's identity)."""
    wiki_config: str = "20231101.en"
    max_articles: int = 2500


def load_samples(options: WikiOptions, data, tokenizer) -> list[Sample]:
    from palrp.data.text_data import load_wiki
    texts = load_wiki(data, config=options.wiki_config, max_articles=options.max_articles)
    return [Sample(i, text) for i, text in enumerate(texts)]


TASK = Task(
    protocol=WIKI, head="causal_lm", load_samples=load_samples,
    demo_model=config.DEMO_TEXT_DIR / "lm", demo_data=config.DEMO_TEXT_DIR / "wiki.jsonl",
    default_data="wikimedia/wikipedia", default_model_size="llama_3_8b",
    selection="first", options=WikiOptions(), default_max_samples=2500,
    max_samples_help="articles to score, the first ones in data order",
)


def add_args(parser) -> None:
    parser.add_argument("--wiki-config", default=WikiOptions.wiki_config)
    parser.add_argument("--max-articles", type=positive_int, default=WikiOptions.max_articles,
                        help=f"articles read from the data (default {WikiOptions.max_articles})")


def task_options(args) -> WikiOptions:
    return WikiOptions(wiki_config=args.wiki_config, max_articles=args.max_articles)


def main(argv=None):
    """The command line (palrp.runtime.cli.perturbation_main): the metrics of a pert run, the
    runs of analyze."""
    return perturbation_main(TASK, argv, add_task_args=add_args, task_options=task_options)


if __name__ == "__main__":
    main()
