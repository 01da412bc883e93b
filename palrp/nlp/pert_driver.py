"""The shared driver of ``NLP/eval_pert_{imdb,arc,wiki}.py`` (docs/protocols.md).

A task is data (:class:`Task`): how to load its samples, which model head it needs, how a
sample becomes input ids, and which samples are scored (:data:`SELECTIONS`). The loop is the
same for all three:

1. selection, in data order, as the original chose: IMDB scores every test review, correct or
   not, until ``--max-samples`` correctly classified ones have been scored; ARC scores only
   correctly answered items, up to ``--max-samples``; Wikipedia the first ``--max-samples``
   articles. Correctness is decided with cheap no-grad forwards, block by block;
2. per selected sample: one explanation (AttnLRP, or PA-LRP with ``--pe``) serves generate and
   pruning; the 33 perturbed copies are scored in batched forwards (:mod:`palrp.nlp.perturbation`);
3. results are appended per sample to a resumable store and summarised into ``metrics.json``
   (with how many samples were scored and how many of them were answered correctly).

Runs are data-parallel under ``torchrun`` / ``accelerate launch`` (each rank a shard, rank 0
merges); the selection and the summary do not depend on the number of processes.
``--mode analyze`` prints one table per task with a row per run.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from palrp import config
from palrp.runtime import SampleStore, atomic_write_json, check_run, fingerprint, init_distributed
from palrp.runtime.tables import latex_table, markdown_table
from palrp.runtime.cli import (Parser, check_output_dir, device_args, device_map_args,
                         gradient_checkpointing_args, output_args, positive_int, quiet_loading)
from .perturbation import PROTOCOL_VERSION, REPORTED, TaskProtocol, sample_curves, summarize

__all__ = ["Task", "Sample", "SELECTIONS", "run_name", "main"]

#: Which samples a task scores, in data order, given the cap ``--max-samples`` = M:
#: ``until_correct``: every sample, correct or not, up to and including the M-th correct one
#: (the original's IMDB loop, which checks ``num_correct == 1000`` before each review);
#: ``correct_only``: only correctly answered samples, the first M of them (the original's ARC
#: ``skip_if_wrong``); ``first``: the first M samples (Wikipedia).
SELECTIONS = ("until_correct", "correct_only", "first")


@dataclass
class Sample:
    """One evaluation item: its data index, text to tokenize, and the gold class (IMDB) or the
    gold answer string (ARC) used by the task's filter."""

    index: int
    text: str
    gold: int | str | None = None


@dataclass
class Task:
    protocol: TaskProtocol
    head: str                                   # "classifier" or "causal_lm"
    load_samples: Callable[[argparse.Namespace, object, object], list[Sample]]
    demo_model: Path
    demo_data: Path
    default_data: str | Path
    default_model_size: str
    selection: str                              # one of SELECTIONS
    max_samples_help: str                       # what --max-samples counts
    reference_is_gold: bool = False             # IMDB: gold label; else the predicted token
    default_max_samples: int = 1000
    data_args: tuple[str, ...] = ()              # task options that change the samples
    add_args: Callable[[argparse.ArgumentParser], None] = field(default=lambda parser: None)


# --- command line -------------------------------------------------------------------------

def build_parser(task: Task) -> argparse.ArgumentParser:
    parser = Parser(
        description=f"{task.protocol.name}: token perturbation evaluation (docs/protocols.md, section 4)",
        parents=[device_args(), output_args(config.OUTPUT_DIR / "nlp_pert"),
                 gradient_checkpointing_args(), device_map_args()])
    parser.add_argument("--mode", choices=["pert", "analyze"], default="pert")
    parser.add_argument("--model-size", default=None, choices=sorted(config.LLAMA_MODELS) + ["demo"],
                        help=f"a model of config.LLAMA_MODELS (default {task.default_model_size})")
    parser.add_argument("--model-path", type=Path, default=None,
                        help="local model folder (save_pretrained); overrides --model-size")
    parser.add_argument("--data-path", default=None,
                        help=f"local data file or a cached datasets name (default: {task.default_data})")
    parser.add_argument("--demo", action="store_true",
                        help="the embedded default model and data (no downloads)")
    parser.add_argument("--pe", action="store_true", help="PA-LRP (positional relevance); else AttnLRP")
    parser.add_argument("--single-norm", action="store_true",
                        help="normalise tok + PE once (the paper's setting); else per part")
    parser.add_argument("--pe-only", action="store_true", help="only the PE term (needs --pe)")
    parser.add_argument("--without-abs", action="store_true", help="signed PE terms (needs --pe)")
    parser.add_argument("--clamp", action="store_true", help="PE term clamped at 0 (needs --pe)")
    parser.add_argument("--max-samples", type=positive_int, default=task.default_max_samples,
                        help=f"{task.max_samples_help} (default {task.default_max_samples}); part "
                             "of the run's identity")
    parser.add_argument("--max-length", type=positive_int, default=512,
                        help="tokens kept per sample (at most the model's positions)")
    parser.add_argument("--replacement-token", default=None,
                        help="token used for removed tokens when the tokenizer has no unk token "
                             "(the original used '#' for Llama-3)")
    parser.add_argument("--exact-counts", action="store_true",
                        help="perturb ceil(i*N/10) tokens at step i; default: the original's "
                             "int(numpy.ceil(numpy.linspace(0, 1, 11)[i] * N)), one token more at "
                             "30%%, 60%%, 70%% when N is a multiple of 10 (the paper's numbers)")
    parser.add_argument("--score-batch-size", type=positive_int, default=33,
                        help="perturbed copies per forward pass")
    parser.add_argument("--select-batch-size", type=positive_int, default=16,
                        help="samples per no-grad forward while selecting correct answers")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true",
                           help="bfloat16 (the default on CUDA; float32 on CPU)")
    precision.add_argument("--fp32", action="store_true", help="float32 even on CUDA")
    parser.add_argument("--latex", action="store_true", help="analyze: also print LaTeX tables")
    task.add_args(parser)
    return parser


def run_name(args) -> str:
    """The run's folder name: method, then the flags that change the map."""
    if not args.pe:
        return "-".join(["attnlrp"] + _count_suffix(args))
    parts = ["pa_lrp", "single_norm" if args.single_norm else "per_part_norm"]
    parts += [flag for flag in ("pe_only", "without_abs", "clamp") if getattr(args, flag)]
    return "-".join(parts + _count_suffix(args))


def _count_suffix(args) -> list[str]:
    return ["exact_counts"] if getattr(args, "exact_counts", False) else []


def _check_flags(args) -> None:
    if not args.pe and (args.pe_only or args.without_abs or args.clamp):
        raise SystemExit("error: --pe-only/--without-abs/--clamp change the PE term; add --pe")
    if args.demo and (args.model_path is not None or args.model_size not in (None, "demo")):
        raise SystemExit("error: --demo uses the embedded model, --model-size/--model-path name "
                         "another; pass one of them")
    import os
    if args.device_map and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("error: --device-map auto spreads one model over all GPUs of the node; "
                         "run it as one process, not under torchrun")


def resolve_model_path(task: Task, args) -> Path:
    if args.model_path is not None:
        return args.model_path
    if args.demo or args.model_size == "demo":
        return task.demo_model
    return config.LLAMA_MODELS[args.model_size or task.default_model_size]


def model_dtype(args, device) -> torch.dtype:
    """bfloat16 on CUDA unless ``--fp32``; float32 on CPU unless ``--bf16``
    (palrp/loaders/text_models.py, the one dtype rule of the text command lines)."""
    from palrp.loaders.text_models import precision_arg, resolve_dtype

    return resolve_dtype(precision_arg(args), device)


def input_device(model) -> torch.device:
    """Where the input ids go: the embedding's device (differs from the head's under
    ``--device-map auto``)."""
    return model.get_input_embeddings().weight.device


def load_model(task: Task, path: Path, dtype, device, device_map=None):
    """The task's head (causal LM or sequence classifier) of any family the text engine
    explains, from a local folder, through the one loader (palrp/loaders/text_models.py): a folder
    that is missing or incomplete, another family, or a checkpoint without trained head weights
    (a causal LM passed as the IMDB classifier) ends with one line."""
    from palrp.loaders.text_models import ModelFolderError, load_text_model

    try:
        with quiet_loading():
            loaded = load_text_model(path, task.head, dtype=dtype, device=device,
                                     device_map=device_map)
    except ModelFolderError as exc:
        raise SystemExit(f"error: {exc}") from None
    return loaded.model, loaded.tokenizer


def replacement_id(tokenizer, token: str | None) -> int:
    """``--replacement-token`` when given, else the tokenizer's unk token (docs/protocols.md, section 4)."""
    if token is None:
        if tokenizer.unk_token_id is None:
            raise SystemExit("error: the tokenizer has no unk token; pass --replacement-token "
                             "(e.g. '#', as the original did for Llama-3)")
        return int(tokenizer.unk_token_id)
    vocab = tokenizer.get_vocab()
    if token in vocab:
        return int(vocab[token])
    encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(encoded) != 1 or encoded[0] == tokenizer.unk_token_id:
        raise SystemExit(f"error: --replacement-token {token!r} is not a single token of this "
                         "tokenizer; pass one that is")
    return int(encoded[0])


# --- model calls --------------------------------------------------------------------------

def _encode(tokenizer, text: str, max_length: int, device) -> torch.Tensor:
    ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    return torch.tensor(ids, dtype=torch.long, device=device)


def _scorer(model, head: str):
    """(M, S) ids without padding -> (M, K) logits at the explained (last) position."""
    @torch.no_grad()
    def score(ids: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        return out if head == "classifier" else out[:, -1]
    return score


def _perturbable_positions(ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Real tokens that may be perturbed: all but the tokenizer's special tokens (BOS)."""
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), device=ids.device)
    keep = ~torch.isin(ids, special) if len(special) else torch.ones_like(ids, dtype=torch.bool)
    return keep.nonzero().flatten()


def _is_correct(task: Task, sample: Sample, logits: torch.Tensor, tokenizer, label_ids) -> bool:
    predicted = int(logits.argmax())
    if task.head == "classifier":
        return predicted == label_ids[sample.gold]
    return tokenizer.decode([predicted]).strip() == str(sample.gold).strip()


def select_samples(task: Task, samples: list[Sample], model, tokenizer, args, ctx, store,
                   label_ids) -> list[Sample]:
    """The samples to score, in data order, by the task's rule (:data:`SELECTIONS`).

    Decisions are stored per sample, so a resumed run does not redo them; blocks of candidates
    are shared among the ranks and every rank sees every decision before the next block."""
    if task.selection == "first":
        return samples[:args.max_samples]
    decided = {r["index"]: r["correct"] for r in store.records()}
    score = _scorer(model, task.head)
    block = max(1, args.select_batch_size) * ctx.world_size
    position = 0
    bar = tqdm(total=args.max_samples, desc="selecting correct samples", disable=not ctx.is_main)
    while position < len(samples):
        found = sum(decided.get(s.index, False) for s in samples[:position])
        bar.n = min(found, args.max_samples)
        bar.refresh()
        if found >= args.max_samples:
            break
        todo = [s for s in ctx.shard(samples[position:position + block]) if s.index not in decided]
        rows = []
        for sample in todo:
            ids = _encode(tokenizer, sample.text, args.max_length, input_device(model))
            logits = score(ids[None])[0]
            rows.append({"index": sample.index,
                         "correct": _is_correct(task, sample, logits, tokenizer, label_ids)})
        if rows:
            store.append(rows)
        ctx.barrier()
        decided = {r["index"]: r["correct"] for r in store.records()}
        position += block
    bar.close()
    if task.selection == "correct_only":
        chosen = [s for s in samples if decided.get(s.index, False)][:args.max_samples]
        if not chosen:
            raise SystemExit(f"error: no correctly answered sample among {len(samples)}; check "
                             "the model and the data (an instruction model for ARC)")
        return chosen
    chosen, correct = [], 0
    for sample in samples:           # until_correct: stop once the cap-th correct one is in
        if correct == args.max_samples:
            break
        chosen.append(sample)
        correct += bool(decided.get(sample.index, False))
    return chosen


def evaluate_sample(task: Task, sample: Sample, model, tokenizer, args, repl: int, label_ids):
    from palrp.modules import explain_text

    ids = _encode(tokenizer, sample.text, args.max_length, input_device(model))
    positions = _perturbable_positions(ids, tokenizer)
    if len(positions) == 0:
        return None
    result = explain_text(model, ids[None], pe=args.pe,
                          gradient_checkpointing=args.gradient_checkpointing)
    relevance = result.combined(single_norm=args.single_norm, pe_only=args.pe_only,
                                without_abs=args.without_abs, clamp=args.clamp)[0]
    clean = result.logits[0]
    predicted = int(result.target[0])
    reference = label_ids[sample.gold] if task.reference_is_gold else predicted
    curves = sample_curves(_scorer(model, task.head), ids, positions, relevance[positions].float(),
                           clean, reference, repl, task.protocol, args.score_batch_size,
                           exact_counts=args.exact_counts)
    correct = None if sample.gold is None else \
        _is_correct(task, sample, result.logits[0], tokenizer, label_ids)
    return {"index": sample.index, "tokens": len(positions), "reference": reference,
            "correct": correct, "curves": curves}


def _inputs_identity(task: Task, args, path: Path, data, dtype) -> dict:
    """What fixes which samples are chosen and how the model reads them."""
    return {"task": task.protocol.name, "protocol_version": PROTOCOL_VERSION,
            "model": fingerprint(path), "data": fingerprint(data),
            "data_args": {k: getattr(args, k) for k in task.data_args},
            "max_length": args.max_length, "dtype": str(dtype).removeprefix("torch.")}


def run_identity(task: Task, args, path: Path, data, dtype, repl: int) -> dict:
    """Everything that changes a number of the run (``run.json`` of its folder)."""
    return {**_inputs_identity(task, args, path, data, dtype), "run": run_name(args),
            "flags": {k: bool(getattr(args, k)) for k in
                      ("pe", "single_norm", "pe_only", "without_abs", "clamp", "exact_counts")},
            "max_samples": args.max_samples, "replacement_token_id": repl}


def run_pert(task: Task, args) -> dict | None:
    _check_flags(args)
    check_output_dir(args.output_dir)
    ctx = init_distributed(args.device)
    try:
        path = resolve_model_path(task, args)
        dtype = model_dtype(args, ctx.device)
        model, tokenizer = load_model(task, path, dtype, ctx.device, args.device_map)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and args.max_length > limit:
            raise SystemExit(f"error: --max-length {args.max_length} is beyond the {limit} "
                             f"positions of {path}; pass --max-length {limit} or less")
        repl = replacement_id(tokenizer, args.replacement_token)
        data = task.demo_data if (args.demo or args.model_size == "demo") and args.data_path is None \
            else (args.data_path or task.default_data)
        from palrp.data.text_data import DataError, sentiment_label_ids
        try:
            samples = task.load_samples(args, data, tokenizer)
        except DataError as exc:
            raise SystemExit(f"error: {exc}") from None
        label_ids = sentiment_label_ids(getattr(model.config, "id2label", None))
        model_name = path.name
        folder = args.output_dir / task.protocol.name / model_name / run_name(args)
        resumed = check_run(folder, run_identity(task, args, path, data, dtype, repl),
                            args.overwrite, owned=("samples.rank*.jsonl", "metrics.json"), ctx=ctx)
        selection = None
        if task.selection != "first":
            selection = SampleStore(folder.parent / "selection", "decisions", ctx.rank)
            check_run(selection.folder, _inputs_identity(task, args, path, data, dtype),
                      args.overwrite, owned=("decisions.rank*.jsonl",), ctx=ctx)
        chosen = select_samples(task, samples, model, tokenizer, args, ctx, selection, label_ids)
        store = SampleStore(folder, "samples", ctx.rank)
        done = store.done()
        if resumed and ctx.is_main:
            print(f"resuming {folder}: {len(done & {s.index for s in chosen})} of {len(chosen)} "
                  f"samples already done")
        todo = [s for s in ctx.shard(chosen) if s.index not in done]
        for sample in tqdm(todo, desc=f"{task.protocol.name} {run_name(args)}",
                           disable=not ctx.is_main):
            record = evaluate_sample(task, sample, model, tokenizer, args, repl, label_ids)
            if record is not None:
                store.append([record])
        store.close()
        ctx.barrier()
        if not ctx.is_main:
            return None
        wanted = {s.index for s in chosen}
        records = [r for r in store.records() if r["index"] in wanted]
        summary = summarize([r["curves"] for r in records])
        metrics = {
            "task": task.protocol.name, "run": run_name(args),
            "method": "pa_lrp" if args.pe else "attnlrp",
            "flags": {k: bool(getattr(args, k)) for k in
                      ("pe", "single_norm", "pe_only", "without_abs", "clamp")},
            "dtype": str(dtype).removeprefix("torch."),
            "model": str(path), "data": str(data), "selection": task.selection,
            "max_samples": args.max_samples, "num_samples": len(records),
            "num_correct": None if task.selection == "first" else
            sum(bool(r.get("correct")) for r in records),
            "counts": "exact" if args.exact_counts else "original",
            "replacement_token_id": repl, "max_length": args.max_length,
            **summary,
        }
        atomic_write_json(folder / "metrics.json", metrics)
        print(format_table([metrics]))
        print(f"wrote {folder / 'metrics.json'}")
        return metrics
    finally:
        ctx.close()


# --- analyze ------------------------------------------------------------------------------

def _correct(run: dict) -> str:
    return "-" if run.get("num_correct") is None else str(run["num_correct"])


def _unlike_first(runs: list[dict]) -> set[int]:
    """Rows (positions in ``runs``) whose data, sample cap or sample count differ from the first
    row of the same model: their numbers are not comparable with it."""
    first: dict[str, tuple] = {}
    marked = set()
    for i, r in enumerate(runs):
        key = (r.get("data"), r.get("max_samples"), r["num_samples"])
        if first.setdefault(r["model"], key) != key:
            marked.add(i)
    return marked


def format_table(runs: list[dict], latex: bool = False) -> str:
    """One row per run, AttnLRP first, then the PA-LRP variants. ``N``: samples scored;
    ``correct``: how many of them were answered correctly (``-`` where not defined). A row
    whose data or N differs from its model's first row is marked ``*`` and a note follows."""
    runs = sorted(runs, key=lambda r: (r["model"], r["method"] != "attnlrp", r["run"]))
    marked = _unlike_first(runs)
    keys = list(REPORTED)
    arrows = ["↑" if REPORTED[k][1] else "↓" for k in keys]
    rows = [[Path(r["model"]).name, r["run"], str(r["num_samples"]) + ("*" if i in marked else ""),
             _correct(r)] + [f"{r['auc'][k]:.4f}" for k in keys] for i, r in enumerate(runs)]
    note = ("* other data or N than the first row of its model: not comparable with it "
            "(rerun both with the same --data-path and --max-samples)") if marked else None
    if latex:
        return latex_table(["Model", "Run", "N", "Correct"] + keys, rows, note)
    return markdown_table(["model", "run", "N", "correct"] +
                          [f"{k} {a}" for k, a in zip(keys, arrows)], rows, note)


def run_analyze(task: Task, args) -> list[dict]:
    root = args.output_dir / task.protocol.name
    runs = [json.loads(p.read_text()) for p in sorted(root.glob("*/*/metrics.json"))]
    if not runs:
        raise SystemExit(f"error: no finished run under {root}; run --mode pert first")
    print(f"## {task.protocol.name}\n")
    print(format_table(runs))
    if args.latex:
        print()
        print(format_table(runs, latex=True))
    return runs


def main(task: Task, argv=None):
    args = build_parser(task).parse_args(argv)
    if args.mode == "analyze":
        return run_analyze(task, args)
    return run_pert(task, args)


if __name__ == "__main__":
    sys.exit("run NLP/eval_pert_imdb.py, eval_pert_arc.py or eval_pert_wiki.py")
