"""What the vision drivers share once their flags are parsed (no command line here; the flags
are :mod:`palrp.runtime.cli`'s): loading a model with a one-line error, the input size and
preprocessing of the benchmarks, and the start every benchmark driver shares.

Preprocessing (``--preprocess`` of the two benchmark drivers): ``protocol``, the default and
what the paper's numbers use, resizes every image bilinearly to the input size without a crop
(docs/protocols.md); ``model`` uses the model's timm eval transform
(:func:`palrp.loaders.vision_model.eval_transform`: the data config's interpolation, crop
fraction and crop mode), and the segmentation masks get the same resize and crop.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, NamedTuple

from palrp import config
from palrp.runtime.distributed import init_distributed
from palrp.runtime.store import release_locks

__all__ = ["PREPROCESS_CHOICES", "load_model_or_exit", "official_weights_hint", "model_label",
           "input_size", "image_transform", "preprocessing_record", "preprocessing_details",
           "BenchmarkRun", "benchmark_run"]

#: The preprocessing choices: the benchmark protocol's resize (default) or the model's transform.
PREPROCESS_CHOICES = ("protocol", "model")


def load_model_or_exit(checkpoint: Path, overrides: dict, device):
    """:func:`palrp.modules.load_deit` (or, with ``overrides["timm_model"]``,
    :func:`palrp.loaders.checkpoints.load_timm_model`; with ``overrides["pretrained"]`` too, timm's
    own pretrained build from the cached weights file ``checkpoint``,
    :func:`palrp.loaders.hub.create_timm`) on ``device``; a bad checkpoint exits with one line."""
    from palrp.loaders.checkpoints import CheckpointError, load_deit, load_timm_model
    from palrp.loaders.text_models import ModelFolderError
    overrides = dict(overrides)
    name = overrides.pop("timm_model", None)
    pretrained = overrides.pop("pretrained", False)
    try:
        if name is not None and pretrained:
            from palrp.loaders.hub import create_timm
            return create_timm(name, checkpoint, **overrides).to(device)
        if name is not None:
            return load_timm_model(name, checkpoint, **overrides).to(device)
        return load_deit(checkpoint, **overrides).to(device)
    except FileNotFoundError as exc:
        if name is not None:
            raise SystemExit(f"error: {exc}") from None
        raise SystemExit(f"error: {exc}; {official_weights_hint(checkpoint)}") from None
    except (CheckpointError, ModelFolderError) as exc:
        raise SystemExit(f"error: {exc}") from None


#: Where the official DeiT weights are published (the README of facebookresearch/deit).
DEIT_RELEASES = "https://dl.fbaipublicfiles.com/deit/"
DEIT_README = "https://github.com/facebookresearch/deit"


def official_weights_hint(checkpoint) -> str:
    """Where a missing DeiT checkpoint comes from: its download address for a file of
    config.DEIT_CHECKPOINTS (and timm's copy on the hub, config.DEIT_HUB_IDS, which
    ``--model-size`` reads from the Hugging Face cache), else the release page."""
    name = Path(checkpoint).name
    sizes = {Path(p).name: size for size, p in config.DEIT_CHECKPOINTS.items()}
    if name in sizes:
        hub_id = config.DEIT_HUB_IDS[sizes[name]]
        return (f"the official weights are {DEIT_RELEASES}{name} (listed in the README of "
                f"{DEIT_README}); put the file at {checkpoint}, or fetch timm's copy into the "
                f"Hugging Face cache with `hf download {hub_id}` (or pass --allow-download)")
    return f"official DeiT weights are listed in the README of {DEIT_README}"


def model_label(checkpoint) -> str:
    """The name of a run's results folder for ``checkpoint``: the file's stem, or the repo's
    name for weights in the Hugging Face cache (``deit_small_patch16_224.fb_in1k``, not
    ``model``)."""
    from palrp.loaders.hub import model_label as label
    return label(checkpoint, stem=True)


def input_size(model) -> tuple[int, int]:
    """(H, W) the drivers resize images to: the input size of the model's data config."""
    from palrp.loaders.vision_model import data_config
    return tuple(data_config(model)["input_size"][1:])


def image_transform(model, choice: str):
    """The transform the datasets apply for the preprocessing ``choice``: None for
    ``protocol`` (their own bilinear resize), the model's
    :class:`palrp.loaders.vision_model.EvalTransform` for ``model``."""
    if choice not in PREPROCESS_CHOICES:
        raise ValueError(f"preprocessing {choice!r} is not one of {', '.join(PREPROCESS_CHOICES)}")
    if choice == "protocol":
        return None
    from palrp.loaders.vision_model import eval_transform
    return eval_transform(model)


def preprocessing_record(model, choice: str) -> dict:
    """What a results file records about the preprocessing: the choice and the geometry it
    applied (``protocol``: bilinear resize, no crop; ``model``: the eval transform's
    interpolation, crop fraction and crop mode)."""
    transform = image_transform(model, choice)
    if transform is None:
        return {"preprocess": "protocol", "input_size": list(input_size(model)),
                "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash"}
    return {"preprocess": "model", **transform.describe()}


def preprocessing_details(record: dict) -> str:
    """The geometry of a :func:`preprocessing_record` in words, for the drivers' table
    captions: ``bilinear resize to 224x224, no crop`` or ``bicubic, crop_pct 0.875, crop_mode
    center, 224x224``."""
    size = "x".join(str(v) for v in record["input_size"])
    if record["preprocess"] == "protocol":
        return f"bilinear resize to {size}, no crop"
    return (f"{record['interpolation']}, crop_pct {record['crop_pct']:g}, "
            f"crop_mode {record['crop_mode']}, {size}")


class BenchmarkRun(NamedTuple):
    """What a benchmark driver works with once its inputs are checked."""
    ctx: object           # palrp.runtime.DistContext: rank, device, sharding
    checkpoint: Path
    data: Path
    model: object         # the loaded timm model, on ctx.device


@contextlib.contextmanager
def benchmark_run(device: str | None, resolve_inputs: Callable[[], tuple[Path, Path, dict]]):
    """The start every benchmark driver shares once its output folder is checked, before any
    long work: the process group (if any) started on ``device``, ``resolve_inputs() ->
    (checkpoint, data, load overrides)`` resolved and the model loaded (a bad checkpoint exits
    with one line); the output folder's lock is released and the process group closed however
    the run ends."""
    ctx = init_distributed(device)
    try:
        checkpoint, data, overrides = resolve_inputs()
        yield BenchmarkRun(ctx, checkpoint, data, load_model_or_exit(checkpoint, overrides, ctx.device))
    finally:
        release_locks()              # the output folder's lock (taken by check_run)
        ctx.close()
