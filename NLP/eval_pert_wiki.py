#!/usr/bin/env python3
"""Wikipedia next-token perturbation evaluation of AttnLRP / PA-LRP (docs/protocols.md).

    python NLP/eval_pert_wiki.py --mode pert --model-size llama_3_8b --pe --single-norm --bf16
    python NLP/eval_pert_wiki.py --mode analyze
    python NLP/eval_pert_wiki.py --demo --mode pert --pe --single-norm

Each article (the first 2,500 by default) is truncated to --max-length tokens and the model's
predicted next token is explained.
"""
from palrp import config
from palrp.nlp.pert_driver import Sample, Task, main
from palrp.runtime.cli import positive_int
from palrp.nlp.perturbation import WIKI


def load_samples(args, data, tokenizer):
    from palrp.data.text_data import load_wiki
    texts = load_wiki(data, config=args.wiki_config, max_articles=args.max_articles)
    return [Sample(i, text) for i, text in enumerate(texts)]


def add_args(parser):
    parser.add_argument("--wiki-config", default="20231101.en")
    parser.add_argument("--max-articles", type=positive_int, default=2500,
                        help="articles read from the data (default 2500)")


TASK = Task(
    protocol=WIKI, head="causal_lm", load_samples=load_samples,
    demo_model=config.DEMO_TEXT_DIR / "lm", demo_data=config.DEMO_TEXT_DIR / "wiki.jsonl",
    default_data="wikimedia/wikipedia", default_model_size="llama_3_8b",
    selection="first", add_args=add_args, data_args=("wiki_config", "max_articles"),
    default_max_samples=2500,
    max_samples_help="articles to score, the first ones in data order",
)

if __name__ == "__main__":
    main(TASK)
