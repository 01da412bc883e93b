"""Model I/O of the IMDB fine-tuning (``NLP/main_imdb.py``, docs/protocols.md): which folder a
``--model-size`` names, checking a checkpoint folder before any work, its tokenizer, the stock
``...ForSequenceClassification`` of the checkpoint's family to train, loaded by
:mod:`palrp.loaders.text_models` (2 labels; pad = eos when the tokenizer has no pad token; right
padding; embeddings frozen; or LoRA adapters on every linear projection of the base model
plus the fully trained head, :func:`lora_targets`), and saving the best classifier atomically with
``save_pretrained``.

A saved classifier folder carries the marker file :data:`BEST_MARKER`; only folders with it are
ever replaced, so a folder the user put at ``<output-dir>/best`` is never touched.
"""
from __future__ import annotations

from pathlib import Path

from palrp import config
from palrp.runtime.options import OptionError
from palrp.runtime.store import atomic_output_dir

__all__ = ["MODEL_SIZES", "lora_targets", "BEST_MARKER", "SetupError", "model_folder",
           "default_data_path", "check_checkpoint", "load_tokenizer", "build_model",
           "save_pretrained_atomic", "written_by_us", "merge_lora", "nonfinite_parameter"]

MODEL_SIZES = ("llama_tiny", "llama_2_7b", "demo")
#: Marker file inside every classifier folder this program saves.
BEST_MARKER = ".written_by_main_imdb"


class SetupError(OptionError):
    """Bad model folder, settings or saved state; the message is one line naming the fix (the
    options it names are ``{name}`` placeholders, :class:`palrp.runtime.options.OptionError`)."""


def nonfinite_parameter(model) -> tuple[str, str] | None:
    """The name of the first parameter (or floating-point buffer) of ``model`` holding a NaN or
    infinite value, and which (``"nan"`` when it holds a NaN, else ``"inf"``); None when every
    value is finite (:func:`palrp.loaders.health.first_nonfinite`)."""
    from palrp.loaders.health import first_nonfinite

    found = first_nonfinite([*model.named_parameters(), *model.named_buffers()])
    return None if found is None else (found[0], "nan" if found[3] else "inf")


def model_folder(model_size: str, allow_download: bool = False) -> Path:
    """The local folder of ``--model-size`` (``demo``: the embedded LM): the folder of
    ``config.LLAMA_MODELS`` when it exists, else the snapshot of its hub id
    (``config.LLAMA_HUB_IDS``) in the Hugging Face cache, fetched first only with
    ``allow_download`` (:func:`palrp.loaders.hub.named_model_dir`; neither: one-line
    :class:`palrp.loaders.hub.HubError`)."""
    if model_size == "demo":
        return config.DEMO_TEXT_DIR / "lm"
    from palrp.loaders.hub import named_model_dir
    return named_model_dir(model_size, config.LLAMA_MODELS[model_size],
                           config.LLAMA_HUB_IDS[model_size], allow_download=allow_download)


def default_data_path(model_size: str) -> Path:
    """The embedded IMDB-style CSV for ``demo``, the Kaggle CSV of ``config.py`` otherwise."""
    return config.DEMO_TEXT_DIR / "imdb.csv" if model_size == "demo" else Path(config.IMDB_CSV_PATH)


def check_checkpoint(path: Path, classifier: bool = False) -> dict:
    """The ``config.json`` of the checkpoint in ``path``; :class:`SetupError` when the folder is
    missing, is no ``save_pretrained`` checkpoint of a family with an explainable sequence
    classifier (palrp/loaders/text_models.py), has no weights, or (``classifier``) is not a 2-label
    sequence classifier."""
    from palrp.loaders.text_models import ModelFolderError, check_model_folder, checkpoint_class

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
                         f"{archs}); {{eval}} needs a classifier saved by this script", "eval")
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


def lora_targets(model) -> tuple[list[str], list[str]]:
    """Where LoRA goes in a sequence classifier of any family, read from the model: the full
    names of every linear projection inside the base model (``nn.Linear`` and transformers'
    ``Conv1D`` of GPT-2: q/k/v/o and gate/up/down in Llama-type models, ``c_attn``/``c_proj``/
    ``c_fc`` in GPT-2, ``query``/``key``/``value``/``dense`` and BERT's pooler in BERT/RoBERTa),
    and the modules of the classification head (the top-level children with parameters outside
    ``base_model_prefix``: ``score``, ``classifier``), which are trained in full. Full names,
    so that a head module sharing a projection's short name (RoBERTa's ``classifier.dense``) is
    not also adapted. Returns (target names, head names)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    prefix = model.base_model_prefix
    base = getattr(model, prefix, None)
    if base is None:
        raise SetupError(f"{type(model).__name__} has no base model {prefix!r}; LoRA needs the "
                         "stock transformers layout")
    targets = [f"{prefix}.{name}" for name, module in base.named_modules()
               if isinstance(module, (torch.nn.Linear, Conv1D))]
    head = [name for name, child in model.named_children()
            if name != prefix and any(True for _ in child.parameters())]
    if not targets or not head:
        raise SetupError(f"{type(model).__name__}: found no linear projections or no "
                         "classification head for LoRA")
    return targets, head


def build_model(path: Path, tokenizer, label_ids: dict[str, int], *, lora: bool = False,
                lora_rank: int = 16, bf16: bool = False, gradient_checkpointing: bool = False,
                device: str = "cpu"):
    """The stock sequence classifier of ``path``'s family for training: 2 labels named
    after ``label_ids``, pad token from ``tokenizer``, input embeddings frozen; with ``lora``,
    peft LoRA adapters on every linear projection plus a fully trained classification head
    (:func:`lora_targets`; base weights in bfloat16 when ``bf16``)."""
    import torch

    from palrp.loaders.text_models import ModelFolderError, load_text_model

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

        targets, head = lora_targets(model)
        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.05,
            target_modules=targets, modules_to_save=head))
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    return model.to(device)


def save_pretrained_atomic(model, tokenizer, folder: Path) -> None:
    """``save_pretrained`` of the model and its tokenizer into ``folder``, swapped in whole
    (the previous folder survives until the new one is complete), with :data:`BEST_MARKER`.
    A model holding a non-finite value is never saved (:class:`SetupError`, the folder left as
    it was)."""
    bad = nonfinite_parameter(model)
    if bad is not None:
        raise SetupError(f"not saving {folder}: parameter {bad[0]!r} of the trained model is not "
                         f"finite ({bad[1]}); training diverged: rerun with a lower {{lr}}", "lr")
    with atomic_output_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / BEST_MARKER).write_text("saved by NLP/main_imdb.py\n")


def written_by_us(folder: Path) -> bool:
    """Whether ``folder`` is a classifier folder this program saved (:data:`BEST_MARKER`)."""
    return (Path(folder) / BEST_MARKER).is_file()


def merge_lora(model_path: Path, output_dir: Path, tokenizer, label_ids, bf16: bool = False) -> None:
    """Write ``<output_dir>/best`` as a plain classifier: the base model of ``model_path`` with
    the best LoRA adapters of ``<output_dir>/best_adapter`` merged in (loadable without peft);
    ``bf16``: the base weights in bfloat16, as they were trained."""
    import torch
    from peft import PeftModel

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    output_dir = Path(output_dir)
    base = build_model(model_path, tokenizer, label_ids, bf16=bf16, device="cpu")
    if bf16:
        base = base.to(torch.bfloat16)
    merged = PeftModel.from_pretrained(base, output_dir / "best_adapter").merge_and_unload()
    merged.config.pad_token_id = tokenizer.pad_token_id
    save_pretrained_atomic(merged, tokenizer, output_dir / "best")
