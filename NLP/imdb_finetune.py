"""Fine-tuning a classifier on IMDB (docs/protocols.md, section 3); the logic behind ``NLP/main_imdb.py``.

- Data: :func:`data.text_data.load_imdb_csv` and the original's 70/30 split
  (:func:`data.text_data.imdb_split`), the first ``--max-train`` / ``--max-test`` rows of each part.
  Class indices: the model config's ``id2label`` when it names both sentiments, else
  positive = 0, negative = 1; the saved classifier names them in ``id2label`` / ``label2id``.
- Model: the stock ``...ForSequenceClassification`` of the checkpoint's family (Llama as in the
  paper, or any family the text engine explains), loaded by :mod:`modules.text_models` (2 labels;
  pad = eos when the tokenizer has no pad token; right padding; transformers pools at the last
  non-pad token); input embeddings frozen, everything else trained, or LoRA adapters (peft, on
  the Llama-style projection names of ``LORA_TARGETS``) plus the score head with ``--lora``.
- Optimisation: AdamW, gradient clipping at 1.0, linear schedule with warmup, where
  ``--num-warmup-steps`` counts *epochs* of warmup as in the original README command. Training
  uses the true gradients of the stock model's cross-entropy (docs/protocols.md, section 5: the original
  back-propagated LRP relevance); training never runs through the explanation engine (only its
  list of supported families is read, to refuse others early).
- Every epoch the test split is evaluated; the best model is saved with ``save_pretrained`` (and
  its tokenizer) in ``<output-dir>/best``; per-epoch results go to ``<output-dir>/metrics.json``.
- ``<output-dir>/training_state.pt`` holds the trainable weights, optimizer, scheduler, RNG states,
  the step and the history, written atomically at each epoch end (and every ``--save-steps``);
  ``--resume`` continues at the next step, with the batch order of an uninterrupted run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import config
from data.text_data import DataError, imdb_split, load_imdb_csv, sentiment_label_ids
from runtime.store import atomic_write_json

MODEL_SIZES = ("llama_tiny", "llama_2_7b", "demo")
STATE_FILE = "training_state.pt"
METRICS_FILE = "metrics.json"
# Settings a resumed run must share with the run it continues (they fix data, model, schedule).
RESUME_KEYS = ("model_path", "data_path", "lr", "num_warmup_steps", "num_epochs", "batch_size",
               "max_length", "max_train", "max_test", "seed", "lora", "lora_rank", "bf16",
               "weight_decay")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class SetupError(Exception):
    """Bad model folder, settings or saved state; the message is one line naming the fix."""


# --- model folders ----------------------------------------------------------------------

def model_folder(model_size: str) -> Path:
    """The local folder of ``--model-size`` (``demo``: the embedded LM, docs/protocols.md, section 6)."""
    if model_size == "demo":
        return config.DEMO_TEXT_DIR / "lm"
    return Path(config.LLAMA_MODELS[model_size])


def default_data_path(model_size: str) -> Path:
    """The embedded IMDB-style CSV for ``demo``, the Kaggle CSV of ``config.py`` otherwise."""
    return config.DEMO_TEXT_DIR / "imdb.csv" if model_size == "demo" else Path(config.IMDB_CSV_PATH)


def check_checkpoint(path: Path, classifier: bool = False) -> dict:
    """The ``config.json`` of the checkpoint in ``path``; :class:`SetupError` when the folder is
    missing, is no ``save_pretrained`` checkpoint of a family with an explainable sequence
    classifier (modules/text_models.py), has no weights, or (``classifier``) is not a 2-label
    sequence classifier."""
    from modules.text_models import ModelFolderError, check_model_folder, checkpoint_class

    path = Path(path)
    try:
        cfg = check_model_folder(path)
        checkpoint_class(path, "classifier")
    except ModelFolderError as exc:
        raise SetupError(str(exc)) from None
    labels = len(cfg.get("id2label") or {}) or cfg.get("num_labels")
    archs = cfg.get("architectures") or []
    if classifier and (not any(a.endswith("ForSequenceClassification") for a in archs)
                       or labels != 2):
        raise SetupError(f"{path} is not a 2-label sequence classifier (architectures "
                         f"{archs}); --eval needs a classifier saved by this script")
    return cfg


def load_tokenizer(path: Path):
    """The checkpoint's tokenizer, right-padded, with pad = eos when it has no pad token."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001
        raise SetupError(f"{path} has no loadable tokenizer ({type(exc).__name__}); save the "
                         f"tokenizer into the model folder with save_pretrained")
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise SetupError(f"the tokenizer of {path} has neither a pad nor an eos token; add a "
                             f"pad token to it")
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def build_model(path: Path, tokenizer, label_ids: dict[str, int], *, lora: bool = False,
                lora_rank: int = 16, bf16: bool = False, gradient_checkpointing: bool = False,
                device: str = "cpu"):
    """The stock sequence classifier of ``path``'s family for training: 2 labels named
    after ``label_ids``, pad token from ``tokenizer``, input embeddings frozen; with ``lora``,
    peft LoRA adapters on every projection plus a trained score head (base weights in bfloat16
    when ``bf16``)."""
    import torch

    from modules.text_models import ModelFolderError, load_text_model

    id2label = {i: s for s, i in label_ids.items()}
    dtype = torch.bfloat16 if (lora and bf16) else torch.float32
    try:
        model = load_text_model(
            path, "classifier", new_head=True, tokenizer=False, dtype=dtype, device="cpu",
            num_labels=2, id2label=id2label, label2id=dict(label_ids),
            pad_token_id=tokenizer.pad_token_id,
            problem_type="single_label_classification").model
    except ModelFolderError as exc:
        raise SetupError(str(exc)) from None
    model.config.pad_token_id = tokenizer.pad_token_id
    model.get_input_embeddings().weight.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.05,
            target_modules=list(LORA_TARGETS), modules_to_save=["score"]))
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    return model.to(device)


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


def train_step(model, optimizer, scheduler, input_ids, attention_mask, labels, clip: float = 1.0,
               autocast_dtype=None, loss_scale: float = 1.0) -> float:
    """One optimiser step: loss, backward, clip the global gradient norm, AdamW, schedule.

    ``loss_scale`` multiplies the loss before the backward: a data-parallel rank holding ``n``
    of a global batch of ``N`` samples uses ``n / N * world_size``, so that DDP's average over
    ranks is the mean over the global batch, exactly as in one process. Returns the unscaled
    mean loss of the samples given."""
    import torch

    loss = compute_loss(model, input_ids, attention_mask, labels, autocast_dtype)
    (loss * loss_scale).backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
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


# --- saving -------------------------------------------------------------------------------

def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written folder into place (the old one survives until the new one is there)."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def save_pretrained_atomic(model, tokenizer, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _replace_dir(tmp, folder)


def _rng_state() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model) -> dict:
    """The trained tensors (everything with ``requires_grad``), on CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_training_state(path: Path, model, optimizer, scheduler, progress: dict) -> None:
    """Everything ``--resume`` needs, written to a temporary file and renamed into place."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save({"trainable": trainable_state(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": _rng_state(), **progress}, tmp)
    os.replace(tmp, path)


# --- the run ------------------------------------------------------------------------------

def _settings(args) -> dict:
    return {k: (str(getattr(args, k)) if isinstance(getattr(args, k), Path) else getattr(args, k))
            for k in RESUME_KEYS}


def resolve_paths(args) -> None:
    """Fill ``model_path``, ``data_path`` and ``output_dir`` from ``--model-size`` and config."""
    if args.model_path is None:
        args.model_path = model_folder(args.model_size)
    if args.data_path is None:
        args.data_path = default_data_path(args.model_size)
    if args.output_dir is None:
        name = args.model_size if args.model_path == model_folder(args.model_size) \
            else Path(args.model_path).name
        args.output_dir = Path(config.OUTPUT_DIR) / "imdb" / name
    args.model_path, args.data_path = Path(args.model_path), Path(args.data_path)
    args.output_dir = Path(args.output_dir)


def _device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise SetupError(f"--device {name!r} is not a torch device; use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SetupError(f"--device {name} asked for CUDA but none is available; use --device cpu")
    return name


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_eval(args) -> dict:
    """``--eval``: test accuracy of the classifier at ``--model-path`` (default
    ``<output-dir>/best``) on the test split; written to ``<output-dir>/eval.json``."""
    path = args.model_path if args.model_path_given else args.output_dir / "best"
    cfg = check_checkpoint(path, classifier=True)
    reviews, sentiments = load_imdb_csv(args.data_path)
    test = imdb_split(reviews, sentiments, args.max_train, args.max_test)["test"]
    tok = load_tokenizer(path)
    label_ids = sentiment_label_ids(cfg.get("id2label"))
    split = encode_split(tok, *test, label_ids, args.max_length)
    device = _device(args.device)
    import torch

    from modules.text_models import ModelFolderError, load_text_model

    try:
        model = load_text_model(path, "classifier", tokenizer=False, dtype=torch.float32,
                                device=device).model
    except ModelFolderError as exc:
        raise SetupError(str(exc)) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    autocast = torch.bfloat16 if args.bf16 else None
    acc, _ = evaluate(model, split, args.batch_size, tok.pad_token_id, device, autocast, "test")
    result = {"model_path": str(path), "data_path": str(args.data_path), "test_samples":
              len(split.labels), "test_accuracy": acc}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.output_dir / "eval.json", result)
    print(f"test accuracy {acc:.4f} on {len(split.labels)} reviews ({path})")
    return result


def run_training(args, callback: Callable[[int, float], None] | None = None) -> dict:
    """Train (or, with ``args.resume``, continue training); return the metrics dictionary.

    ``callback(step, loss)`` is called after every optimiser step (and after any state save of
    that step)."""
    cfg = check_checkpoint(args.model_path)
    reviews, sentiments = load_imdb_csv(args.data_path)
    parts = imdb_split(reviews, sentiments, args.max_train, args.max_test)
    import torch
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    from runtime import init_distributed

    ctx = init_distributed(_device(args.device))
    device = ctx.device
    out = args.output_dir
    state_path = out / STATE_FILE
    saved = None
    if args.resume:
        if not state_path.is_file():
            raise SetupError(f"--resume: no {STATE_FILE} in {out}; run without --resume first "
                             f"(or pass the --output-dir of the run to continue)")
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        for key, value in _settings(args).items():
            if saved["settings"].get(key) != value:
                raise SetupError(f"--resume: {key} is {value!r} but the saved run used "
                                 f"{saved['settings'].get(key)!r}; resume with the same settings "
                                 f"or use a new --output-dir")
    out.mkdir(parents=True, exist_ok=True)

    tok = load_tokenizer(args.model_path)
    label_ids = sentiment_label_ids(cfg.get("id2label"))
    train = encode_split(tok, *parts["train"], label_ids, args.max_length)
    test = encode_split(tok, *parts["test"], label_ids, args.max_length)

    _seed_everything(args.seed)
    model = build_model(args.model_path, tok, label_ids, lora=args.lora, lora_rank=args.lora_rank,
                        bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing,
                        device=device)
    model.train()
    trainer = model                      # what the training forward runs through
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel
        trainer = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train.ids) / args.batch_size)
    total_steps = steps_per_epoch * args.num_epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, min(args.num_warmup_steps * steps_per_epoch, total_steps), total_steps)
    autocast = torch.bfloat16 if args.bf16 else None

    progress = {"settings": _settings(args), "step": 0, "epoch_loss": 0.0, "history": [],
                "best_accuracy": -1.0, "best_epoch": None, "label_ids": label_ids}
    if saved is not None:
        named = dict(model.named_parameters())
        differ = {n for n, p in named.items() if p.requires_grad} ^ set(saved["trainable"])
        if differ:
            raise SetupError(f"--resume: the saved state of {out} does not fit this model "
                             f"({len(differ)} tensor names differ); use a new --output-dir")
        with torch.no_grad():
            for n, t in saved["trainable"].items():
                named[n].copy_(t)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"])
        progress.update({k: saved[k] for k in ("step", "epoch_loss", "history", "best_accuracy",
                                                "best_epoch")})
        if ctx.is_main:
            print(f"resuming {out} at step {progress['step'] + 1} of {total_steps}")
    elif state_path.exists() and ctx.is_main:
        print(f"starting a new run in {out} (its previous training state is replaced; use "
              f"--resume to continue it)")

    def metrics() -> dict:
        return {"model_path": str(args.model_path), "data_path": str(args.data_path),
                "settings": progress["settings"], "label_ids": label_ids,
                "train_samples": len(train.ids), "test_samples": len(test.ids),
                "steps_per_epoch": steps_per_epoch, "epochs": progress["history"],
                "best_epoch": progress["best_epoch"], "best_accuracy": progress["best_accuracy"],
                "best_path": str(out / "best")}

    best_dir = out / ("best_adapter" if args.lora else "best")
    epoch_start = time.time()
    while progress["step"] < total_steps:
        epoch, within = divmod(progress["step"], steps_per_epoch)
        batches = batch_order(len(train.ids), args.batch_size, args.seed, epoch)
        bar = tqdm(batches[within:], desc=f"epoch {epoch + 1}/{args.num_epochs}",
                   initial=within, total=len(batches), disable=not ctx.is_main)
        for batch in bar:
            # data parallel: each rank takes every world_size-th sample of the global batch; a
            # rank left without one runs a sample at weight 0 so that DDP's all-reduce happens
            local = ctx.shard(batch) or batch[:1]
            weight = len(ctx.shard(batch)) / len(batch) * ctx.world_size
            ids, mask = collate([train.ids[i] for i in local], tok.pad_token_id, device)
            labels = torch.tensor([train.labels[i] for i in local], device=device)
            loss = train_step(trainer, optimizer, scheduler, ids, mask, labels, 1.0, autocast,
                              loss_scale=weight)
            if ctx.active:   # the global batch's mean loss, for the log
                loss = ctx.total(loss * weight / ctx.world_size)
            progress["step"] += 1
            progress["epoch_loss"] += loss
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            end_of_epoch = progress["step"] % steps_per_epoch == 0
            if end_of_epoch:
                acc, _ = evaluate(model, test, args.batch_size, tok.pad_token_id, device,
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
            if ctx.is_main and (end_of_epoch or (args.save_steps
                                                 and progress["step"] % args.save_steps == 0)):
                save_training_state(state_path, model, optimizer, scheduler, progress)
            if callback is not None:
                callback(progress["step"], loss)
        bar.close()

    ctx.barrier()
    if ctx.is_main:
        if args.lora:
            _merge_lora(args, tok, label_ids, model)
        atomic_write_json(out / METRICS_FILE, metrics())
        print(f"best test accuracy {progress['best_accuracy']:.4f} at epoch "
              f"{progress['best_epoch']}; classifier in {out / 'best'}")
    ctx.barrier()
    ctx.close()
    return metrics()


def _merge_lora(args, tokenizer, label_ids, model) -> None:
    """Write ``<output-dir>/best`` as a plain classifier: the base model with the best LoRA
    adapters merged in (loadable without peft)."""
    import torch
    from peft import PeftModel

    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    base = build_model(args.model_path, tokenizer, label_ids, bf16=args.bf16, device="cpu")
    if args.bf16:
        base = base.to(torch.bfloat16)
    merged = PeftModel.from_pretrained(base, args.output_dir / "best_adapter").merge_and_unload()
    merged.config.pad_token_id = tokenizer.pad_token_id
    save_pretrained_atomic(merged, tokenizer, args.output_dir / "best")


# --- command line -------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="main_imdb.py",
        description="Fine-tune a classifier (Llama or another supported family) on IMDB "
                    "(docs/protocols.md, section 3), or evaluate one.")
    p.add_argument("--model-size", choices=MODEL_SIZES, default="demo",
                   help="model folder from config.py: llama_tiny (TinyLlama-1.1B-Chat-v1.0), "
                        "llama_2_7b, or demo (the embedded LM, assets/text/lm) [demo]")
    p.add_argument("--model-path", type=Path, default=None,
                   help="model folder saved with save_pretrained, Llama or any family the text "
                        "engine explains (overrides --model-size); with --eval, the classifier "
                        "to evaluate")
    p.add_argument("--data-path", type=Path, default=None,
                   help="IMDB CSV in the Kaggle layout (review,sentiment) [config.IMDB_CSV_PATH; "
                        "the embedded assets/text/imdb.csv for demo]")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate [5e-4]")
    p.add_argument("--num-warmup-steps", type=int, default=1,
                   help="EPOCHS of linear warmup, as in the original README command [1]")
    p.add_argument("--num-epochs", type=int, default=10, help="training epochs [10]")
    p.add_argument("--batch-size", type=int, default=32, help="batch size [32]")
    p.add_argument("--max-length", type=int, default=512, help="truncate reviews to this many "
                   "tokens [512]")
    p.add_argument("--max-train", type=int, default=5000, help="first N rows of the train split "
                   "[5000]")
    p.add_argument("--max-test", type=int, default=5000, help="first N rows of the test split "
                   "[5000]")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay [0]")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="run folder: best/, metrics.json, training_state.pt "
                        "[config.OUTPUT_DIR/imdb/<model-size>]")
    p.add_argument("--save-steps", type=int, default=0,
                   help="also save the training state every N steps (0: at epoch ends only)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output-dir at the step after its saved state")
    p.add_argument("--eval", action="store_true",
                   help="only evaluate the classifier (--model-path, else <output-dir>/best) on "
                        "the test split")
    p.add_argument("--lora", action="store_true",
                   help="train LoRA adapters (peft) and the score head instead of all weights")
    p.add_argument("--lora-rank", type=int, default=16, help="LoRA rank with --lora [16]")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast (with --lora the frozen base weights are bfloat16 too)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in backward to save memory")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N [cuda when available]")
    p.add_argument("--seed", type=int, default=config.SEED, help="seed [config.SEED]")
    args = p.parse_args(argv)
    for name in ("num_epochs", "batch_size", "max_length", "max_train", "max_test", "lora_rank"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.num_warmup_steps < 0 or args.save_steps < 0:
        p.error("--num-warmup-steps and --save-steps cannot be negative")
    if args.eval and args.resume:
        p.error("--eval and --resume exclude each other")
    args.model_path_given = args.model_path is not None
    resolve_paths(args)
    return args


def main(argv: list[str] | None = None, callback: Callable[[int, float], None] | None = None
         ) -> dict:
    """Entry point of ``NLP/main_imdb.py``; bad input ends with ``error: ...`` and exit 1."""
    args = parse_args(argv)
    try:
        return run_eval(args) if args.eval else run_training(args, callback)
    except (DataError, SetupError) as exc:
        raise SystemExit(f"error: {exc}")


if __name__ == "__main__":
    main()
