"""The one loader of text models from local folders (``save_pretrained`` layout), used by
``explain_text.py``, ``NLP/eval_pert_*.py`` and ``NLP/main_imdb.py``. A hub id
(``org/name[@revision]``) that is no local path is read from its snapshot folder in the local
Hugging Face cache (:func:`model_folder`; :mod:`palrp.loaders.hub`, which never downloads here).

:func:`load_text_model` reads ``config.json`` (``AutoConfig`` picks the family), takes the
stock transformers class of the asked head (causal LM or sequence classifier) and loads the
weights, the tokenizer and the placement in one way:

- dtype: float32 on CPU, bfloat16 on CUDA, unless the caller asks for one
  (:func:`resolve_dtype`; the command lines' ``--bf16`` / ``--fp32`` are
  :func:`palrp.runtime.cli.precision_args`);
- placement: ``device`` (default: CUDA when visible), or ``device_map="auto"`` (accelerate
  spreads a large model over the node's GPUs).

Everything that would make a wrong or random model is refused with one line
(:class:`ModelFolderError`) before any long work: a folder that does not exist, no or non-JSON
``config.json``, a family the text engine does not explain (the line names those it does), no
weights, weights that cannot be read (truncated), no tokenizer, and any weight the checkpoint
did not hold -- transformers would initialise it at random (its load report's MISSING keys), so
a causal LM or a base checkpoint passed as a classifier is refused instead of being scored with a
random head. Only fine-tuning asks for a new head (``new_head=True``): then exactly the head's
weights may be missing. After loading: a sequence classifier asked for as a causal LM (its config
names a ``*ForSequenceClassification`` or its weights a classification head: with tied embeddings
no LM weight would be missing), non-finite weights (the first parameter named,
:func:`palrp.loaders.health.check_finite_parameters`) and a tokenizer with more ids than the
input embedding has rows are refused the same way.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from palrp.loaders.health import check_finite_parameters

__all__ = ["ModelFolderError", "TextModel", "load_text_model", "check_model_folder",
           "checkpoint_class", "model_folder",
           "explainable_heads", "resolve_dtype", "HEADS"]

#: The head kinds a caller can ask for; ``"auto"`` takes the checkpoint's own
#: (``config.architectures``).
HEADS = ("causal_lm", "classifier", "auto")


class ModelFolderError(ValueError):
    """A model folder that cannot give the asked model; the message is one line naming the
    problem and the fix."""


@dataclass
class TextModel:
    model: object       # a stock transformers model, eval mode
    tokenizer: object
    head: str           # "causal_lm" or "classifier"
    path: Path


# --- which models the engine explains ---------------------------------------------------------

def explainable_heads() -> dict[str, tuple[str, str]]:
    """Stock class name -> (head kind ``"causal_lm"`` / ``"classifier"``, family name) of every
    text model the engine explains (the registry's families that read ``input_ids``;
    docs/text_families.md)."""
    from palrp.modules.family import families

    return {cls: (task, family.name) for family in families() if family.stream == "input_ids"
            for cls, task in family.tasks.items() if task in ("causal_lm", "classifier")}


def _supported_line(heads) -> str:
    names = dict.fromkeys(family for _, family in heads.values())
    return "supported families: " + ", ".join(names)


def _class_for(cfg, head: str, path: Path, heads: dict[str, str]):
    """The stock class of ``head`` for ``cfg``'s family."""
    import transformers
    from transformers.models.auto import modeling_auto as auto

    if head == "auto":
        names = [a for a in (cfg.architectures or []) if a in heads]
        if not names and cfg.architectures:
            raise ModelFolderError(
                f"{path} holds a {cfg.architectures[0]}, which the text engine does not explain "
                f"({_supported_line(heads)}); give a causal LM or sequence classifier of one")
        if names:
            return getattr(transformers, names[0]), heads[names[0]][0]
        head = "causal_lm"
    table = (auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES if head == "causal_lm"
             else auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)
    name = table.get(cfg.model_type)
    if name is None or name not in heads:
        what = "causal LM" if head == "causal_lm" else "sequence classifier"
        raise ModelFolderError(
            f"{path} holds a {cfg.model_type!r} model; the text engine explains no {what} of "
            f"that family ({_supported_line(heads)})")
    return getattr(transformers, name), head


# --- dtype and placement ------------------------------------------------------------------------

def resolve_dtype(dtype, device):
    """``dtype`` as a torch dtype; None: bfloat16 on CUDA, float32 elsewhere."""
    import torch

    if dtype is None:
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, str):
        value = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(value, torch.dtype) or not value.is_floating_point:
            raise ModelFolderError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 "
                                   "or float64")
        return value
    return dtype


# --- checks ---------------------------------------------------------------------------------------

_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def model_folder(path) -> Path:
    """``path`` as a local folder: an existing path as it is; a hub id ``org/name[@revision]``
    that is no local path as its snapshot folder in the Hugging Face cache
    (:func:`palrp.loaders.hub.cached_snapshot`, no download; not cached: one line naming the id
    and how to fetch it)."""
    local = Path(path)
    if local.exists():
        return local
    from palrp.loaders.hub import cached_snapshot, parse_hub_id

    parsed = parse_hub_id(path)
    return local if parsed is None else cached_snapshot(*parsed, spec=str(path))


def check_model_folder(path) -> dict:
    """The parsed ``config.json`` of ``path`` (a folder, or a hub id in the cache:
    :func:`model_folder`); :class:`ModelFolderError` when the folder does not exist, has no
    config, or a config that is not JSON or names no model type. Cheap: reads one small file,
    imports neither torch nor transformers."""
    path = model_folder(path)
    if not path.exists():
        raise ModelFolderError(f"model folder not found: {path}; give a folder written by "
                               "save_pretrained (or set its path in config.py)")
    if not path.is_dir():
        raise ModelFolderError(f"{path} is a file, not a model folder; pass the folder written "
                               "by save_pretrained")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelFolderError(f"{path} has no config.json, so it is no save_pretrained model "
                               "folder; pass the folder that holds config.json and the weights")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelFolderError(f"{cfg_file} is not UTF-8 text; save the model again with "
                               "save_pretrained") from None
    except json.JSONDecodeError as exc:
        raise ModelFolderError(f"{cfg_file} is not valid JSON (line {exc.lineno}, column "
                               f"{exc.colno}: {exc.msg}); restore it or save the model "
                               "again") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
        raise ModelFolderError(f"{cfg_file} names no model_type; save the model again with "
                               "save_pretrained")
    return cfg


def _check_weights_present(path: Path) -> None:
    if not any(next(path.glob(p), None) for p in _WEIGHT_PATTERNS):
        raise ModelFolderError(f"{path} has a config but no weights (*.safetensors or "
                               "pytorch_model*.bin); save the model with save_pretrained")


def _head_parameter(model, key: str) -> bool:
    """Whether ``key`` is a weight of the task head (trained from scratch in fine-tuning):
    outside the base model, or the base model's pooler (BERT)."""
    prefix = getattr(model, "base_model_prefix", "")
    return not key.startswith(prefix + ".") or ".pooler." in key


@contextlib.contextmanager
def _quiet_transformers():
    """No load report or progress bar from transformers: this loader says what matters in one
    line (the report's MISSING keys become an error, below)."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def exception_line(exc: BaseException) -> str:
    """An exception as one short line (its type and its first 200 characters), for error
    messages that quote a library's reason."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def checkpoint_class(path, head: str = "auto"):
    """``(stock class, head kind)`` that :func:`load_text_model` would load from ``path``,
    without reading the weights: the folder, config, family and weight-file checks only."""
    import transformers

    path = model_folder(path)
    check_model_folder(path)
    with _quiet_transformers():
        try:
            cfg = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 -- unknown model types and bad fields alike
            raise ModelFolderError(f"transformers cannot read {path / 'config.json'} "
                                   f"({exception_line(exc)}); save the model again with "
                                   "save_pretrained") from None
    cls, kind = _class_for(cfg, head, path, explainable_heads())
    _check_weights_present(path)
    return cls, kind


# --- the loader -----------------------------------------------------------------------------------

def load_text_model(path, head: str = "auto", *, dtype=None, device=None, device_map=None,
                    new_head: bool = False, tokenizer: bool = True,
                    **config_overrides) -> TextModel:
    """Load the ``head`` model of the folder ``path`` (or of a hub id in the Hugging Face cache,
    :func:`model_folder`; see the module docstring).

    ``head``: ``"causal_lm"``, ``"classifier"`` or ``"auto"`` (the checkpoint's own class).
    ``dtype``: torch dtype or name; None = bfloat16 on CUDA, float32 elsewhere.
    ``device``: where the model goes (default CUDA when visible); ignored with ``device_map``.
    ``new_head``: fine-tuning only; the head's weights may be missing (initialised at random
    by transformers), every other weight must be in the file.
    ``config_overrides``: passed to ``from_pretrained`` (e.g. ``num_labels``, ``id2label``).
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    with _quiet_transformers():
        return _load(path, head, dtype, device, device_map, new_head, tokenizer,
                     config_overrides)


def _load(path, head, dtype, device, device_map, new_head, tokenizer, config_overrides):
    import torch
    import transformers

    path = model_folder(path)
    cls, kind = checkpoint_class(path, head)
    tok = None
    if tokenizer:
        try:
            tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ModelFolderError(f"no usable tokenizer in {path} ({exception_line(exc)}); save the "
                                   "tokenizer into the model folder with save_pretrained") from None
    from palrp.runtime.distributed import resolve_device   # the one device resolver
    device = resolve_device(None) if device is None else torch.device(device)
    dtype = resolve_dtype(dtype, device)
    placement = {} if device_map is None else {"device_map": device_map}
    try:
        model, info = cls.from_pretrained(path, local_files_only=True, dtype=dtype,
                                          output_loading_info=True, **placement,
                                          **config_overrides)
    except Exception as exc:  # noqa: BLE001 -- truncated files raise many kinds
        raise ModelFolderError(f"cannot read the weights in {path} ({exception_line(exc)}); the "
                               "file may be truncated or from another model: save the model "
                               "again") from None
    missing = list(info.get("missing_keys") or [])
    missing += [k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys") or []]
    allowed = [k for k in missing if new_head and _head_parameter(model, k)]
    missing = [k for k in missing if k not in allowed]
    if missing:
        shown = ", ".join(sorted(missing)[:4]) + (", ..." if len(missing) > 4 else "")
        if kind == "classifier" and all(_head_parameter(model, k) for k in missing):
            raise ModelFolderError(
                f"{path} has no trained {cls.__name__} head (weights not in the file: {shown}); "
                "a causal LM or base checkpoint is no classifier: pass a classifier fine-tuned "
                "by NLP/main_imdb.py")
        raise ModelFolderError(f"{path} lacks weights that {cls.__name__} needs ({len(missing)} "
                               f"missing: {shown}); transformers would make them random: pass a "
                               "complete checkpoint of this model")
    if kind == "causal_lm":
        _check_not_classifier(model, info, path)
    check_finite_parameters(model, path, ModelFolderError)
    if tok is not None:
        _check_vocabulary(model, tok, path)
    if device_map is None:
        model = model.to(device)
    return TextModel(model=model.eval(), tokenizer=tok, head=kind, path=path)


def _check_not_classifier(model, info: dict, path: Path) -> None:
    """:class:`ModelFolderError` when a folder loaded as a causal LM holds a sequence
    classifier: its config names a ``*ForSequenceClassification`` class, or its weights carry a
    classification head (``score.*`` / ``classifier.*``). With tied embeddings no LM weight is
    missing, so the classifier would otherwise "answer" with its input embeddings."""
    own = [a for a in (getattr(model.config, "architectures", None) or [])
           if a.endswith("ForSequenceClassification")]
    head = [k for k in info.get("unexpected_keys") or []
            if k.split(".")[0] in ("score", "classifier")]
    if own or head:
        what = own[0] if own else f"its weights have {head[0]}"
        raise ModelFolderError(
            f"{path} holds a sequence classifier ({what}), not a language model; this needs a "
            "causal LM that predicts the next token: pass a *ForCausalLM folder "
            "(--model-path / --model-size)")


def _check_vocabulary(model, tok, path: Path) -> None:
    """:class:`ModelFolderError` when the tokenizer can produce ids that the model's input
    embedding has no row for (an index error or garbage mid-run otherwise)."""
    embedding = model.get_input_embeddings()
    rows = getattr(embedding, "num_embeddings", None)
    if rows is None:
        return
    ids = len(tok)
    if ids > rows:
        raise ModelFolderError(
            f"the tokenizer in {path} has {ids} token ids but the model's embedding has {rows} "
            f"rows, so ids {rows}..{ids - 1} have no embedding; pass the tokenizer saved with "
            "this model (or resize the embeddings and save the model again)")
