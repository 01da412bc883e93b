"""Command-line pieces shared by the vision drivers: which model to load, and loading it with a
one-line error (``--model`` / ``--model-size`` / ``--demo`` / ``--timm-model``).

``--model PATH`` alone is a DeiT/ViT checkpoint whose geometry is inferred
(:func:`palrp.loaders.checkpoints.load_deit`); ``--timm-model NAME --model weights`` builds that timm
architecture and loads the weights (:func:`palrp.loaders.checkpoints.load_timm_model`). Either way
the model is timm's own, and the drivers take its preprocessing (input size, mean/std,
interpolation, crop fraction) from timm's data config (:func:`palrp.loaders.vision_model.data_config`).

``--preprocess {protocol,model}`` (:func:`preprocess_args`, shared by the two benchmark drivers):
``protocol``, the default and what the paper's numbers use, resizes every image bilinearly to
the input size without a crop (docs/protocols.md); ``model`` uses the model's timm eval
transform (:func:`palrp.loaders.vision_model.eval_transform`: the data config's interpolation,
crop fraction and crop mode), and the segmentation masks get the same resize and crop.
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Callable, NamedTuple

from palrp import config
from palrp.runtime.cli import check_output_dir
from palrp.runtime.distributed import init_distributed

__all__ = ["add_method_args", "selected_methods", "add_model_args", "checkpoint_and_overrides",
           "load_model_or_exit", "add_timm_model_arg", "input_size", "PREPROCESS_CHOICES",
           "preprocess_args", "image_transform", "preprocessing_record"]

#: ``--preprocess`` choices: the benchmark protocol's resize (default) or the model's transform.
PREPROCESS_CHOICES = ("protocol", "model")


def add_method_args(parser: argparse.ArgumentParser) -> None:
    """``--check-all`` / ``--method NAME...`` over the one registry of baselines/registry.py."""
    from palrp.baselines.registry import available_methods
    names = available_methods()
    parser.add_argument("--check-all", action="store_true", help="run every registered method")
    parser.add_argument("--method", nargs="+", default=None, choices=names, metavar="NAME",
                        help=f"methods to run: {', '.join(names)}")


def selected_methods(args, parser: argparse.ArgumentParser) -> list[str]:
    """The methods to run, in registry order for ``--check-all``, else as given (once each)."""
    from palrp.baselines.registry import available_methods
    if args.check_all:
        return available_methods()
    if not args.method:
        parser.error("pass --check-all or --method NAME [NAME ...]")
    return list(dict.fromkeys(args.method))


def add_timm_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timm-model", default=None, metavar="NAME",
                        help="timm architecture (e.g. vit_small_patch14_dinov2, "
                             "deit3_small_patch16_224, eva02_tiny_patch14_224) whose weights "
                             "--model gives (.safetensors/.pth/.bin)")


def add_model_args(parser: argparse.ArgumentParser, demo_help: str) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="DeiT checkpoint (.pth/.safetensors; architecture inferred), or the "
                             "weights of --timm-model")
    add_timm_model_arg(parser)
    parser.add_argument("--model-size", choices=sorted(config.DEIT_CHECKPOINTS), default=None,
                        help="official DeiT weights from config.DEIT_CHECKPOINTS (default tiny)")
    parser.add_argument("--demo", action="store_true", help=demo_help)


def _check_timm_args(args) -> None:
    if getattr(args, "timm_model", None) is None:
        return
    if getattr(args, "demo", False) or getattr(args, "model_size", None):
        raise SystemExit("error: --timm-model names an architecture for the weights of --model; "
                         "--demo and --model-size name other models; pass one of them")
    if args.model is None:
        raise SystemExit(f"error: --timm-model {args.timm_model} needs its weights; pass "
                         "--model weights.safetensors (or .pth/.bin)")


def checkpoint_and_overrides(args) -> tuple[Path, dict]:
    """The checkpoint to load and the expectations to check it against: ``--model`` wins;
    ``--demo`` means the embedded DeiT; else the official weights of ``--model-size``.
    With ``--timm-model`` the overrides carry ``{"timm_model": NAME}``."""
    _check_timm_args(args)
    if getattr(args, "timm_model", None):
        return Path(args.model), {"timm_model": args.timm_model}
    if args.demo and args.model_size:
        raise SystemExit("error: --model-size names official DeiT weights; --demo uses the "
                         "embedded model; pass one of them")
    if args.demo:
        from palrp.data.demo_vision import demo_model_path
        return Path(args.model or demo_model_path()), {}
    overrides = {"model_size": args.model_size} if args.model_size else {}
    return Path(args.model or config.DEIT_CHECKPOINTS[args.model_size or "tiny"]), overrides


def load_model_or_exit(checkpoint: Path, overrides: dict, device):
    """:func:`palrp.modules.load_deit` (or, with ``overrides["timm_model"]``,
    :func:`palrp.loaders.checkpoints.load_timm_model`) on ``device``; a bad checkpoint exits with one
    line."""
    from palrp.loaders.checkpoints import load_deit
    from palrp.loaders.checkpoints import CheckpointError, load_timm_model
    overrides = dict(overrides)
    name = overrides.pop("timm_model", None)
    try:
        if name is not None:
            return load_timm_model(name, checkpoint, **overrides).to(device)
        return load_deit(checkpoint, **overrides).to(device)
    except FileNotFoundError as exc:
        if name is not None:
            raise SystemExit(f"error: {exc}") from None
        raise SystemExit(f"error: {exc}; {official_weights_hint(checkpoint)}") from None
    except CheckpointError as exc:
        raise SystemExit(f"error: {exc}") from None


#: Where the official DeiT weights are published (the README of facebookresearch/deit).
DEIT_RELEASES = "https://dl.fbaipublicfiles.com/deit/"
DEIT_README = "https://github.com/facebookresearch/deit"


def official_weights_hint(checkpoint) -> str:
    """Where a missing DeiT checkpoint comes from: its download address for a file of
    config.DEIT_CHECKPOINTS, else the release page."""
    name = Path(checkpoint).name
    if name in {Path(p).name for p in config.DEIT_CHECKPOINTS.values()}:
        return (f"the official weights are {DEIT_RELEASES}{name} (listed in the README of "
                f"{DEIT_README}); put the file at {checkpoint}")
    return f"official DeiT weights are listed in the README of {DEIT_README}"


def input_size(model) -> tuple[int, int]:
    """(H, W) the drivers resize images to: the input size of the model's data config."""
    from palrp.loaders.vision_model import data_config
    return tuple(data_config(model)["input_size"][1:])


def preprocess_args() -> argparse.ArgumentParser:
    """``--preprocess {protocol,model}``, a parent parser (argparse ``parents=[...]``) of the
    segmentation and perturbation drivers."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--preprocess", choices=PREPROCESS_CHOICES, default="protocol",
        help="how images reach the model's input size. protocol (default; the paper's numbers): "
             "bilinear resize of the whole image, no crop, aspect ratio not kept, as the "
             "benchmark protocol (docs/protocols.md). model: the model's timm eval transform "
             "(the data config's interpolation, crop_pct and crop_mode: resize keeping the "
             "aspect ratio, centre crop); segmentation masks get the same resize and crop "
             "(nearest neighbour). Part of the run's identity: a resume with the other choice "
             "is refused")
    return parser


def image_transform(model, choice: str):
    """The transform the datasets apply for ``--preprocess choice``: None for ``protocol``
    (their own bilinear resize), the model's
    :class:`palrp.loaders.vision_model.EvalTransform` for ``model``."""
    if choice not in PREPROCESS_CHOICES:
        raise ValueError(f"--preprocess {choice!r} is not one of {', '.join(PREPROCESS_CHOICES)}")
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
def benchmark_run(args, resolve_inputs: Callable):
    """The start every benchmark driver shares, before any long work: the output folder is
    checked, the process group (if any) started, ``resolve_inputs(args) -> (checkpoint, data,
    load overrides)`` resolved and the model loaded (a bad checkpoint exits with one line);
    the process group is closed however the run ends."""
    check_output_dir(args.output_dir)
    ctx = init_distributed(args.device)
    try:
        checkpoint, data, overrides = resolve_inputs(args)
        yield BenchmarkRun(ctx, checkpoint, data, load_model_or_exit(checkpoint, overrides, ctx.device))
    finally:
        ctx.close()
