"""The IMDB fine-tuning loop behind ``NLP/main_imdb.py`` (docs/protocols.md).

The library takes typed options (:class:`TrainOptions`, :class:`EvalOptions`; the command
line's flags become them in ``NLP/main_imdb.py``); its errors are :class:`SetupError` lines
whose options the command line spells as flags.

- Data: :func:`palrp.data.text_data.load_imdb_csv` and the original's 70/30 split
  (:func:`palrp.data.text_data.imdb_split`), the first ``max_train`` / ``max_test`` rows of each
  part. Class indices: the model config's ``id2label`` when it names both sentiments, else
  positive = 0, negative = 1; the saved classifier names them in ``id2label`` / ``label2id``.
- Model (:mod:`palrp.nlp.imdb_model`): the stock ``...ForSequenceClassification`` of the checkpoint's
  family (Llama as in the paper, or any family the text engine explains), input embeddings
  frozen, or LoRA adapters plus the score head with ``lora``.
- Optimisation: AdamW, gradient clipping at 1.0, linear schedule with warmup, where
  ``num_warmup_steps`` counts *epochs* of warmup as in the original README command. Training
  uses the true gradients of the stock model's cross-entropy (the original back-propagated LRP
  relevance); training never runs through the explanation engine (only its list of supported
  families is read, to refuse others early).
- Divergence: every step checks the loss and the global gradient norm (the one clipping
  computes); a non-finite one stops the run before the optimiser step with
  :class:`NonFiniteTraining` (one line: step, epoch, what was non-finite, and the fix, a lower
  ``lr``). Every parameter is checked before ``best/`` or the training state is written
  (:func:`nonfinite_parameter`), so neither ever holds a non-finite model; an earlier finite
  ``best/`` and state stay as they were.
- Chance level: a run whose best test accuracy is at most the majority-class rate of the test
  split plus :data:`CHANCE_MARGIN` (0.05) did not learn; its summary says so (printed, and in
  ``metrics.json`` as ``chance_warning``, :func:`chance_warning`); it still ends normally.
- Every epoch the test split is evaluated; the best model is saved in ``<output_dir>/best``;
  per-epoch results go to ``<output_dir>/metrics.json``; ``training_state.pt``
  (:mod:`palrp.nlp.imdb_state`) lets ``resume`` continue at the next step with the batch order of an
  uninterrupted run. An output folder that already holds a run is refused unless ``resume``
  (continue it) or ``overwrite`` (start again, replacing only what this program wrote).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from palrp import config
from palrp.data.text_data import imdb_split, load_imdb_csv, sentiment_label_ids
from palrp.runtime import resolve_device
from palrp.runtime.store import atomic_write_json

from .imdb_model import (SetupError, build_model, check_checkpoint, load_tokenizer, merge_lora,
                         nonfinite_parameter, save_pretrained_atomic, written_by_us)
from .imdb_state import (STATE_FILE, check_settings, load_training_state, save_training_state,
                         set_rng_state, settings)

__all__ = ["TrainOptions", "EvalOptions", "METRICS_FILE", "EVAL_FILE", "Split", "encode_split", "batch_order", "collate",
           "compute_loss", "train_step", "evaluate", "seed_everything", "claim_output_dir",
           "run_eval", "run_training", "NonFiniteStep", "NonFiniteTraining", "check_finite_step",
           "nonfinite_parameter", "CHANCE_MARGIN", "majority_rate", "chance_warning"]

METRICS_FILE = "metrics.json"
EVAL_FILE = "eval.json"
#: What a training run writes into its output folder (files, then classifier folders).
RUN_FILES = (STATE_FILE, METRICS_FILE)
RUN_FOLDERS = ("best", "best_adapter")
#: A run is at chance level when its best test accuracy is at most the majority-class rate of
#: the test split plus this margin (:func:`chance_warning`).
CHANCE_MARGIN = 0.05


class NonFiniteStep(FloatingPointError):
    """A training step whose loss or gradient norm is not finite (raised by
    :func:`check_finite_step` before the optimiser step, so the weights are untouched).
    ``what`` is ``"loss"`` or ``"gradient norm"``, ``value`` the non-finite number."""

    def __init__(self, what: str, value: float):
        self.what, self.value = what, value
        super().__init__(f"the {what} is {value}")


class NonFiniteTraining(SetupError):
    """The run stopped because training diverged (a non-finite loss, gradient norm or
    parameter); one line naming the step, the epoch, what was non-finite and the fix."""


@dataclass(frozen=True)
class TrainOptions:
    """A training run (the flags of ``NLP/main_imdb.py``, typed; the defaults are its
    defaults). ``num_warmup_steps`` counts *epochs*; ``save_steps`` 0: the state is saved at
    epoch ends only; ``bf16``: bfloat16 autocast (and bfloat16 base weights with ``lora``).
    ``resume`` continues the run in ``output_dir``, ``overwrite`` starts it again."""
    model_path: Path
    data_path: Path
    output_dir: Path
    device: str | None = None
    lr: float = 5e-4
    num_warmup_steps: int = 1
    num_epochs: int = 10
    batch_size: int = 32
    max_length: int = 512
    max_train: int = 5000
    max_test: int = 5000
    weight_decay: float = 0.0
    save_steps: int = 0
    resume: bool = False
    overwrite: bool = False
    lora: bool = False
    lora_rank: int = 16
    bf16: bool = False
    seed: int = config.SEED
    gradient_checkpointing: bool = False

    def __post_init__(self):
        for name in ("model_path", "data_path", "output_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)))


@dataclass(frozen=True)
class EvalOptions:
    """Test accuracy of the classifier in ``model_path`` on the test split of ``data_path``
    (the first ``max_test`` rows of the original's split), written to
    ``<output_dir>/eval.json``."""
    model_path: Path
    data_path: Path
    output_dir: Path
    device: str | None = None
    batch_size: int = 32
    max_length: int = 512
    max_train: int = 5000
    max_test: int = 5000
    bf16: bool = False

    def __post_init__(self):
        for name in ("model_path", "data_path", "output_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)))


# --- data ---------------------------------------------------------------------------------

@dataclass
class Split:
    """Token ids (unpadded, truncated) and class indices of one part of the split."""
    ids: list[list[int]]
    labels: list[int]


def encode_split(tokenizer, reviews: list[str], sentiments: list[str], label_ids: dict[str, int],
                 max_length: int) -> Split:
    enc = tokenizer(reviews, truncation=True, max_length=max_length)["input_ids"]
    return Split(ids=[list(x) for x in enc], labels=[label_ids[s] for s in sentiments])


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of an epoch: a permutation drawn from (seed, epoch) only, so a resumed run
    sees the batches of an uninterrupted one."""
    import torch

    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen).tolist()
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


def collate(seqs: list[list[int]], pad_id: int, device):
    """Right-padded ``input_ids`` and ``attention_mask`` of a batch."""
    import torch

    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids.to(device), mask.to(device)


# --- one step / evaluation -------------------------------------------------------------------

def compute_loss(model, input_ids, attention_mask, labels, autocast_dtype=None):
    """The stock model's own cross-entropy on its pooled logits (true gradients follow from
    ``loss.backward()``)."""
    import torch

    with torch.autocast(input_ids.device.type, dtype=autocast_dtype or torch.bfloat16,
                        enabled=autocast_dtype is not None):
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss


def check_finite_step(loss: float, grad_norm: float) -> None:
    """:class:`NonFiniteStep` when the loss or the global gradient norm is NaN or infinite."""
    if not math.isfinite(loss):
        raise NonFiniteStep("loss", loss)
    if not math.isfinite(grad_norm):
        raise NonFiniteStep("gradient norm", grad_norm)


def train_step(model, optimizer, scheduler, input_ids, attention_mask, labels, clip: float = 1.0,
               autocast_dtype=None, loss_scale: float = 1.0,
               guard: Callable[[float, float], None] | None = check_finite_step) -> float:
    """One optimiser step: loss, backward, clip the global gradient norm, AdamW, schedule.

    ``loss_scale`` multiplies the loss before the backward: a data-parallel rank holding ``n``
    of a global batch of ``N`` samples uses ``n / N * world_size``, so that DDP's average over
    ranks is the mean over the global batch, exactly as in one process. ``guard(loss,
    grad_norm)`` runs after clipping and before the optimiser step (the gradient norm is the
    one clipping computed, before clipping); by default :func:`check_finite_step`, which
    raises :class:`NonFiniteStep` on a non-finite one, so that the weights stay as they were
    (the gradients are cleared). Returns the unscaled mean loss of the samples given."""
    import torch

    loss = compute_loss(model, input_ids, attention_mask, labels, autocast_dtype)
    (loss * loss_scale).backward()
    norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                          clip)
    if guard is not None:
        try:
            guard(float(loss.detach()), float(norm))
        except BaseException:
            optimizer.zero_grad(set_to_none=True)
            raise
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def evaluate(model, split: Split, batch_size: int, pad_id: int, device, autocast_dtype=None,
             desc: str = "eval", ctx=None) -> tuple[float, list[int]]:
    """Accuracy and predicted class per sample (batches sorted by length to save padding).

    Under data parallelism (``ctx`` with several ranks) each rank predicts a disjoint share and
    the accuracy counts every rank's; ``preds`` then holds this rank's share (others stay 0)."""
    import torch
    from tqdm import tqdm

    order = sorted(range(len(split.ids)), key=lambda i: len(split.ids[i]))
    preds = [0] * len(order)
    if ctx is not None:
        order = ctx.shard(order)
    model.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False,
                          disable=ctx is not None and not ctx.is_main):
            idx = order[start:start + batch_size]
            ids, mask = collate([split.ids[i] for i in idx], pad_id, device)
            with torch.autocast(ids.device.type, dtype=autocast_dtype or torch.bfloat16,
                                enabled=autocast_dtype is not None):
                logits = model(input_ids=ids, attention_mask=mask).logits
            for i, p in zip(idx, logits.argmax(-1).tolist()):
                preds[i] = p
    model.train()
    correct = sum(int(preds[i] == split.labels[i]) for i in order)
    if ctx is not None:
        correct = int(ctx.total(correct))
    return correct / max(len(preds), 1), preds


# --- chance level ---------------------------------------------------------------------------

def majority_rate(labels: list[int]) -> float:
    """The fraction of the most frequent class in ``labels`` (the accuracy of always
    predicting it; 0 for no labels)."""
    if not labels:
        return 0.0
    return max(labels.count(c) for c in set(labels)) / len(labels)


def chance_warning(best_accuracy: float, majority: float, margin: float = CHANCE_MARGIN,
                   spell: Callable[[str], str] = lambda name: name) -> str | None:
    """The warning of a run at chance level, or None. At chance: ``best_accuracy <= majority +
    margin`` (``majority``: the majority-class rate of the test split, what a model that
    always predicts one class scores; ``margin`` :data:`CHANCE_MARGIN` by default). ``spell``
    writes an option's name (the command line: as its flag)."""
    if best_accuracy > majority + margin:
        return None
    return (f"warning: best test accuracy {best_accuracy:.4f} is at chance level (majority "
            f"class {majority:.4f}, margin {margin:.2f}); the model did not learn: lower "
            f"{spell('lr')} or train longer ({spell('num_epochs')})")


# --- the run ------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def claim_output_dir(out: Path, resume: bool, overwrite: bool, is_main: bool = True) -> None:
    """Refuse to replace another run's progress: a folder holding a run is continued with
    ``resume`` or started again with ``overwrite``, which removes only what this program
    wrote (:data:`RUN_FILES`, and :data:`RUN_FOLDERS` that carry its marker). A ``best/`` it did
    not write is never replaced."""
    found = [name for name in RUN_FILES + RUN_FOLDERS if (out / name).exists()]
    foreign = [name for name in RUN_FOLDERS if (out / name).exists() and not written_by_us(out / name)]
    if foreign:
        raise SetupError(f"{out / foreign[0]} was not written by main_imdb.py and would be "
                         f"replaced; move it away or pass another {{output_dir}}", "output_dir")
    if found and not resume and not overwrite:
        raise SetupError(f"{out} already holds a training run ({', '.join(found)}); pass "
                         f"{{resume}} to continue it, {{overwrite}} to start it again, or another "
                         f"{{output_dir}}", "resume", "overwrite", "output_dir")
    if overwrite and not resume and is_main:
        import shutil
        for name in found:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def run_eval(options: EvalOptions) -> dict:
    """Test accuracy of the classifier in ``options.model_path`` on the test split; written to
    ``<output_dir>/eval.json``."""
    path = options.model_path
    cfg = check_checkpoint(path, classifier=True)
    reviews, sentiments = load_imdb_csv(options.data_path)
    test = imdb_split(reviews, sentiments, options.max_train, options.max_test)["test"]
    tok = load_tokenizer(path)
    label_ids = sentiment_label_ids(cfg.get("id2label"))
    split = encode_split(tok, *test, label_ids, options.max_length)
    device = resolve_device(options.device)
    import torch

    from palrp.loaders.text_models import ModelFolderError, load_text_model

    try:
        model = load_text_model(path, "classifier", tokenizer=False, dtype=torch.float32,
                                device=device).model
    except ModelFolderError as exc:
        raise SetupError(str(exc)) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    autocast = torch.bfloat16 if options.bf16 else None
    acc, _ = evaluate(model, split, options.batch_size, tok.pad_token_id, device, autocast, "test")
    result = {"model_path": str(path), "data_path": str(options.data_path), "test_samples":
              len(split.labels), "test_accuracy": acc}
    atomic_write_json(options.output_dir / EVAL_FILE, result)
    print(f"test accuracy {acc:.4f} on {len(split.labels)} reviews ({path})")
    return result


def run_training(options: TrainOptions, callback: Callable[[int, float], None] | None = None,
                 spell: Callable[[str], str] = lambda name: name) -> dict:
    """Train (or, with ``options.resume``, continue training); return the metrics dictionary.

    ``callback(step, loss)`` is called after every optimiser step (and after any state save of
    that step). A non-finite loss, gradient norm or parameter stops the run with
    :class:`NonFiniteTraining` before anything non-finite is written; a run at chance level
    carries ``chance_warning`` (:func:`chance_warning`, its options written by ``spell``) in
    the metrics and prints it."""
    cfg = check_checkpoint(options.model_path)
    reviews, sentiments = load_imdb_csv(options.data_path)
    parts = imdb_split(reviews, sentiments, options.max_train, options.max_test)
    import torch
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    from palrp.runtime import init_distributed

    ctx = init_distributed(options.device)
    device = ctx.device
    out = options.output_dir
    state_path = out / STATE_FILE
    saved = None
    if options.resume:
        if not state_path.is_file():
            raise SetupError(f"{{resume}}: no {STATE_FILE} in {out}; run without {{resume}} "
                             f"first (or pass the {{output_dir}} of the run to continue)",
                             "resume", "output_dir")
        saved = load_training_state(state_path)
        check_settings(saved, options)
    claim_output_dir(out, options.resume, options.overwrite, ctx.is_main)
    ctx.barrier()

    tok = load_tokenizer(options.model_path)
    label_ids = sentiment_label_ids(cfg.get("id2label"))
    train = encode_split(tok, *parts["train"], label_ids, options.max_length)
    test = encode_split(tok, *parts["test"], label_ids, options.max_length)

    seed_everything(options.seed)
    model = build_model(options.model_path, tok, label_ids, lora=options.lora, lora_rank=options.lora_rank,
                        bf16=options.bf16, gradient_checkpointing=options.gradient_checkpointing,
                        device=device)
    model.train()
    trainer = model                      # what the training forward runs through
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel
        trainer = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    steps_per_epoch = math.ceil(len(train.ids) / options.batch_size)
    total_steps = steps_per_epoch * options.num_epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, min(options.num_warmup_steps * steps_per_epoch, total_steps), total_steps)
    autocast = torch.bfloat16 if options.bf16 else None

    progress = {"settings": settings(options), "step": 0, "epoch_loss": 0.0, "history": [],
                "best_accuracy": -1.0, "best_epoch": None, "label_ids": label_ids}
    if saved is not None:
        named = dict(model.named_parameters())
        differ = {n for n, p in named.items() if p.requires_grad} ^ set(saved["trainable"])
        if differ:
            raise SetupError(f"{{resume}}: the saved state of {out} does not fit this model "
                             f"({len(differ)} tensor names differ); use a new {{output_dir}}",
                             "resume", "output_dir")
        bad = next((n for n, t in saved["trainable"].items()
                    if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
        if bad is not None:
            raise SetupError(f"{{resume}}: the saved state of {out} holds non-finite values in "
                             f"{bad!r}; start again with {{overwrite}} and a lower {{lr}}",
                             "resume", "overwrite", "lr")
        with torch.no_grad():
            for n, t in saved["trainable"].items():
                named[n].copy_(t)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
        progress.update({k: saved[k] for k in ("step", "epoch_loss", "history", "best_accuracy",
                                                "best_epoch")})
        if ctx.is_main:
            print(f"resuming {out}: {progress['step']} of {total_steps} steps already done")

    majority = majority_rate(test.labels)

    def metrics() -> dict:
        warning = chance_warning(progress["best_accuracy"], majority, spell=spell) \
            if progress["history"] else None
        return {"model_path": str(options.model_path), "data_path": str(options.data_path),
                "settings": progress["settings"], "label_ids": label_ids,
                "train_samples": len(train.ids), "test_samples": len(test.ids),
                "steps_per_epoch": steps_per_epoch, "epochs": progress["history"],
                "best_epoch": progress["best_epoch"], "best_accuracy": progress["best_accuracy"],
                "best_path": str(out / "best"), "majority_rate": majority,
                "chance_margin": CHANCE_MARGIN, "at_chance": warning is not None,
                "chance_warning": warning}

    def diverged(what: str) -> NonFiniteTraining:
        step = progress["step"]
        epoch = (step - 1) // steps_per_epoch + 1
        return NonFiniteTraining(
            f"training diverged at step {step} (epoch {epoch}): {what}; "
            f"stopped before writing it (best/ and {STATE_FILE} hold only finite models); "
            f"rerun with a lower {{lr}} (now {options.lr:g}), with {{overwrite}} to start "
            f"{out} again", "lr", "overwrite")

    def check_model(when: str) -> None:
        bad = nonfinite_parameter(model)
        if bad is not None:
            raise diverged(f"parameter {bad[0]!r} is not finite ({bad[1]}) {when}")

    def guard(loss: float, norm: float) -> None:
        # under data parallelism the loss of the global batch: every rank stops together
        if ctx.active:
            loss = ctx.total(loss * weight / ctx.world_size)
        check_finite_step(loss, norm)

    best_dir = out / ("best_adapter" if options.lora else "best")
    epoch_start = time.time()
    while progress["step"] < total_steps:
        epoch, within = divmod(progress["step"], steps_per_epoch)
        batches = batch_order(len(train.ids), options.batch_size, options.seed, epoch)
        bar = tqdm(batches[within:], desc=f"epoch {epoch + 1}/{options.num_epochs}",
                   initial=within, total=len(batches), disable=not ctx.is_main)
        for batch in bar:
            # data parallel: each rank takes every world_size-th sample of the global batch; a
            # rank left without one runs a sample at weight 0 so that DDP's all-reduce happens
            local = ctx.shard(batch) or batch[:1]
            weight = len(ctx.shard(batch)) / len(batch) * ctx.world_size
            ids, mask = collate([train.ids[i] for i in local], tok.pad_token_id, device)
            labels = torch.tensor([train.labels[i] for i in local], device=device)
            try:
                loss = train_step(trainer, optimizer, scheduler, ids, mask, labels, 1.0,
                                  autocast, loss_scale=weight, guard=guard)
            except NonFiniteStep as exc:
                progress["step"] += 1       # the step that failed, counted from 1
                raise diverged(str(exc)) from None
            if ctx.active:   # the global batch's mean loss, for the log
                loss = ctx.total(loss * weight / ctx.world_size)
            progress["step"] += 1
            progress["epoch_loss"] += loss
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            end_of_epoch = progress["step"] % steps_per_epoch == 0
            if end_of_epoch:
                check_model("after the epoch")
                acc, _ = evaluate(model, test, options.batch_size, tok.pad_token_id, device,
                                  autocast, f"test {epoch + 1}", ctx)
                record = {"epoch": epoch + 1, "step": progress["step"],
                          "train_loss": progress["epoch_loss"] / steps_per_epoch,
                          "test_accuracy": acc, "lr": scheduler.get_last_lr()[0],
                          "seconds": round(time.time() - epoch_start, 2)}
                progress["history"].append(record)
                progress["epoch_loss"] = 0.0
                epoch_start = time.time()
                if acc > progress["best_accuracy"]:
                    progress["best_accuracy"], progress["best_epoch"] = acc, epoch + 1
                    if ctx.is_main:
                        save_pretrained_atomic(model, tok, best_dir)
                if ctx.is_main:
                    tqdm.write(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, "
                               f"test accuracy {acc:.4f} (best {progress['best_accuracy']:.4f}, "
                               f"epoch {progress['best_epoch']})")
                    atomic_write_json(out / METRICS_FILE, metrics())
            save_now = end_of_epoch or (options.save_steps
                                        and progress["step"] % options.save_steps == 0)
            if save_now and not end_of_epoch:   # every rank checks: all stop together
                check_model("before saving the training state")
            if ctx.is_main and save_now:
                save_training_state(state_path, model, optimizer, scheduler, progress)
            if callback is not None:
                callback(progress["step"], loss)
        bar.close()

    ctx.barrier()
    if ctx.is_main:
        if options.lora:
            merge_lora(options.model_path, out, tok, label_ids, bf16=options.bf16)
        final = metrics()
        atomic_write_json(out / METRICS_FILE, final)
        print(f"best test accuracy {progress['best_accuracy']:.4f} at epoch "
              f"{progress['best_epoch']}; classifier in {out / 'best'}")
        if final["chance_warning"]:
            print(final["chance_warning"])
    ctx.barrier()
    ctx.close()
    return metrics()
