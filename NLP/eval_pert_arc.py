#!/usr/bin/env python3
"""ARC-Easy token-perturbation evaluation of AttnLRP / PA-LRP (docs/protocols.md).

    python NLP/eval_pert_arc.py --mode pert --model-size llama_3_8b --pe --single-norm --bf16
    python NLP/eval_pert_arc.py --mode analyze
    python NLP/eval_pert_arc.py --demo --mode pert --pe --single-norm

``--model-size`` reads the folder of config.LLAMA_MODELS, else the model's hub id
(config.LLAMA_HUB_IDS) from the local Hugging Face cache; ``--model-path`` takes a folder or a
hub id ``org/name[@revision]``; nothing is downloaded unless ``--allow-download``.

The causal LM reads the multiple-choice prompt and its argmax token at the last position is
explained; only items it answers correctly (A-D) count, up to --max-samples.
"""
from __future__ import annotations

from dataclasses import dataclass

from palrp import config
from palrp.nlp.pert_driver import Sample, Task
from palrp.nlp.perturbation import ARC
from palrp.runtime.cli import perturbation_main


@dataclass(frozen=True)
class ArcOptions:
    """Which ARC items are read (part of the run's identity)."""
    arc_config: str = "ARC-Easy"
    splits: tuple[str, ...] = ("train", "test")


def load_samples(options: ArcOptions, data, tokenizer) -> list[Sample]:
    from palrp.data.text_data import arc_prompt, load_arc
    items = load_arc(data, config=options.arc_config, splits=list(options.splits))
    return [Sample(i, arc_prompt(item), item["answerKey"]) for i, item in enumerate(items)]


TASK = Task(
    protocol=ARC, head="causal_lm", load_samples=load_samples,
    demo_model=config.DEMO_TEXT_DIR / "lm", demo_data=config.DEMO_TEXT_DIR / "arc_easy.jsonl",
    default_data="allenai/ai2_arc", default_model_size="llama_3_8b",
    selection="correct_only", options=ArcOptions(),
    max_samples_help="correctly answered items to score (wrong answers are skipped)",
)


def add_args(parser) -> None:
    parser.add_argument("--arc-config", default=ArcOptions.arc_config)
    parser.add_argument("--splits", nargs="+", default=list(ArcOptions.splits))


def task_options(args) -> ArcOptions:
    return ArcOptions(arc_config=args.arc_config, splits=tuple(args.splits))


def main(argv=None):
    """The command line (palrp.runtime.cli.perturbation_main): the metrics of a pert run, the
    runs of analyze."""
    return perturbation_main(TASK, argv, add_task_args=add_args, task_options=task_options)


if __name__ == "__main__":
    main()
