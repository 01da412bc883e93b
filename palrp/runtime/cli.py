"""The one module of command-line flags: what every driver shares (a parser whose errors are
one line, argument types that refuse out-of-range numbers, parent parsers for the flags several
drivers have, the output-folder check that runs before any work), the flags of the vision
drivers (which model, which methods, which preprocessing), and the command line of the three
text perturbation drivers ``NLP/eval_pert_{imdb,arc,wiki}.py`` (:func:`perturbation_main`).

The library (everything else under ``palrp/``) takes typed options and never a parsed command
line; here flags become those options, and a library :class:`palrp.runtime.options.OptionError`
becomes a line naming the flag (:func:`flag`, :func:`one_line_errors`).

Every bad input ends the same way: ``error: <what is wrong>; <how to fix it>`` on stderr, exit
status 1 (argparse's own errors included), never a traceback.
"""
from __future__ import annotations

import argparse
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from palrp.runtime.options import OptionError

__all__ = ["Parser", "positive_int", "nonnegative_int", "positive_float", "nonnegative_float",
           "random_seed", "file_stem", "figure_file", "FIGURE_SUFFIXES", "SEED_LIMIT",
           "device_args", "output_args", "loader_args", "gradient_checkpointing_args",
           "device_map_args", "precision_args", "dtype_from_flags", "hub_args",
           "check_allow_download", "model_folder_or_exit", "flag", "one_line_errors",
           "check_output_dir", "check_output_file", "error_line", "quiet_loading",
           "add_method_args", "selected_methods", "add_timm_model_arg", "add_model_args",
           "add_num_heads_arg",
           "checkpoint_and_overrides", "preprocess_args", "perturbation_parser",
           "perturbation_options", "perturbation_main"]


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


#: The largest seed: numpy's and Python's generators take seeds in [0, 2**32).
SEED_LIMIT = 2 ** 32


def random_seed(text: str) -> int:
    """A random seed: an integer in [0, 2**32) (numpy's range; torch and Python accept it too)."""
    value = _int(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is not a seed; pass an integer from 0 to "
                                         f"{SEED_LIMIT - 1}")
    return value


def file_stem(text: str) -> str:
    """A name for files inside the output folder (``--stem``): not empty, no path separator, not
    ``.`` or ``..``, not absolute, no NUL -- so what is written stays in ``--output-dir``."""
    separators = {"/", "\\", os.sep, os.altsep} - {None}
    if not text.strip() or text in (".", "..") or "\0" in text or os.path.isabs(text) \
            or any(sep in text for sep in separators):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plain file name (no folders, no '/' or '\\', not '..'); pass a "
            f"name such as 'review': the files go into --output-dir")
    return text


#: File name extensions the figures can be written as (matplotlib's savefig formats).
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".tif", ".tiff", ".webp", ".eps")


def figure_file(text: str) -> Path:
    """An output figure path whose extension is a format the figure can be written in
    (:data:`FIGURE_SUFFIXES`), checked before any work."""
    path = Path(text)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        shown = path.suffix or "no extension"
        raise argparse.ArgumentTypeError(
            f"{text} has {shown}, not an image format; pass a name ending in .png (or "
            f"{', '.join(FIGURE_SUFFIXES[1:])})")
    return path


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


def precision_args(fp32: bool = True, bf16_help: str | None = None) -> argparse.ArgumentParser:
    """``--bf16`` / ``--fp32`` (mutually exclusive), the one precision choice of the text
    command lines (:func:`dtype_from_flags`); ``fp32=False`` leaves out ``--fp32`` where float32
    is the default on every device (``NLP/main_imdb.py``)."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--bf16", action="store_true",
                       help=bf16_help or "bfloat16 (the default on CUDA; float32 on CPU)")
    if fp32:
        group.add_argument("--fp32", action="store_true", help="float32 even on CUDA")
    return parser


def dtype_from_flags(args) -> str | None:
    """The dtype asked for by :func:`precision_args`' flags, as a name for
    :func:`palrp.loaders.text_models.resolve_dtype`; None: the device default."""
    if getattr(args, "bf16", False):
        return "bfloat16"
    if getattr(args, "fp32", False):
        return "float32"
    return None


def hub_args() -> argparse.ArgumentParser:
    """``--allow-download``: models named by a hub id are read from the local Hugging Face cache
    only, unless this flag allows fetching a missing one (refused under ``HF_HUB_OFFLINE=1``:
    :func:`check_allow_download`)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--allow-download", action="store_true",
                        help="fetch a hub model missing from the Hugging Face cache (HF_HOME) "
                             "into it; by default nothing is downloaded (refused when "
                             "HF_HUB_OFFLINE=1)")
    return parser


def check_allow_download(args) -> bool:
    """``--allow-download`` as given, after checking that the hub's offline mode does not
    forbid it (one line otherwise)."""
    from palrp.loaders.hub import HubError, check_download_allowed
    allow = bool(getattr(args, "allow_download", False))
    try:
        check_download_allowed(allow)
    except HubError as exc:
        raise SystemExit(f"error: {exc}") from None
    return allow


def model_folder_or_exit(spec, allow_download: bool = False) -> Path:
    """The local folder of a text model given as a folder or a hub id ``org/name[@revision]``
    (its snapshot in the Hugging Face cache: :func:`palrp.loaders.hub.resolve_model_dir`); a
    hub id that is not cached ends the program with one line naming it and how to fetch it."""
    from palrp.loaders.hub import HubError, resolve_model_dir
    try:
        return resolve_model_dir(spec, allow_download=allow_download)
    except HubError as exc:
        raise SystemExit(f"error: {exc}") from None


# --- library errors as one line naming the flag ------------------------------------------------

def flag(option: str) -> str:
    """The flag of a typed option: ``max_length`` -> ``--max-length``."""
    return "--" + option.replace("_", "-")


@contextmanager
def one_line_errors(*errors: type[BaseException]):
    """Inside the block, a library :class:`palrp.runtime.options.OptionError` ends the program
    with ``error: <message>`` spelling its options as flags, and any of ``errors`` (one-line
    library errors such as ``DataError`` or ``ModelFolderError``) with ``error: <message>``."""
    try:
        yield
    except OptionError as exc:
        raise SystemExit(f"error: {exc.spelled(flag)}") from None
    except errors as exc:
        raise SystemExit(f"error: {exc}") from None


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


# --- the vision drivers: which methods, which model, which preprocessing ----------------------

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
    """``--timm-model NAME`` (the weights from ``--model``, or with ``--pretrained`` timm's hub
    weights from the Hugging Face cache) and ``--allow-download``."""
    parser.add_argument("--timm-model", default=None, metavar="NAME",
                        help="timm architecture (e.g. vit_small_patch14_dinov2, "
                             "deit3_small_patch16_224, eva02_tiny_patch14_224) whose weights "
                             "--model gives (.safetensors/.pth/.bin); with --pretrained a timm "
                             "pretrained name (vit_base_patch16_224.augreg_in21k_ft_in1k) or "
                             "hub id (timm/NAME)")
    parser.add_argument("--pretrained", action="store_true",
                        help="the weights of --timm-model from the Hugging Face cache (timm's "
                             "hub weights, as timm.create_model(NAME, pretrained=True)); no "
                             "--model")
    parser.add_argument("--allow-download", action="store_true",
                        help="fetch hub weights missing from the Hugging Face cache into it; by "
                             "default nothing is downloaded (refused when HF_HUB_OFFLINE=1)")


def add_model_args(parser: argparse.ArgumentParser, demo_help: str) -> None:
    """``--model PATH`` (a DeiT/ViT checkpoint whose geometry is inferred,
    :func:`palrp.loaders.checkpoints.load_deit`), ``--timm-model NAME`` (that timm architecture,
    the weights from ``--model``: :func:`palrp.loaders.checkpoints.load_timm_model`),
    ``--model-size`` and ``--demo``; :func:`checkpoint_and_overrides` resolves them."""
    from palrp import config
    parser.add_argument("--model", type=Path, default=None,
                        help="DeiT checkpoint (.pth/.safetensors; architecture inferred), or the "
                             "weights of --timm-model")
    add_timm_model_arg(parser)
    parser.add_argument("--model-size", choices=sorted(config.DEIT_CHECKPOINTS), default=None,
                        help="official DeiT weights from config.DEIT_CHECKPOINTS, else timm's "
                             "copy in the Hugging Face cache (config.DEIT_HUB_IDS) (default tiny)")
    parser.add_argument("--demo", action="store_true", help=demo_help)
    add_num_heads_arg(parser)


def add_num_heads_arg(parser: argparse.ArgumentParser) -> None:
    """``--num-heads N``: the attention head count of a ``--model`` checkpoint whose weights
    and config do not record it (:func:`palrp.loaders.checkpoints.load_deit` never guesses it)."""
    parser.add_argument("--num-heads", type=positive_int, default=None,
                        help="attention heads of a --model checkpoint that records no config "
                             "(a state dict's weights fit any head count); official DeiT "
                             "weights: --model-size instead")


def _check_timm_args(args) -> None:
    pretrained = getattr(args, "pretrained", False)
    if getattr(args, "timm_model", None) is None:
        if pretrained:
            raise SystemExit("error: --pretrained reads the hub weights of a timm model; pass "
                             "--timm-model NAME with it (e.g. deit_small_patch16_224.fb_in1k)")
        return
    if getattr(args, "demo", False) or getattr(args, "model_size", None):
        raise SystemExit("error: --timm-model names an architecture for the weights of --model; "
                         "--demo and --model-size name other models; pass one of them")
    if pretrained and args.model is not None:
        raise SystemExit("error: --pretrained reads the weights of --timm-model from the Hugging "
                         "Face cache, --model gives a weights file; pass one of them")
    if not pretrained and args.model is None:
        raise SystemExit(f"error: --timm-model {args.timm_model} needs its weights; pass "
                         "--model weights.safetensors (or .pth/.bin), or --pretrained for its "
                         "hub weights in the Hugging Face cache")


def checkpoint_and_overrides(args) -> tuple[Path, dict]:
    """The checkpoint to load and the expectations to check it against
    (:func:`palrp.runtime.vision_run.load_model_or_exit`): ``--model`` wins; ``--demo`` means
    the embedded DeiT; else the official weights of ``--model-size`` (the file of
    config.DEIT_CHECKPOINTS, else timm's copy in the Hugging Face cache:
    :func:`palrp.loaders.hub.deit_weights`). With ``--timm-model`` the overrides carry
    ``{"timm_model": NAME}``; with ``--pretrained`` also ``"pretrained": True``, and the
    checkpoint is the cached weights file of NAME (:func:`palrp.loaders.hub.timm_weights`; not
    cached: one line naming it and how to fetch it)."""
    from palrp.loaders import hub
    _check_timm_args(args)
    allow = check_allow_download(args)
    if getattr(args, "timm_model", None):
        if getattr(args, "pretrained", False):
            try:
                weights = hub.timm_weights(args.timm_model, allow_download=allow)
            except hub.HubError as exc:
                raise SystemExit(f"error: {exc}") from None
            return weights, {"timm_model": args.timm_model, "pretrained": True}
        heads = getattr(args, "num_heads", None)
        return Path(args.model), {"timm_model": args.timm_model,
                                  **({"num_heads": heads} if heads else {})}
    if args.demo and args.model_size:
        raise SystemExit("error: --model-size names official DeiT weights; --demo uses the "
                         "embedded model; pass one of them")
    if args.demo:
        from palrp.data.demo_vision import demo_model_path
        return Path(args.model or demo_model_path()), {}
    overrides = {"model_size": args.model_size} if args.model_size else {}
    if getattr(args, "num_heads", None):
        overrides["num_heads"] = args.num_heads
    if args.model is not None:
        return Path(args.model), overrides
    try:
        return (hub.deit_weights(args.model_size or "tiny", allow_download=allow),
                {"model_size": args.model_size or "tiny", **overrides})
    except hub.HubError as exc:
        raise SystemExit(f"error: {exc}") from None


def preprocess_args() -> argparse.ArgumentParser:
    """``--preprocess {protocol,model}``, a parent parser of the segmentation and perturbation
    drivers (:data:`palrp.runtime.vision_run.PREPROCESS_CHOICES`)."""
    from palrp.runtime.vision_run import PREPROCESS_CHOICES
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


# --- the text perturbation drivers (NLP/eval_pert_{imdb,arc,wiki}.py) ---------------------------

def perturbation_parser(task, add_task_args: Callable[[argparse.ArgumentParser], None] | None = None
                        ) -> argparse.ArgumentParser:
    """The flags of the three text perturbation drivers for ``task``
    (:class:`palrp.nlp.pert_driver.Task`), plus the task's own (``add_task_args``)."""
    from palrp import config
    parser = Parser(
        description=f"{task.protocol.name}: token perturbation evaluation (docs/protocols.md, section 4)",
        parents=[device_args(), output_args(config.OUTPUT_DIR / "nlp_pert"),
                 gradient_checkpointing_args(), device_map_args(), precision_args(), hub_args()])
    parser.add_argument("--mode", choices=["pert", "analyze"], default="pert")
    parser.add_argument("--model-size", default=None, choices=sorted(config.LLAMA_MODELS) + ["demo"],
                        help="a model of config.LLAMA_MODELS, else its hub id (config."
                             "LLAMA_HUB_IDS) in the Hugging Face cache (default "
                             f"{task.default_model_size})")
    parser.add_argument("--model-path", default=None,
                        help="local model folder (save_pretrained) or a hub id "
                             "org/name[@revision] in the Hugging Face cache; overrides "
                             "--model-size")
    parser.add_argument("--data-path", default=None,
                        help=f"local data file or a cached datasets name (default: {task.default_data})")
    parser.add_argument("--demo", action="store_true",
                        help="the embedded default model and data (no downloads)")
    parser.add_argument("--pe", action="store_true", help="PA-LRP (positional relevance); else AttnLRP")
    parser.add_argument("--single-norm", action="store_true",
                        help="normalise tok + PE once (the paper's setting); else per part")
    parser.add_argument("--pe-only", action="store_true", help="only the PE term (needs --pe)")
    parser.add_argument("--without-abs", action="store_true", help="signed PE terms (needs --pe)")
    parser.add_argument("--clamp", action="store_true", help="PE term clamped at 0 (needs --pe)")
    parser.add_argument("--max-samples", type=positive_int, default=task.default_max_samples,
                        help=f"{task.max_samples_help} (default {task.default_max_samples}); part "
                             "of the run's identity")
    parser.add_argument("--max-length", type=positive_int, default=512,
                        help="tokens kept per sample (at most the model's positions)")
    parser.add_argument("--replacement-token", default=None,
                        help="token used for removed tokens when the tokenizer has no unk token "
                             "(the original used '#' for Llama-3)")
    parser.add_argument("--exact-counts", action="store_true",
                        help="perturb ceil(i*N/10) tokens at step i; default: the original's "
                             "int(numpy.ceil(numpy.linspace(0, 1, 11)[i] * N)), one token more at "
                             "30%%, 60%%, 70%% when N is a multiple of 10 (the paper's numbers)")
    parser.add_argument("--score-batch-size", type=positive_int, default=33,
                        help="perturbed copies per forward pass")
    parser.add_argument("--select-batch-size", type=positive_int, default=16,
                        help="samples per no-grad forward while selecting correct answers")
    parser.add_argument("--latex", action="store_true", help="analyze: also print LaTeX tables")
    if add_task_args is not None:
        add_task_args(parser)
    return parser


def perturbation_options(args, task_options=None):
    """The :class:`palrp.nlp.pert_driver.PerturbationOptions` of parsed flags; ``task_options``:
    the task's own typed options (None: the task's defaults)."""
    from palrp.nlp.pert_driver import PerturbationOptions
    return PerturbationOptions(
        output_dir=args.output_dir, overwrite=args.overwrite, device=args.device,
        model_size=args.model_size, model_path=args.model_path, data_path=args.data_path,
        demo=args.demo, pe=args.pe, single_norm=args.single_norm, pe_only=args.pe_only,
        without_abs=args.without_abs, clamp=args.clamp, max_samples=args.max_samples,
        max_length=args.max_length, replacement_token=args.replacement_token,
        exact_counts=args.exact_counts, score_batch_size=args.score_batch_size,
        select_batch_size=args.select_batch_size, dtype=dtype_from_flags(args),
        gradient_checkpointing=args.gradient_checkpointing, device_map=args.device_map,
        allow_download=args.allow_download, task_options=task_options)


def perturbation_main(task, argv=None,
                      add_task_args: Callable[[argparse.ArgumentParser], None] | None = None,
                      task_options: Callable[[argparse.Namespace], object] | None = None):
    """The command line of a text perturbation driver: ``--mode pert`` runs
    :func:`palrp.nlp.pert_driver.run_perturbation` and returns its metrics (None on ranks other
    than 0), ``--mode analyze`` :func:`palrp.nlp.pert_driver.analyze` and returns the runs.
    ``add_task_args(parser)`` adds the task's flags, ``task_options(args)`` turns them into the
    task's typed options. Bad input ends with one line ``error: ...`` (exit status 1)."""
    from palrp.data.text_data import DataError
    from palrp.loaders.text_models import ModelFolderError
    from palrp.nlp import pert_driver

    args = perturbation_parser(task, add_task_args).parse_args(argv)
    if args.mode == "analyze":
        with one_line_errors():
            return pert_driver.analyze(task, args.output_dir, latex=args.latex)
    options = perturbation_options(args, task_options(args) if task_options else None)
    with one_line_errors():
        pert_driver.check_options(options)
    check_output_dir(options.output_dir)
    with one_line_errors(DataError, ModelFolderError):
        return pert_driver.run_perturbation(task, options)
