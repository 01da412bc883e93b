"""The training state of the IMDB fine-tuning: everything ``--resume`` needs, in a file that
loads with ``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only;
the random-generator states as tensors), so resuming never runs code from the file.

``<output-dir>/training_state.pt`` holds the trainable weights, the optimizer and scheduler
states, the RNG states of Python, numpy and torch (and CUDA), the step, the history and the
settings of the run; it is written atomically at each epoch end (and every ``--save-steps``).
A file that holds anything else, or is not a readable state, is refused with one line.
"""
from __future__ import annotations

import pickle
import random
from pathlib import Path

from palrp.runtime.store import atomic_output

from .imdb_model import SetupError

__all__ = ["STATE_FILE", "RESUME_KEYS", "settings", "rng_state", "set_rng_state",
           "trainable_state", "save_training_state", "load_training_state", "check_settings"]

STATE_FILE = "training_state.pt"
#: Settings a resumed run must share with the run it continues (they fix data, model, schedule).
RESUME_KEYS = ("model_path", "data_path", "lr", "num_warmup_steps", "num_epochs", "batch_size",
               "max_length", "max_train", "max_test", "seed", "lora", "lora_rank", "bf16",
               "weight_decay")
_REQUIRED = ("trainable", "optimizer", "scheduler", "rng", "settings", "step", "epoch_loss",
             "history", "best_accuracy", "best_epoch")


def settings(options) -> dict:
    """The :data:`RESUME_KEYS` of ``options`` (a :class:`palrp.nlp.imdb_train.TrainOptions`;
    paths as strings)."""
    return {k: (str(getattr(options, k)) if isinstance(getattr(options, k), Path)
                else getattr(options, k)) for k in RESUME_KEYS}


def rng_state() -> dict:
    """Python's, numpy's, torch's (and CUDA's) generator states, as tensors and numbers."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python_version": int(version), "python": torch.tensor(internal, dtype=torch.int64),
             "python_gauss": gauss, "numpy_name": str(name),
             "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "numpy_pos": int(pos),
             "numpy_has_gauss": int(has_gauss), "numpy_cached_gaussian": float(cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    import numpy as np
    import torch

    random.setstate((state["python_version"], tuple(int(x) for x in state["python"].tolist()),
                     state["python_gauss"]))
    np.random.set_state((state["numpy_name"], state["numpy"].numpy().astype(np.uint32),
                         state["numpy_pos"], state["numpy_has_gauss"],
                         state["numpy_cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model) -> dict:
    """The trained tensors (everything with ``requires_grad``), on CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_training_state(path: Path, model, optimizer, scheduler, progress: dict) -> None:
    """Everything ``--resume`` needs, written atomically (:func:`palrp.runtime.store.atomic_output`).
    A state whose trained tensors or optimizer moments hold a NaN or infinite value is never
    written (:class:`SetupError`; the previous file stays as it was)."""
    import torch

    trainable, opt = trainable_state(model), optimizer.state_dict()
    tensors = list(trainable.items()) + [
        (f"optimizer state {key}.{k}", t) for key, st in opt["state"].items()
        for k, t in st.items() if torch.is_tensor(t)]
    for name, t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise SetupError(f"not saving {path}: {name} is not finite; training diverged: "
                             f"rerun with a lower {{lr}}", "lr")
    with atomic_output(path) as tmp:
        torch.save({"trainable": trainable, "optimizer": opt,
                    "scheduler": scheduler.state_dict(), "rng": rng_state(), **progress}, tmp)


def load_training_state(path: Path) -> dict:
    """The state saved by :func:`save_training_state`, loaded with ``weights_only=True``;
    :class:`SetupError` (one line) for a file holding other objects or not readable as one."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):      # no foreign object named: not a torch file at all
            raise SetupError(f"{{resume}}: {path} is not a readable training state (not a torch "
                             f"file); delete it to start again ({{overwrite}}), or pass the "
                             f"{{output_dir}} of the run to continue", *_NAMED) from None
        raise SetupError(f"{{resume}}: {path} holds objects other than tensors and numbers, so "
                         f"it was not loaded (it is not a state this program wrote); delete it, "
                         f"or pass the {{output_dir}} of the run to continue", *_NAMED) from None
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise SetupError(f"{{resume}}: {path} is not a readable training state "
                         f"({type(exc).__name__}); delete it to start again ({{overwrite}}), or "
                         f"pass the {{output_dir}} of the run to continue", *_NAMED) from None
    missing = [k for k in _REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise SetupError(f"{{resume}}: {path} is not a training state of this program (no "
                         f"{missing[0]!r}); delete it to start again ({{overwrite}}), or pass the "
                         f"{{output_dir}} of the run to continue", *_NAMED)
    return state


#: The options the resume errors name (placeholders of :class:`SetupError`).
_NAMED = ("resume", "overwrite", "output_dir")


def check_settings(saved: dict, options) -> None:
    """A resumed run must use the settings of the run it continues."""
    for key, value in settings(options).items():
        if saved["settings"].get(key) != value:
            raise SetupError(f"{{resume}}: {key} is {value!r} but the saved run used "
                             f"{saved['settings'].get(key)!r}; resume with the same settings "
                             f"or use a new {{output_dir}}", *_NAMED)
