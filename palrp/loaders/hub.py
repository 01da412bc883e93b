"""Models named by a Hugging Face hub id or a timm pretrained name, read from the local Hugging
Face cache; :func:`load_model` is the one loader of every way a model can be named.

A model can be given as

- a local path: a ``save_pretrained`` folder (:func:`palrp.loaders.text_models.load_text_model`),
  a folder timm wrote with ``save_for_hf`` (its ``config.json`` names an ``architecture``), or a
  DeiT/ViT weights file (:func:`palrp.loaders.checkpoints.load_deit`);
- a hub id ``org/name`` or ``org/name@revision`` (``hf-hub:`` in front is accepted): its snapshot
  folder in the cache (``<cache>/models--org--name/snapshots/<commit>/``, the commit read from
  ``refs/<revision>``, ``main`` by default), then loaded as the folder it is;
- a timm pretrained name (``vit_base_patch16_224.augreg_in21k_ft_in1k``, or the default tag of
  an architecture): the weights of its ``pretrained_cfg.hf_hub_id`` (``timm/<name>``) in the
  cache, built by ``timm.create_model(name, pretrained=True)`` from that file -- what timm itself
  reads from the cache, without timm asking the hub.

The cache is where huggingface_hub keeps it, read from the environment when a model is looked
up (not when a module was imported): ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub`` (:func:`hub_cache_dir`).

Nothing is downloaded unless the caller allows it (``allow_download=True``, the drivers'
``--allow-download``), and never in the hub's offline mode (``HF_HUB_OFFLINE=1``, also
``TRANSFORMERS_OFFLINE=1``): asking for a download there is refused with one line. A model that
is neither local nor cached is one line (:class:`HubError`) naming the id and how to fetch it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from palrp.loaders.text_models import ModelFolderError, exception_line

__all__ = ["HubError", "load_model", "hub_cache_dir", "offline", "check_download_allowed",
           "parse_hub_id", "cached_snapshot", "resolve_model_dir", "named_model_dir",
           "deit_weights", "timm_pretrained_cfg", "timm_weights", "create_timm",
           "is_timm_folder", "cached_repo_id", "model_label", "files_to_fetch"]


class HubError(ModelFolderError):
    """A model that is not in the cache (or not on the hub); one line naming it and the fix."""


# --- where the cache is, and whether the hub may be asked ---------------------------------------

_TRUE = {"1", "ON", "YES", "TRUE"}


def _expand(path: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(path)))


def hub_cache_dir() -> Path:
    """The hub cache folder as huggingface_hub resolves it, from the environment now:
    ``HF_HUB_CACHE`` (or the older ``HUGGINGFACE_HUB_CACHE``), else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return _expand(os.environ[name])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface")
    return _expand(home) / "hub"


def offline() -> bool:
    """Whether the hub's offline mode is on: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``)
    set to 1/ON/YES/TRUE now, or when huggingface_hub was imported."""
    if any(os.environ.get(name, "").upper() in _TRUE
           for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a declared dependency
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def check_download_allowed(allow_download: bool) -> None:
    """:class:`HubError` when a download is allowed but the hub's offline mode forbids it."""
    if allow_download and offline():
        raise HubError("--allow-download (allow_download=True) asks for a download, but "
                       "HF_HUB_OFFLINE is set (the hub's offline mode); unset HF_HUB_OFFLINE, or "
                       "drop --allow-download to read the Hugging Face cache only")


# --- hub ids ----------------------------------------------------------------------------------

_HUB_ID = re.compile(r"(?:hf-hub:)?(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?")


def parse_hub_id(spec) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` of a hub id ``org/name[@revision]`` (an ``hf-hub:`` prefix is
    dropped); None for anything else: an existing local path, a path of more or fewer parts, an
    id huggingface_hub would refuse (``--``, ``..``, over 96 characters)."""
    text = str(spec)
    if Path(text).expanduser().exists():
        return None
    match = _HUB_ID.fullmatch(text)
    if match is None:
        return None
    repo = match["repo"]
    if "--" in repo or ".." in repo or len(repo) > 96 or repo.endswith((".", "-")):
        return None
    return repo, match["rev"]


def _download_command(repo: str, revision: str | None) -> str:
    return f"hf download {repo}" + (f" --revision {revision}" if revision else "")


def _allow_hint() -> str:
    """How to let a driver or :func:`load_model` download (in offline mode: after unsetting it)."""
    return ("pass --allow-download (allow_download=True)"
            + (" with HF_HUB_OFFLINE unset" if offline() else ""))


def _fetch_line(repo: str, revision: str | None, spec: str, cache: Path) -> str:
    return (f"{spec} is neither a local folder nor in the Hugging Face cache ({cache}); fetch it "
            f"with `{_download_command(repo, revision)}`, or {_allow_hint()}, or give an "
            "existing model folder")


#: Files never fetched with a model: other frameworks' copies and the original-format duplicates
#: some repos carry next to the transformers weights.
_NOT_FETCHED = ("original/*", "*.msgpack", "*.h5", "*.ot", "*.onnx", "*.onnx_data", "onnx/*",
                "openvino/*", "coreml/*", "*.gguf", "flax_model*", "tf_model*", "rust_model*")


def files_to_fetch(files) -> list[str]:
    """The files of a repo listing that a download fetches: everything but other frameworks'
    weights and ``original/`` duplicates (:data:`_NOT_FETCHED`), and no ``*.bin``/``*.pt``/
    ``*.pth`` weights when the repo has ``*.safetensors`` ones."""
    from fnmatch import fnmatch

    kept = [f for f in files if not any(fnmatch(f, p) for p in _NOT_FETCHED)]
    if any(f.endswith(".safetensors") for f in kept):
        kept = [f for f in kept if not f.endswith((".bin", ".pt", ".pth"))]
    return kept


def cached_snapshot(repo: str, revision: str | None = None, *, allow_download: bool = False,
                    spec: str | None = None) -> Path:
    """The snapshot folder of ``repo`` at ``revision`` (default ``main``) in the cache
    (``snapshot_download(..., local_files_only=True)``). Not cached: with ``allow_download``,
    the files of :func:`files_to_fetch` are downloaded into the cache first; without, a
    :class:`HubError` naming ``spec`` and how to fetch it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError, LocalEntryNotFoundError

    check_download_allowed(allow_download)
    spec = spec or repo
    cache = hub_cache_dir()
    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache,
                                      local_files_only=True))
    except HFValidationError as exc:
        raise HubError(f"{spec} is not a valid hub id ({exception_line(exc)}); give org/name or "
                       "org/name@revision") from None
    except LocalEntryNotFoundError as exc:
        incomplete = type(exc).__name__ == "IncompleteSnapshotError"
        if not allow_download:
            if incomplete:
                raise HubError(f"the cached snapshot of {spec} in {cache} is incomplete; fetch "
                               f"it again with `{_download_command(repo, revision)}`, or "
                               f"{_allow_hint()}") from None
            raise HubError(_fetch_line(repo, revision, spec, cache)) from None
    try:
        from huggingface_hub import HfApi

        files = HfApi().list_repo_files(repo, revision=revision)
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache,
                                      allow_patterns=files_to_fetch(files)))
    except Exception as exc:  # noqa: BLE001 -- network, access and missing repos alike
        raise HubError(f"cannot download {spec} from the Hugging Face hub ({exception_line(exc)}); "
                       "check the id, the network, and access (gated models: accept the "
                       "license on huggingface.co, then `hf auth login`)") from None


def _cached_file(repo: str, revision: str | None, filenames, *, allow_download: bool,
                 spec: str) -> Path:
    """The first of ``filenames`` that the cache holds for ``repo`` at ``revision``
    (``try_to_load_from_cache``); with ``allow_download``, else the first the hub has,
    downloaded into the cache; else :class:`HubError`."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    check_download_allowed(allow_download)
    cache = hub_cache_dir()
    for name in filenames:
        found = try_to_load_from_cache(repo, name, cache_dir=cache, revision=revision)
        if isinstance(found, str):
            return Path(found)
    if not allow_download:
        raise HubError(f"{spec} is not in the Hugging Face cache ({cache}); fetch it with "
                       f"`{_download_command(repo, revision)}`, or {_allow_hint()}")
    from huggingface_hub.utils import EntryNotFoundError
    for name in filenames:
        try:
            return Path(hf_hub_download(repo, name, revision=revision, cache_dir=cache))
        except EntryNotFoundError:
            continue
        except Exception as exc:  # noqa: BLE001 -- network, access and missing repos alike
            raise HubError(f"cannot download {spec} from the Hugging Face hub "
                           f"({exception_line(exc)}); check the id, the network, and access") from None
    raise HubError(f"{repo} on the Hugging Face hub has none of {', '.join(filenames)}; pass "
                   "a repo that holds timm weights")


def resolve_model_dir(spec, *, allow_download: bool = False) -> Path:
    """The local folder of a transformers model given as a folder or a hub id: an existing path
    as it is; a hub id as its cached snapshot folder (:func:`cached_snapshot`); anything else as
    a path (the loader then says that the folder does not exist)."""
    parsed = parse_hub_id(spec)
    if parsed is None:
        check_download_allowed(allow_download)
        return Path(spec).expanduser()
    return cached_snapshot(*parsed, allow_download=allow_download, spec=str(spec))


def _setting(name: str) -> str:
    return "PALRP_" + name.upper()


def _set_explicitly(name: str) -> bool:
    """Whether the user named the model's place themselves (its ``PALRP_*`` variable)."""
    return bool(os.environ.get(_setting(name)))


def named_model_dir(name: str, folder, hub_id: str, *, allow_download: bool = False) -> Path:
    """The folder of a named model (``--model-size llama_tiny``): the folder its ``PALRP_*``
    variable names, when set; else the cached snapshot of ``hub_id`` when the cache has it;
    else the configured default ``folder`` when it exists; else (``allow_download``) the
    snapshot downloaded; else :class:`HubError` naming both places and the fixes."""
    folder = Path(folder)
    check_download_allowed(allow_download)
    if _set_explicitly(name) and folder.exists():
        return folder
    repo, revision = parse_hub_id(hub_id) or (hub_id, None)
    try:
        return cached_snapshot(repo, revision, spec=hub_id)
    except HubError:
        if folder.exists():
            return folder
        if not allow_download:
            raise HubError(f"model folder not found: {folder}, and {hub_id} ({name}) is not in "
                           f"the Hugging Face cache ({hub_cache_dir()}); fetch it with `hf "
                           f"download {hub_id}`, or {_allow_hint()}, or set "
                           f"{_setting(name)} to its folder") from None
    return cached_snapshot(repo, revision, allow_download=True, spec=hub_id)


# --- timm ----------------------------------------------------------------------------------------

#: Weight files of a timm hub repo, in the order timm prefers them.
_TIMM_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
               "open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def timm_pretrained_cfg(name: str):
    """timm's pretrained config of ``name`` (``arch.tag``, or an architecture's default tag);
    None when ``name`` is no pretrained timm model (or timm is not importable)."""
    if "/" in name or ":" in name:
        return None
    try:
        from timm.models import get_pretrained_cfg
        return get_pretrained_cfg(name)
    except (ImportError, RuntimeError):
        return None


def is_timm_folder(folder) -> bool:
    """Whether ``folder`` holds a timm ``config.json`` (``save_for_hf``: an ``architecture`` and
    no transformers ``model_type``)."""
    cfg_file = Path(folder) / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "architecture" in cfg and "model_type" not in cfg


def _timm_candidates(cfg) -> tuple[str, ...]:
    preferred = getattr(cfg, "hf_hub_filename", None) if cfg is not None else None
    if preferred:
        safe = str(preferred).rsplit(".", 1)[0] + ".safetensors"
        return tuple(dict.fromkeys((safe, preferred) if safe != preferred else (preferred,)))
    return _TIMM_FILES


def timm_weights(spec: str, *, allow_download: bool = False) -> Path:
    """The cached weights file of a timm model given as a pretrained name (the file of its
    ``hf_hub_id`` repo) or as a hub id (``timm/<name>``: its weights file, next to the
    ``config.json`` when the snapshot has one); with ``allow_download`` fetched when missing.
    :class:`HubError` (one line) otherwise."""
    spec = str(spec)
    parsed = parse_hub_id(spec)
    if parsed is not None:
        repo, revision = parsed
        cfg = timm_pretrained_cfg(repo.split("/")[-1]) if repo.startswith("timm/") else None
        return _cached_file(repo, revision, _timm_candidates(cfg), allow_download=allow_download,
                            spec=spec)
    cfg = timm_pretrained_cfg(spec)
    if cfg is None:
        raise HubError(_unknown_timm_line(spec))
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        raise HubError(f"timm's {spec} has no weights on the Hugging Face hub (no hf_hub_id); "
                       f"pass --timm-model {spec} --model weights.safetensors")
    repo, _, revision = hub_id.partition("@")
    return _cached_file(repo, revision or None, _timm_candidates(cfg),
                        allow_download=allow_download, spec=spec)


def _unknown_timm_line(spec: str) -> str:
    hint = ""
    try:
        import difflib

        import timm
        close = difflib.get_close_matches(spec, timm.list_pretrained(), n=3, cutoff=0.6)
        hint = f" (e.g. {', '.join(close)})" if close else ""
    except ImportError:  # pragma: no cover - a declared dependency
        pass
    return (f"{spec} is no timm pretrained name, hub id (org/name) or local folder; pass a name "
            f"from timm.list_pretrained(){hint}")


def create_timm(spec: str, weights, **kwargs):
    """The timm model of ``spec`` (a pretrained name or a timm hub id) with the weights file
    ``weights`` (from :func:`timm_weights`), eval mode: a snapshot whose ``config.json`` is
    timm's is built as timm builds ``local-dir:`` folders (architecture, arguments, preprocessing
    from the file); a pretrained name as ``timm.create_model(name, pretrained=True)`` with the
    weights read from ``weights`` instead of the hub. ``kwargs`` go to ``timm.create_model``. A
    file that does not fit is a one-line :class:`palrp.loaders.checkpoints.CheckpointError`."""
    import timm

    from palrp.loaders.checkpoints import CheckpointError

    spec, weights = str(spec), Path(weights)
    parsed = parse_hub_id(spec)
    name = parsed[0].split("/")[-1] if parsed else spec
    try:
        if parsed is not None and is_timm_folder(weights.parent):
            model = timm.create_model(f"local-dir:{weights.parent}", pretrained=True, **kwargs)
        else:
            cfg = timm_pretrained_cfg(name)
            if cfg is None:
                raise HubError(f"{spec} holds no timm config.json and {name} is no timm "
                               "pretrained name; pass a timm model's hub id or name")
            overlay = {"file": str(weights), "custom_load": cfg.custom_load == "hf"}
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay,
                                      **kwargs)
    except HubError:
        raise
    except Exception as exc:  # noqa: BLE001 -- timm raises many kinds for a file that misfits
        raise CheckpointError(f"cannot build timm model {spec} from {weights} ({exception_line(exc)}); "
                              "fetch its weights again (`hf download`) or pass weights saved "
                              "from this architecture") from None
    from palrp.loaders.health import check_finite_parameters
    check_finite_parameters(model, weights, CheckpointError)
    return model.eval()


# --- names for output folders ----------------------------------------------------------------

def cached_repo_id(path) -> str | None:
    """``org/name`` when ``path`` lies in a snapshot of the hub cache
    (``.../models--org--name/snapshots/<commit>/...``), else None."""
    parts = Path(path).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--"):
            return "/".join(parts[i - 1].split("--")[1:])
    return None


def model_label(path, *, stem: bool = False) -> str:
    """A short name of a model for output folders: the repo's name for a file or folder in the
    hub cache (not the commit hash or ``model``), else the path's name (``stem``: without the
    suffix)."""
    repo = cached_repo_id(path)
    if repo is not None:
        return repo.split("/")[-1]
    path = Path(path)
    return path.stem if stem else path.name


def deit_weights(size: str, *, allow_download: bool = False) -> Path:
    """The official DeiT weights of ``size`` (``tiny``, ``small``, ``base``): the file its
    ``PALRP_DEIT_*`` variable names, when set; else timm's copy (``config.DEIT_HUB_IDS``) when
    the cache has it; else the configured default file when it exists; else
    (``allow_download``) timm's copy downloaded; else the configured path (whose absence the
    vision loader reports with where the weights come from)."""
    from palrp import config

    check_download_allowed(allow_download)
    configured = Path(config.DEIT_CHECKPOINTS[size])
    if _set_explicitly(f"deit_{size}") and configured.exists():
        return configured
    hub_id = config.DEIT_HUB_IDS[size]
    try:
        return timm_weights(hub_id)
    except HubError:
        if configured.exists() or not allow_download:
            return configured
    return timm_weights(hub_id, allow_download=True)


# --- the one loader ------------------------------------------------------------------------------

def load_model(spec, head: str = "auto", *, allow_download: bool = False, dtype=None,
               device=None, device_map=None, tokenizer: bool = True, **kwargs):
    """Load a model given by ``spec`` -- a local folder or weights file, a hub id
    ``org/name[@revision]``, or a timm pretrained name -- from disk or the Hugging Face cache
    (module docstring). Returns what the loader of its kind returns:

    - a transformers folder (local or cached snapshot):
      :func:`palrp.loaders.text_models.load_text_model` (a ``TextModel`` with ``.model``,
      ``.tokenizer``, ``.head``), with ``head``, ``dtype``, ``device``, ``device_map``,
      ``tokenizer`` and ``kwargs`` (config overrides) passed on;
    - a timm model (pretrained name, ``timm/<name>`` hub id, or a folder with timm's
      ``config.json``): the timm module, eval mode, on ``device`` when given (else CPU);
      ``kwargs`` go to ``timm.create_model``;
    - a weights file: :func:`palrp.loaders.checkpoints.load_deit` (``kwargs`` as its overrides).

    ``allow_download``: fetch a hub model missing from the cache (never by default; refused in
    the hub's offline mode). Every failure is one line (a ``ValueError``: :class:`HubError`,
    ``ModelFolderError``, ``CheckpointError``)."""
    from palrp.loaders.text_models import load_text_model

    check_download_allowed(allow_download)
    text = str(spec)
    path = Path(text).expanduser()
    timm_spec = None
    if path.is_file():
        from palrp.loaders.checkpoints import load_deit
        return _placed(load_deit(path, **kwargs), device)
    if path.is_dir() and is_timm_folder(path):
        return _placed(_create_timm_folder(path, kwargs), device)
    parsed = None if path.exists() else parse_hub_id(text)
    if parsed is not None:
        folder = _hub_folder(parsed, text, allow_download)
        if folder is None or is_timm_folder(folder):
            timm_spec = text
        else:
            path = folder
    elif not path.exists() and timm_pretrained_cfg(text) is not None:
        timm_spec = text
    elif not path.exists() and "/" not in text:
        raise HubError(_unknown_timm_line(text))
    if timm_spec is not None:
        weights = timm_weights(timm_spec, allow_download=allow_download)
        return _placed(create_timm(timm_spec, weights, **kwargs), device)
    return load_text_model(path, head, dtype=dtype, device=device, device_map=device_map,
                           tokenizer=tokenizer, **kwargs)


def _hub_folder(parsed, spec: str, allow_download: bool) -> Path | None:
    """The cached snapshot folder of a hub id for :func:`load_model`; None for a timm repo
    whose cache holds only the weights (timm's own download fetches no config.json)."""
    repo, revision = parsed
    try:
        folder = cached_snapshot(repo, revision, spec=spec)
    except HubError:
        if not allow_download:
            raise
        folder = cached_snapshot(repo, revision, allow_download=True, spec=spec)
    if not (folder / "config.json").exists() and repo.startswith("timm/"):
        return None
    return folder


def _create_timm_folder(folder: Path, kwargs):
    import timm

    from palrp.loaders.checkpoints import CheckpointError
    from palrp.loaders.health import check_finite_parameters
    try:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True, **kwargs).eval()
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"cannot build the timm model in {folder} ({exception_line(exc)}); "
                              "save it again with timm's save_for_hf") from None
    check_finite_parameters(model, folder, CheckpointError)
    return model


def _placed(model, device):
    return model if device is None else model.to(device)
