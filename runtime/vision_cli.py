"""Command-line pieces shared by the vision drivers: which DeiT to load, and loading it with a
one-line error (``--model`` / ``--model-size`` / ``--demo``)."""
from __future__ import annotations

import argparse
from pathlib import Path

import config

__all__ = ["add_method_args", "selected_methods", "add_model_args", "checkpoint_and_overrides",
           "load_model_or_exit"]


def add_method_args(parser: argparse.ArgumentParser) -> None:
    """``--check-all`` / ``--method NAME...`` over the one registry of baselines/registry.py."""
    from baselines.registry import available_methods
    names = available_methods()
    parser.add_argument("--check-all", action="store_true", help="run every registered method")
    parser.add_argument("--method", nargs="+", default=None, choices=names, metavar="NAME",
                        help=f"methods to run: {', '.join(names)}")


def selected_methods(args, parser: argparse.ArgumentParser) -> list[str]:
    """The methods to run, in registry order for ``--check-all``, else as given (once each)."""
    from baselines.registry import available_methods
    if args.check_all:
        return available_methods()
    if not args.method:
        parser.error("pass --check-all or --method NAME [NAME ...]")
    return list(dict.fromkeys(args.method))


def add_model_args(parser: argparse.ArgumentParser, demo_help: str) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="DeiT checkpoint (.pth/.safetensors); architecture inferred")
    parser.add_argument("--model-size", choices=sorted(config.DEIT_CHECKPOINTS), default=None,
                        help="official DeiT weights from config.DEIT_CHECKPOINTS (default tiny)")
    parser.add_argument("--demo", action="store_true", help=demo_help)


def checkpoint_and_overrides(args) -> tuple[Path, dict]:
    """The checkpoint to load and the expectations to check it against: ``--model`` wins;
    ``--demo`` means the embedded DeiT; else the official weights of ``--model-size``."""
    if args.demo and args.model_size:
        raise SystemExit("error: --model-size names official DeiT weights; --demo uses the "
                         "embedded model; pass one of them")
    if args.demo:
        from data.demo_vision import demo_model_path
        return Path(args.model or demo_model_path()), {}
    overrides = {"model_size": args.model_size} if args.model_size else {}
    return Path(args.model or config.DEIT_CHECKPOINTS[args.model_size or "tiny"]), overrides


def load_model_or_exit(checkpoint: Path, overrides: dict, device):
    """:func:`modules.load_deit` on ``device``; a bad checkpoint exits with one line."""
    from modules import load_deit
    from modules.deit import CheckpointError
    try:
        return load_deit(checkpoint, **overrides).to(device)
    except FileNotFoundError as exc:
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
