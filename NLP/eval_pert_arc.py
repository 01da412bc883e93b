#!/usr/bin/env python3
"""ARC-Easy token-perturbation evaluation of AttnLRP / PA-LRP (docs/protocols.md).

    python NLP/eval_pert_arc.py --mode pert --model-size llama_3_8b --pe --single-norm --bf16
    python NLP/eval_pert_arc.py --mode analyze
    python NLP/eval_pert_arc.py --demo --mode pert --pe --single-norm

The causal LM reads the multiple-choice prompt and its argmax token at the last position is
explained; only items it answers correctly (A-D) count, up to --max-samples.
"""
from palrp import config
from palrp.nlp.pert_driver import Sample, Task, main
from palrp.nlp.perturbation import ARC


def load_samples(args, data, tokenizer):
    from palrp.data.text_data import arc_prompt, load_arc
    items = load_arc(data, config=args.arc_config, splits=args.splits)
    return [Sample(i, arc_prompt(item), item["answerKey"]) for i, item in enumerate(items)]


def add_args(parser):
    parser.add_argument("--arc-config", default="ARC-Easy")
    parser.add_argument("--splits", nargs="+", default=["train", "test"])


TASK = Task(
    protocol=ARC, head="causal_lm", load_samples=load_samples,
    demo_model=config.DEMO_TEXT_DIR / "lm", demo_data=config.DEMO_TEXT_DIR / "arc_easy.jsonl",
    default_data="allenai/ai2_arc", default_model_size="llama_3_8b",
    selection="correct_only", add_args=add_args, data_args=("arc_config", "splits"),
    max_samples_help="correctly answered items to score (wrong answers are skipped)",
)

if __name__ == "__main__":
    main(TASK)
