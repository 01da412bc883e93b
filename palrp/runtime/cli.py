"""What every command-line driver shares: a parser whose errors are one line, argument types
that refuse out-of-range numbers, parent parsers for the flags several drivers have, and the
output-folder check that runs before any work.

Every bad input ends the same way: ``error: <what is wrong>; <how to fix it>`` on stderr, exit
status 1 (argparse's own errors included), never a traceback.
"""
from __future__ import annotations

import argparse
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Parser", "positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "device_args",
           "output_args", "loader_args", "gradient_checkpointing_args", "device_map_args",
           "check_output_dir", "check_output_file", "error_line", "quiet_loading"]


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``error: ...; see --help``), exit 1."""

    def error(self, message: str):
        raise SystemExit(f"error: {message}; see {self.prog} --help")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative ({value})")
    return value


def _float(text: str, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be a {'number >= 0' if allow_zero else 'positive number'}, not {text}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    return _float(text, allow_zero=True)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _float(text, allow_zero=False)


# --- parent parsers (argparse ``parents=[...]``) ---------------------------------------------

def device_args() -> argparse.ArgumentParser:
    """``--device`` (resolved by :func:`palrp.runtime.resolve_device`)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N (default: cuda if available; under torchrun "
                             "each rank its own GPU)")
    return parser


def output_args(default: Path, what: str = "results", overwrite: bool = True
                ) -> argparse.ArgumentParser:
    """``--output-dir`` and, for resumable drivers, ``--overwrite``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--output-dir", type=Path, default=default,
                        help=f"folder for the {what} (default: {default})")
    if overwrite:
        parser.add_argument("--overwrite", action="store_true",
                            help="replace the results a run with other settings left in "
                                 "--output-dir (only the files this program writes)")
    return parser


def loader_args(batch_size: int) -> argparse.ArgumentParser:
    """``--batch-size`` and ``--num-workers`` of the image drivers."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--batch-size", type=positive_int, default=batch_size,
                        help=f"images per forward pass (default {batch_size})")
    parser.add_argument("--num-workers", type=nonnegative_int, default=0,
                        help="data-loading worker processes (default 0: in the main process)")
    return parser


def gradient_checkpointing_args() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute each layer in the backward (less memory, same numbers)")
    return parser


def device_map_args() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--device-map", default=None, choices=["auto"],
                        help="spread a model too large for one GPU over this node's GPUs (one "
                             "process; not under torchrun)")
    return parser


# --- output folders --------------------------------------------------------------------------

def check_output_dir(path, flag: str = "--output-dir") -> Path:
    """Make sure ``path`` is (or can become) a folder this process can write, before any work;
    otherwise stop with one line naming the folder and the fix. Creates the folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SystemExit(f"error: {flag} {path} is a file, not a folder; pass a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SystemExit(f"error: cannot write to {flag} {path} ({reason}); pass a folder you "
                         f"can write to") from None
    return path


def check_output_file(path, flag: str = "--output") -> Path:
    """:func:`check_output_dir` for the folder of an output file, which must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise SystemExit(f"error: {flag} {path} is a folder; pass a file name (e.g. "
                         f"{path / 'explanation.png'})")
    check_output_dir(path.parent, f"the folder of {flag}")
    return path


def error_line(exc: BaseException) -> str:
    """``error: <message>`` in one line for an exception whose message names the problem and the
    fix, also when a DataLoader worker re-raised it (its message is then the worker's traceback,
    whose last line is ``module.Class: message``)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(exc).__name__
    name = type(exc).__name__
    if len(lines) > 1 and f"{name}: " in last:
        last = last.split(f"{name}: ", 1)[1]
    return f"error: {last}"


@contextmanager
def quiet_loading():
    """No transformers progress bars inside the block (loading a model prints none, so a bad
    folder reports one line, not a bar and a line)."""
    from transformers.utils import logging as hf_logging
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
