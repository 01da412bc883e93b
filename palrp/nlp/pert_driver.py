"""The run loop shared by ``NLP/eval_pert_{imdb,arc,wiki}.py`` (docs/protocols.md), as a
library: :func:`run_perturbation` takes a :class:`Task` and typed :class:`PerturbationOptions`;
the drivers' flags become those options in :func:`palrp.runtime.cli.perturbation_main`.

A task is data (:class:`Task`): how to load its samples, which model head it needs, how a
sample becomes input ids, and which samples are scored (:data:`SELECTIONS`). The loop is the
same for all three:

1. selection, in data order, as the original chose: IMDB scores every test review, correct or
   not, until ``max_samples`` correctly classified ones have been scored; ARC scores only
   correctly answered items, up to ``max_samples``; Wikipedia the first ``max_samples``
   articles. Correctness is decided with cheap no-grad forwards, block by block;
2. per selected sample: one explanation (AttnLRP, or PA-LRP with ``pe``) serves generate and
   pruning; the 33 perturbed copies are scored in batched forwards (:mod:`palrp.nlp.perturbation`);
3. results are appended per sample to a resumable store and summarised into ``metrics.json``
   (with how many samples were scored and how many of them were answered correctly).

Runs are data-parallel under ``torchrun`` / ``accelerate launch`` (each rank a shard, rank 0
merges); the selection and the summary do not depend on the number of processes.
:func:`analyze` prints one table per task with a row per run.

Bad options and inputs raise :class:`PerturbationError` (an
:class:`palrp.runtime.options.OptionError`: the command lines name their flags in it),
:class:`palrp.data.text_data.DataError` or :class:`palrp.loaders.text_models.ModelFolderError`,
each one line.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from palrp import config
from palrp.runtime import SampleStore, atomic_write_json, check_run, fingerprint, init_distributed
from palrp.runtime.store import ListOf, MapOf, record_problem, release_locks
from palrp.runtime.options import OptionError
from palrp.runtime.tables import latex_table, markdown_table
from .perturbation import (FRACS, PROTOCOL_VERSION, REPORTED, TaskProtocol, sample_curves,
                           summarize)

#: What a stored per-sample record holds (a damaged one is recomputed: SampleStore.records).
SAMPLE_RECORD = {"tokens": int, "reference": int, "correct": (bool, None),
                 "curves": MapOf(ListOf(float, len(FRACS)))}
#: What a finished run's metrics.json must hold to be a row of the analyze table.
METRICS_RECORD = {"task": str, "run": str, "method": str, "model": str, "num_samples": int,
                  "num_correct": (int, None), "auc": {key: float for key in REPORTED}}

__all__ = ["Task", "Sample", "SELECTIONS", "PerturbationOptions", "PerturbationError",
           "check_options", "run_name", "run_perturbation", "analyze", "format_table"]

#: Which samples a task scores, in data order, given the cap ``max_samples`` = M:
#: ``until_correct``: every sample, correct or not, up to and including the M-th correct one
#: (the original's IMDB loop, which checks ``num_correct == 1000`` before each review);
#: ``correct_only``: only correctly answered samples, the first M of them (the original's ARC
#: ``skip_if_wrong``); ``first``: the first M samples (Wikipedia).
SELECTIONS = ("until_correct", "correct_only", "first")

#: The flags of the map (part of the run's name and identity).
MAP_FLAGS = ("pe", "single_norm", "pe_only", "without_abs", "clamp")


class PerturbationError(OptionError):
    """A perturbation run that cannot start or go on; one line (options as ``{name}``
    placeholders, :class:`palrp.runtime.options.OptionError`)."""


@dataclass
class Sample:
    """One evaluation item: its data index, text to tokenize, and the gold class (IMDB) or the
    gold answer string (ARC) used by the task's filter."""

    index: int
    text: str
    gold: int | str | None = None


@dataclass
class Task:
    """One perturbation task. ``load_samples(task_options, data, tokenizer)`` reads the samples
    of ``data`` (a file or a cached datasets name); ``task_options`` is the task's own typed
    options (a dataclass, e.g. the ARC config and splits), ``options`` their defaults (None: the
    task has none). The task options are part of the run's identity (they change the samples)."""
    protocol: TaskProtocol
    head: str                                   # "classifier" or "causal_lm"
    load_samples: Callable[[Any, object, object], list[Sample]]
    demo_model: Path
    demo_data: Path
    default_data: str | Path
    default_model_size: str
    selection: str                              # one of SELECTIONS
    max_samples_help: str                       # what max_samples counts (the --help line)
    reference_is_gold: bool = False             # IMDB: gold label; else the predicted token
    default_max_samples: int = 1000
    options: Any = None                         # the task's default options (a dataclass)


@dataclass(frozen=True)
class PerturbationOptions:
    """Everything a perturbation run is asked to do (the drivers' flags, typed).

    ``model_path`` (a folder, or a hub id ``org/name[@revision]`` in the Hugging Face cache) wins
    over ``model_size`` (a key of ``config.LLAMA_MODELS``, whose folder or else cached hub id
    ``config.LLAMA_HUB_IDS`` is read, or ``"demo"``); ``allow_download``: fetch a hub model
    missing from the cache (never by default); ``demo`` means the task's embedded model and data. ``max_samples``: the task's cap (None:
    its default). ``dtype``: a torch dtype or its name (None: bfloat16 on CUDA, float32
    elsewhere). ``task_options``: the task's own typed options (None: ``task.options``)."""
    output_dir: Path = config.OUTPUT_DIR / "nlp_pert"
    overwrite: bool = False
    device: str | None = None
    model_size: str | None = None
    model_path: Path | str | None = None
    allow_download: bool = False
    data_path: str | Path | None = None
    demo: bool = False
    pe: bool = False
    single_norm: bool = False
    pe_only: bool = False
    without_abs: bool = False
    clamp: bool = False
    max_samples: int | None = None
    max_length: int = 512
    replacement_token: str | None = None
    exact_counts: bool = False
    score_batch_size: int = 33
    select_batch_size: int = 16
    dtype: Any = None
    gradient_checkpointing: bool = False
    device_map: str | None = None
    task_options: Any = None


def _resolved(task: Task, options: PerturbationOptions) -> PerturbationOptions:
    """``options`` with the task's defaults filled in (sample cap, task options)."""
    return dataclasses.replace(
        options, output_dir=Path(options.output_dir),
        max_samples=task.default_max_samples if options.max_samples is None else options.max_samples,
        task_options=task.options if options.task_options is None else options.task_options)


def run_name(options) -> str:
    """The run's folder name: method, then the options that change the map."""
    if not options.pe:
        return "-".join(["attnlrp"] + _count_suffix(options))
    parts = ["pa_lrp", "single_norm" if options.single_norm else "per_part_norm"]
    parts += [name for name in ("pe_only", "without_abs", "clamp") if getattr(options, name)]
    return "-".join(parts + _count_suffix(options))


def _count_suffix(options) -> list[str]:
    return ["exact_counts"] if getattr(options, "exact_counts", False) else []


def check_options(options: PerturbationOptions) -> None:
    """Combinations that cannot run, refused before any work (:class:`PerturbationError`)."""
    if not options.pe and (options.pe_only or options.without_abs or options.clamp):
        raise PerturbationError("{pe_only}/{without_abs}/{clamp} change the PE term; add {pe}",
                                "pe_only", "without_abs", "clamp", "pe")
    if options.demo and (options.model_path is not None
                         or options.model_size not in (None, "demo")):
        raise PerturbationError("{demo} uses the embedded model, {model_size}/{model_path} name "
                                "another; pass one of them", "demo", "model_size", "model_path")
    from palrp.loaders.hub import offline
    if options.allow_download and offline():
        raise PerturbationError("{allow_download} asks for a download, but HF_HUB_OFFLINE is set "
                                "(the hub's offline mode); unset HF_HUB_OFFLINE, or drop "
                                "{allow_download} to read the Hugging Face cache only",
                                "allow_download")
    if options.device_map and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PerturbationError(f"{{device_map}} {options.device_map} spreads one model over all "
                                "GPUs of the node; run it as one process, not under torchrun",
                                "device_map")


def resolve_model_path(task: Task, options: PerturbationOptions) -> Path:
    """The model folder to load: ``model_path`` (a hub id: its cached snapshot folder), the
    embedded model of a demo run, else the named size's configured folder or its cached hub id
    (:mod:`palrp.loaders.hub`; neither: one line naming both and how to fetch it)."""
    from palrp.loaders import hub

    if options.model_path is not None:
        return hub.resolve_model_dir(options.model_path, allow_download=options.allow_download)
    if options.demo or options.model_size == "demo":
        return task.demo_model
    size = options.model_size or task.default_model_size
    return hub.named_model_dir(size, config.LLAMA_MODELS[size], config.LLAMA_HUB_IDS[size],
                               allow_download=options.allow_download)


def resolve_data(task: Task, options: PerturbationOptions):
    """The data to read: ``data_path``, else the embedded data of a demo run, else the task's
    default."""
    if options.data_path is None and (options.demo or options.model_size == "demo"):
        return task.demo_data
    return options.data_path or task.default_data


def model_dtype(options: PerturbationOptions, device) -> torch.dtype:
    """``options.dtype``, else bfloat16 on CUDA and float32 on CPU (the one dtype rule of the
    text models, :func:`palrp.loaders.text_models.resolve_dtype`)."""
    from palrp.loaders.text_models import resolve_dtype

    return resolve_dtype(options.dtype, device)


def input_device(model) -> torch.device:
    """Where the input ids go: the embedding's device (differs from the head's under
    ``device_map="auto"``)."""
    return model.get_input_embeddings().weight.device


def load_model(task: Task, path: Path, dtype, device, device_map=None):
    """The task's head (causal LM or sequence classifier) of any family the text engine
    explains, from a local folder, through the one loader (palrp/loaders/text_models.py): a folder
    that is missing or incomplete, another family, or a checkpoint without trained head weights
    (a causal LM passed as the IMDB classifier) raises its one-line ``ModelFolderError``."""
    from palrp.loaders.text_models import ModelFolderError, load_text_model

    loaded = load_text_model(path, task.head, dtype=dtype, device=device, device_map=device_map)
    if loaded.head != task.head:
        raise ModelFolderError(f"{task.protocol.name} needs a {task.head} model but {path} "
                               f"holds a {loaded.head}; pass a {task.head} model folder")
    return loaded.model, loaded.tokenizer


def replacement_id(tokenizer, token: str | None) -> int:
    """``token`` (``replacement_token``) when given, else the tokenizer's unk token
    (docs/protocols.md, section 4)."""
    if token is None:
        if tokenizer.unk_token_id is None:
            raise PerturbationError("the tokenizer has no unk token; pass {replacement_token} "
                                    "(e.g. '#', as the original did for Llama-3)",
                                    "replacement_token")
        return int(tokenizer.unk_token_id)
    vocab = tokenizer.get_vocab()
    if token in vocab:
        return int(vocab[token])
    encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(encoded) != 1 or encoded[0] == tokenizer.unk_token_id:
        raise PerturbationError(f"{{replacement_token}} {token!r} is not a single token of this "
                                "tokenizer; pass one that is", "replacement_token")
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


def select_samples(task: Task, samples: list[Sample], model, tokenizer,
                   options: PerturbationOptions, ctx, store,
                   label_ids) -> list[Sample]:
    """The samples to score, in data order, by the task's rule (:data:`SELECTIONS`).

    Decisions are stored per sample, so a resumed run does not redo them; blocks of candidates
    are shared among the ranks and every rank sees every decision before the next block."""
    if task.selection == "first":
        return samples[:options.max_samples]
    decided = {r["index"]: r["correct"] for r in store.records()}
    score = _scorer(model, task.head)
    block = max(1, options.select_batch_size) * ctx.world_size
    position = 0
    bar = tqdm(total=options.max_samples, desc="selecting correct samples", disable=not ctx.is_main)
    while position < len(samples):
        found = sum(decided.get(s.index, False) for s in samples[:position])
        bar.n = min(found, options.max_samples)
        bar.refresh()
        if found >= options.max_samples:
            break
        todo = [s for s in ctx.shard(samples[position:position + block]) if s.index not in decided]
        rows = []
        for sample in todo:
            ids = _encode(tokenizer, sample.text, options.max_length, input_device(model))
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
        chosen = [s for s in samples if decided.get(s.index, False)][:options.max_samples]
        if not chosen:
            raise PerturbationError(f"no correctly answered sample among {len(samples)}; "
                                    "check the model and the data (an instruction model for "
                                    "ARC)")
        return chosen
    chosen, correct = [], 0
    for sample in samples:           # until_correct: stop once the cap-th correct one is in
        if correct == options.max_samples:
            break
        chosen.append(sample)
        correct += bool(decided.get(sample.index, False))
    return chosen


def map_combination(options: PerturbationOptions):
    """How the map is made from token and positional relevance (docs/method.md, "combining"):
    ``|PE|`` terms unless ``without_abs``, normalised once (``single_norm``) or per part, the
    PE term alone with ``pe_only``, clamped at 0 with ``clamp``. Without PE (AttnLRP) the map is
    the token relevance itself."""
    from palrp.modules.positional import Combination

    return Combination(absolute=not options.without_abs,
                       normalise="single" if options.single_norm else "per_part",
                       pe_only=options.pe_only, clamp_pe=options.clamp)


def evaluate_sample(task: Task, sample: Sample, model, tokenizer, options: PerturbationOptions,
                    repl: int, label_ids):
    from palrp.modules import explain_text

    ids = _encode(tokenizer, sample.text, options.max_length, input_device(model))
    positions = _perturbable_positions(ids, tokenizer)
    if len(positions) == 0:
        return None
    result = explain_text(model, ids[None], pe=options.pe,
                          gradient_checkpointing=options.gradient_checkpointing)
    relevance = result.combined(how=map_combination(options))[0]
    clean = result.logits[0]
    predicted = int(result.target[0])
    reference = label_ids[sample.gold] if task.reference_is_gold else predicted
    curves = sample_curves(_scorer(model, task.head), ids, positions, relevance[positions].float(),
                           clean, reference, repl, task.protocol, options.score_batch_size,
                           exact_counts=options.exact_counts)
    correct = None if sample.gold is None else \
        _is_correct(task, sample, result.logits[0], tokenizer, label_ids)
    return {"index": sample.index, "tokens": len(positions), "reference": reference,
            "correct": correct, "curves": curves}


def _task_identity(task_options) -> dict:
    """The task's options as the run records them (JSON values: tuples become lists)."""
    if task_options is None:
        return {}
    return json.loads(json.dumps(dataclasses.asdict(task_options)))


def _inputs_identity(task: Task, options, path: Path, data, dtype) -> dict:
    """What fixes which samples are chosen and how the model reads them."""
    return {"task": task.protocol.name, "protocol_version": PROTOCOL_VERSION,
            "model": fingerprint(path), "data": fingerprint(data),
            "data_args": _task_identity(options.task_options),
            "max_length": options.max_length, "dtype": str(dtype).removeprefix("torch.")}


def run_identity(task: Task, options, path: Path, data, dtype, repl: int) -> dict:
    """Everything that changes a number of the run (``run.json`` of its folder)."""
    return {**_inputs_identity(task, options, path, data, dtype), "run": run_name(options),
            "flags": {k: bool(getattr(options, k)) for k in MAP_FLAGS + ("exact_counts",)},
            "max_samples": options.max_samples, "replacement_token_id": repl}


def run_perturbation(task: Task, options: PerturbationOptions) -> dict | None:
    """One perturbation run of ``task`` (resumed where an earlier run of the same identity
    stopped): the metrics dictionary, also written to ``metrics.json`` of the run's folder and
    printed as a table row; None on ranks other than 0."""
    options = _resolved(task, options)
    check_options(options)
    ctx = init_distributed(options.device)
    try:
        path = resolve_model_path(task, options)
        dtype = model_dtype(options, ctx.device)
        model, tokenizer = load_model(task, path, dtype, ctx.device, options.device_map)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and options.max_length > limit:
            raise PerturbationError(f"{{max_length}} {options.max_length} is beyond the {limit} "
                                    f"positions of {path}; pass {{max_length}} {limit} or less",
                                    "max_length")
        repl = replacement_id(tokenizer, options.replacement_token)
        data = resolve_data(task, options)
        from palrp.data.text_data import sentiment_label_ids
        samples = task.load_samples(options.task_options, data, tokenizer)
        label_ids = sentiment_label_ids(getattr(model.config, "id2label", None))
        from palrp.loaders.hub import model_label
        model_name = model_label(path)      # the repo's name for a cached snapshot
        folder = options.output_dir / task.protocol.name / model_name / run_name(options)
        resumed = check_run(folder, run_identity(task, options, path, data, dtype, repl),
                            options.overwrite, owned=("samples.rank*.jsonl", "metrics.json"), ctx=ctx)
        selection = None
        if task.selection != "first":
            selection = SampleStore(folder.parent / "selection", "decisions", ctx.rank,
                                    schema={"correct": bool})
            check_run(selection.folder, _inputs_identity(task, options, path, data, dtype),
                      options.overwrite, owned=("decisions.rank*.jsonl",), ctx=ctx,
                      lock=False)    # shared by the runs of one model, which may run at once
        chosen = select_samples(task, samples, model, tokenizer, options, ctx, selection, label_ids)
        store = SampleStore(folder, "samples", ctx.rank, schema=SAMPLE_RECORD)
        done = store.done()
        if resumed and ctx.is_main:
            print(f"resuming {folder}: {len(done & {s.index for s in chosen})} of {len(chosen)} "
                  f"samples already done")
        todo = [s for s in ctx.shard(chosen) if s.index not in done]
        for sample in tqdm(todo, desc=f"{task.protocol.name} {run_name(options)}",
                           disable=not ctx.is_main):
            record = evaluate_sample(task, sample, model, tokenizer, options, repl, label_ids)
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
            "task": task.protocol.name, "run": run_name(options),
            "method": "pa_lrp" if options.pe else "attnlrp",
            "flags": {k: bool(getattr(options, k)) for k in MAP_FLAGS},
            "dtype": str(dtype).removeprefix("torch."),
            "model": str(path), "data": str(data), "selection": task.selection,
            "max_samples": options.max_samples, "num_samples": len(records),
            "num_correct": None if task.selection == "first" else
            sum(bool(r.get("correct")) for r in records),
            "counts": "exact" if options.exact_counts else "original",
            "replacement_token_id": repl, "max_length": options.max_length,
            **summary,
        }
        atomic_write_json(folder / "metrics.json", metrics)
        print(format_table([metrics]))
        print(f"wrote {folder / 'metrics.json'}")
        return metrics
    finally:
        release_locks()                  # the run folder's lock (taken by check_run)
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
    from palrp.loaders.hub import model_label   # a cached snapshot: the repo's name
    rows = [[model_label(r["model"]), r["run"], str(r["num_samples"]) + ("*" if i in marked else ""),
             _correct(r)] + [f"{r['auc'][k]:.4f}" for k in keys] for i, r in enumerate(runs)]
    note = ("* other data or N than the first row of its model: not comparable with it "
            "(rerun both with the same --data-path and --max-samples)") if marked else None
    if latex:
        return latex_table(["Model", "Run", "N", "Correct"] + keys, rows, note)
    return markdown_table(["model", "run", "N", "correct"] +
                          [f"{k} {a}" for k, a in zip(keys, arrows)], rows, note)


def _finished_run(path: Path) -> dict | None:
    """The metrics of a finished run, or None (and one warning line naming the file and how to
    recompute it) when ``path`` is unreadable, not JSON or lacks a number of the table."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        problem = record_problem(run, METRICS_RECORD, "metrics")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problem = f"not JSON: {str(exc).splitlines()[0][:80]}" if isinstance(exc, ValueError) \
            else f"unreadable: {exc.strerror or type(exc).__name__}"
    if problem is None:
        return run
    print(f"warning: {path} is damaged ({problem}); left out of the table; run --mode pert "
          f"again with that run's flags (recorded in {path.parent / 'run.json'}) to recompute "
          f"it", file=sys.stderr)
    return None


def analyze(task: Task, output_dir, latex: bool = False) -> list[dict]:
    """Print the table of every finished run of ``task`` under ``output_dir`` (and its LaTeX
    form with ``latex``); return the runs' metrics. A damaged metrics.json is left out of the
    table with a warning line (:func:`_finished_run`)."""
    root = Path(output_dir) / task.protocol.name
    runs = [run for run in map(_finished_run, sorted(root.glob("*/*/metrics.json"))) if run]
    if not runs:
        raise PerturbationError(f"no finished run under {root}; run {{mode}} pert first", "mode")
    print(f"## {task.protocol.name}\n")
    print(format_table(runs))
    if latex:
        print()
        print(format_table(runs, latex=True))
    return runs


if __name__ == "__main__":
    sys.exit("run NLP/eval_pert_imdb.py, eval_pert_arc.py or eval_pert_wiki.py")
