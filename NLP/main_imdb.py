#!/usr/bin/env python3
"""Fine-tune a classifier (Llama, or any family the text engine explains) on IMDB, or evaluate
one (docs/protocols.md, section 3).

    python NLP/main_imdb.py --model-size demo                 # embedded default, CPU, minutes
    python NLP/main_imdb.py --model-size llama_tiny --num-warmup-steps 5 --lr 5e-4
    python NLP/main_imdb.py --model-size llama_2_7b --lora --bf16 --gradient-checkpointing
    python NLP/main_imdb.py --output-dir results/imdb/demo --resume
    python NLP/main_imdb.py --eval --model-path palrp/assets/text/classifier
    python NLP/main_imdb.py --model-path TinyLlama/TinyLlama-1.1B-Chat-v1.0   # hub id, from the HF cache

The command line: its flags become :class:`palrp.nlp.imdb_train.TrainOptions` (or
:class:`~palrp.nlp.imdb_train.EvalOptions` with ``--eval``); the loop is
:mod:`palrp.nlp.imdb_train`, model I/O :mod:`palrp.nlp.imdb_model`, the resumable training state
:mod:`palrp.nlp.imdb_state`.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from palrp import config
from palrp.data.text_data import DataError
from palrp.nlp.imdb_model import MODEL_SIZES, default_data_path, model_folder
from palrp.nlp.imdb_train import EvalOptions, TrainOptions, run_eval, run_training
from palrp.runtime import run_lock
from palrp.runtime.cli import random_seed
from palrp.runtime.cli import (Parser, check_allow_download, check_output_dir, device_args,
                               gradient_checkpointing_args, hub_args, model_folder_or_exit,
                               nonnegative_float, nonnegative_int, one_line_errors,
                               flag, positive_float, positive_int, precision_args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(
        prog="main_imdb.py",
        description="Fine-tune a classifier (Llama or another supported family) on IMDB "
                    "(docs/protocols.md, section 3), or evaluate one.",
        parents=[device_args(), gradient_checkpointing_args(), precision_args(
            fp32=False, bf16_help="bfloat16 autocast (with --lora the frozen base weights are "
                                  "bfloat16 too)"), hub_args()])
    p.add_argument("--model-size", choices=MODEL_SIZES, default="demo",
                   help="model folder from config.py, else its hub id (config.LLAMA_HUB_IDS) in "
                        "the Hugging Face cache: llama_tiny (TinyLlama-1.1B-Chat-v1.0), "
                        "llama_2_7b, or demo (the embedded LM, palrp/assets/text/lm) [demo]")
    p.add_argument("--model-path", default=None,
                   help="model folder saved with save_pretrained, or a hub id "
                        "org/name[@revision] in the Hugging Face cache; Llama or any family the "
                        "text engine explains (overrides --model-size); with --eval, the "
                        "classifier to evaluate")
    p.add_argument("--data-path", type=Path, default=None,
                   help="IMDB CSV in the Kaggle layout (review,sentiment) [config.IMDB_CSV_PATH; "
                        "the embedded palrp/assets/text/imdb.csv for demo]")
    p.add_argument("--lr", type=positive_float, default=5e-4, help="peak learning rate [5e-4]")
    p.add_argument("--num-warmup-steps", type=nonnegative_int, default=1,
                   help="EPOCHS of linear warmup, as in the original README command [1]")
    p.add_argument("--num-epochs", type=positive_int, default=10, help="training epochs [10]")
    p.add_argument("--batch-size", type=positive_int, default=32, help="batch size [32]")
    p.add_argument("--max-length", type=positive_int, default=512,
                   help="truncate reviews to this many tokens [512]")
    p.add_argument("--max-train", type=positive_int, default=5000,
                   help="first N rows of the train split [5000]")
    p.add_argument("--max-test", type=positive_int, default=5000,
                   help="first N rows of the test split [5000]")
    p.add_argument("--weight-decay", type=nonnegative_float, default=0.0,
                   help="AdamW weight decay [0]")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="run folder: best/, metrics.json, training_state.pt "
                        "[config.OUTPUT_DIR/imdb/<model-size>]")
    p.add_argument("--save-steps", type=nonnegative_int, default=0,
                   help="also save the training state every N steps (0: at epoch ends only)")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --output-dir at the step after its saved state")
    run.add_argument("--overwrite", action="store_true",
                     help="start again in an --output-dir that holds a run, replacing only what "
                          "this program wrote there")
    p.add_argument("--eval", action="store_true",
                   help="only evaluate the classifier (--model-path, else <output-dir>/best) on "
                        "the test split")
    p.add_argument("--lora", action="store_true",
                   help="train LoRA adapters (peft) on every linear projection of the base model, "
                        "and the classification head, instead of all weights (any text family)")
    p.add_argument("--lora-rank", type=positive_int, default=16, help="LoRA rank with --lora [16]")
    p.add_argument("--seed", type=random_seed, default=config.SEED, help="seed [config.SEED]")
    args = p.parse_args(argv)
    if args.eval and (args.resume or args.overwrite):
        p.error("--eval only evaluates; it excludes --resume and --overwrite")
    args.model_path_given = args.model_path is not None
    resolve_paths(args)
    return args


def resolve_paths(args) -> None:
    """Fill ``model_path``, ``data_path`` and ``output_dir`` from ``--model-size`` and config.
    A hub id (``--model-path org/name``, or a named size whose folder does not exist) becomes
    its snapshot folder in the Hugging Face cache (fetched first only with --allow-download);
    one that is not cached ends with one line. ``--eval`` without ``--model-path`` evaluates
    ``<output-dir>/best`` and needs no base model."""
    from palrp.loaders.hub import HubError, model_label
    allow = check_allow_download(args)
    given = model_folder_or_exit(args.model_path, allow) if args.model_path is not None else None
    try:
        named = model_folder(args.model_size, allow) if given is None and not args.eval else None
    except HubError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.data_path is None:
        args.data_path = default_data_path(args.model_size)
    if args.output_dir is None:
        name = args.model_size if given is None or _same_folder(given, args.model_size) \
            else model_label(given)
        args.output_dir = Path(config.OUTPUT_DIR) / "imdb" / name
    folder = given or named
    args.model_path = Path(folder) if folder is not None else None
    args.data_path = Path(args.data_path)
    args.output_dir = Path(args.output_dir)


def _same_folder(folder: Path, model_size: str) -> bool:
    """Whether ``folder`` is the configured folder of ``model_size`` (its runs keep the size's
    name)."""
    configured = config.DEMO_TEXT_DIR / "lm" if model_size == "demo" \
        else Path(config.LLAMA_MODELS[model_size])
    return Path(folder) == configured


def eval_options(args) -> EvalOptions:
    """``--eval``: the classifier of ``--model-path``, else ``<output-dir>/best``."""
    return EvalOptions(
        model_path=args.model_path if args.model_path_given else args.output_dir / "best",
        data_path=args.data_path, output_dir=args.output_dir, device=args.device,
        batch_size=args.batch_size, max_length=args.max_length, max_train=args.max_train,
        max_test=args.max_test, bf16=args.bf16)


def train_options(args) -> TrainOptions:
    return TrainOptions(
        model_path=args.model_path, data_path=args.data_path, output_dir=args.output_dir,
        device=args.device, lr=args.lr, num_warmup_steps=args.num_warmup_steps,
        num_epochs=args.num_epochs, batch_size=args.batch_size, max_length=args.max_length,
        max_train=args.max_train, max_test=args.max_test, weight_decay=args.weight_decay,
        save_steps=args.save_steps, resume=args.resume, overwrite=args.overwrite,
        lora=args.lora, lora_rank=args.lora_rank, bf16=args.bf16, seed=args.seed,
        gradient_checkpointing=args.gradient_checkpointing)


def main(argv: list[str] | None = None, callback: Callable[[int, float], None] | None = None
         ) -> dict:
    """Parse, check the output folder, then evaluate or train; bad input ends with one line
    ``error: ...`` (library errors naming their options as flags) and exit status 1. So does
    a diverged run (a non-finite loss, gradient norm or parameter: ``error: training diverged
    at step S (epoch E): ...; rerun with a lower --lr``), which writes nothing non-finite. A
    run whose best test accuracy is within ``CHANCE_MARGIN`` of the majority-class rate prints
    a ``warning: ... at chance level`` line (also ``chance_warning`` in metrics.json) and
    exits 0."""
    args = parse_args(argv)
    check_output_dir(args.output_dir)
    with run_lock(args.output_dir), one_line_errors(DataError):
        if args.eval:
            return run_eval(eval_options(args))
        return run_training(train_options(args), callback, spell=flag)


if __name__ == "__main__":
    main()
