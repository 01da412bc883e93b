"""Loading vision checkpoints into timm's own models.

- :func:`read_checkpoint`: a ``.pth``/``.pt``/``.bin`` (a state dict, or the official DeiT
  ``{"model": state_dict}``) or a ``.safetensors`` file -> (state dict, config). The config is
  the JSON in the safetensors metadata (``"config"``) or in a sibling ``<name>.json``
  (``{"config": {...}}``), else empty.
- :func:`load_deit`: an official DeiT / timm ViT checkpoint -> timm ``VisionTransformer`` built
  from the geometry inferred from the weights (``timm.create_model`` with that img_size, patch,
  width, depth, heads and classes; strict load). The checkpoint's mean/std and class names go
  into the model's ``pretrained_cfg`` (``mean``, ``std``, ``label_names``), where
  :mod:`palrp.loaders.vision_model` reads them.
- :func:`load_timm_model`: ``timm.create_model(name, pretrained=False, ...)`` and a strict load
  of a weights file, for every timm family (``--timm-model NAME --model weights``).

Every failure is a :class:`CheckpointError` (or ``FileNotFoundError``) with one line naming the
problem and what to pass instead.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import torch

from palrp.loaders.health import check_finite_parameters

__all__ = ["CheckpointError", "read_checkpoint", "load_deit", "load_timm_model", "NAMED_SIZES"]

#: The three official DeiT sizes (no distillation token): width and head count.
NAMED_SIZES = {
    "tiny": dict(embed_dim=192, num_heads=3),
    "small": dict(embed_dim=384, num_heads=6),
    "base": dict(embed_dim=768, num_heads=12),
}

#: The timm architecture a DeiT checkpoint is built as (its pretrained config gives the DeiT
#: preprocessing of timm's DeiT entry: interpolation, crop fraction, mean/std); every geometry
#: argument is passed explicitly, inferred from the weights.
_DEIT_ARCH = "deit_tiny_patch16_224"

_REQUIRED_KEYS = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight",
                  "head.weight")

#: Settings of a DeiT checkpoint's config (file or overrides) that are not in its weights.
_DEIT_SETTINGS = ("num_heads", "img_size", "mean", "std", "class_names", "in_chans",
                  "patch_size", "embed_dim", "depth", "mlp_ratio", "qkv_bias", "num_classes")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the requested model; the message says what to pass."""


def _pair(value) -> tuple[int, int]:
    """An image-size setting as (H, W), by :mod:`palrp.loaders.vision_model`'s reader; a bad
    one is a :class:`CheckpointError`."""
    from palrp.loaders.vision_model import pair
    try:
        return pair(value)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def read_checkpoint(path: Path | str) -> tuple[dict, dict]:
    """(state_dict, config-from-file) for a .pth/.pt/.bin or .safetensors file.

    ``module.`` prefixes (DataParallel) are removed from the keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; pass the path of a .pth, .bin "
                                "or .safetensors file (or --demo for the embedded model)")
    file_cfg: dict = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                state = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {path} as safetensors ({_reason(exc)}); "
                                  "pass an intact checkpoint") from None
        if "config" in meta:
            file_cfg = _config_json(meta["config"], f"the \"config\" metadata of {path}",
                                    "save the weights again with their config")
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint ({_reason(exc)}); "
                                  "pass an intact .pth/.bin/.safetensors file") from None
        state = _unwrap_state(obj)
        if state is None:
            raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict; "
                                  "pass a model checkpoint")
    bad = next((k for k, v in state.items() if not isinstance(k, str)
                or not isinstance(v, torch.Tensor)), None)
    if not state or bad is not None:
        what = "no tensors" if not state else f"{bad!r}, which is no named tensor"
        raise CheckpointError(f"{path} holds {what}, so it is no model checkpoint; pass a "
                              ".pth/.bin/.safetensors file of a model's state dict")
    sidecar = path.with_suffix(".json")
    if not file_cfg and sidecar.is_file():
        try:
            text = sidecar.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cannot read the config file {sidecar} ({exc}); restore it "
                                  "or remove it") from None
        side = _config_json(text, f"the config file {sidecar}", "restore it or remove it")
        file_cfg = side.get("config", {}) or {}
        if not isinstance(file_cfg, dict):
            raise CheckpointError(f"the config file {sidecar} has a \"config\" that is no JSON "
                                  "object; restore it or remove it")
    return _strip_prefix(state), dict(file_cfg)


def _config_json(text: str, where: str, fix: str) -> dict:
    """``text`` parsed as a JSON object; else :class:`CheckpointError` naming ``where``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{where} is not valid JSON (line {exc.lineno}, column "
                              f"{exc.colno}: {exc.msg}); {fix}") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{where} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{where} holds a JSON {type(value).__name__}, not an object "
                              f"of settings; {fix}")
    return value


def _reason(exc: Exception) -> str:
    """The one line of a reader's error that says what is wrong: torch's weights-only
    unpickler wraps its reason in paragraphs of advice (the line after ``WeightsUnpickler
    error:``); otherwise the first non-empty line, at most 200 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.endswith("WeightsUnpickler error:") and i + 1 < len(lines):
            return f"not a weights-only checkpoint: {lines[i + 1]}"[:200]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _unwrap_state(obj):
    """The state dict inside a checkpoint object (``{"model": ...}`` and the like), or None."""
    if not isinstance(obj, Mapping):
        return None
    for key in ("model", "state_dict", "model_state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            return dict(obj[key])
    return dict(obj)


def _strip_prefix(state: Mapping) -> dict:
    return {k.removeprefix("module."): v for k, v in state.items()}


def _source_state(checkpoint) -> tuple[dict, dict, str]:
    if isinstance(checkpoint, Mapping):
        return _strip_prefix(_unwrap_state(checkpoint)), {}, "the state dict"
    state, file_cfg = read_checkpoint(checkpoint)
    return state, file_cfg, str(checkpoint)


def _preprocessing_overlay(settings: dict, img_size: tuple[int, int], in_chans: int) -> dict:
    """The ``pretrained_cfg`` entries a checkpoint's config sets (mean/std, class names) and
    the input size the model is built at."""
    overlay = {"input_size": (in_chans, *img_size)}
    for key in ("mean", "std"):
        if settings.get(key) is not None:
            overlay[key] = tuple(float(v) for v in settings[key])
    if settings.get("class_names"):
        overlay["label_names"] = list(settings["class_names"])
    return overlay


def _infer_deit_kwargs(state: dict, file_cfg: dict, overrides: dict, source: str) -> dict:
    """``timm.create_model`` keyword arguments for a plain ViT/DeiT state dict."""
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{source} is not a DeiT/ViT checkpoint (missing {', '.join(missing)}); "
                              "pass an official DeiT .pth, a timm ViT state dict or a safetensors "
                              "file (other timm families: --timm-model NAME)")
    if "dist_token" in state or "head_dist.weight" in state:
        raise CheckpointError(f"{source} is a distilled DeiT (dist_token); pass the "
                              "non-distilled deit_*_patch16_224 weights, or load it with "
                              "--timm-model deit_*_distilled_patch16_224")
    try:
        dim = int(state["cls_token"].shape[-1])
        patch = tuple(int(v) for v in state["patch_embed.proj.weight"].shape[-2:])
        in_chans = int(state["patch_embed.proj.weight"].shape[1])
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
        num_classes = int(state["head.weight"].shape[0])
        num_patches = int(state["pos_embed"].shape[1]) - 1
        head_dim = _head_dim(state)
    except (KeyError, IndexError, ValueError) as exc:
        raise CheckpointError(f"{source} is not a complete DeiT/ViT checkpoint (cannot read "
                              f"its geometry: {type(exc).__name__} {exc}); pass an intact DeiT "
                              "checkpoint (other timm families: --timm-model NAME)") from None
    if dim <= 0 or hidden <= 0 or len(patch) != 2 or min(patch) <= 0 or num_patches <= 0:
        raise CheckpointError(f"{source} has empty weights (width {dim}, MLP {hidden}, patch "
                              f"{patch}, {num_patches} positions); pass an intact checkpoint")

    settings = dict(file_cfg)
    settings.pop("held_out_accuracy", None)
    size = overrides.pop("model_size", None)
    if size is not None:
        if size not in NAMED_SIZES:
            raise CheckpointError(f"unknown model size {size!r}; pass one of {sorted(NAMED_SIZES)}")
        expected = NAMED_SIZES[size]["embed_dim"]
        if expected != dim:
            actual = next((n for n, s in NAMED_SIZES.items() if s["embed_dim"] == dim), None)
            hint = f"--model-size {actual}" if actual else "no --model-size"
            raise CheckpointError(f"{source} has width {dim} but DeiT-{size.capitalize()} has "
                                  f"{expected}; pass {hint} (the size is inferred from the checkpoint)")
        settings.setdefault("num_heads", NAMED_SIZES[size]["num_heads"])
    elif "num_heads" not in settings and "num_heads" not in overrides:
        named = _size_from_name(source)
        if named is not None and NAMED_SIZES[named]["embed_dim"] == dim:
            settings["num_heads"] = NAMED_SIZES[named]["num_heads"]
    expected_classes = overrides.pop("num_classes", None)
    if expected_classes is not None and expected_classes != num_classes:
        raise CheckpointError(f"{source} has a {num_classes}-class head but {expected_classes} "
                              f"classes were expected; pass a checkpoint trained on these "
                              f"{expected_classes} classes")
    settings.update(overrides)
    unknown = sorted(set(settings) - set(_DEIT_SETTINGS))
    if unknown:
        raise CheckpointError(f"unknown DeiT setting(s) {unknown}; known: {sorted(_DEIT_SETTINGS)}")
    if "img_size" in settings:
        img_size = _pair(settings["img_size"])
    else:
        side = math.isqrt(num_patches)
        if side * side != num_patches:
            raise CheckpointError(f"{source} has {num_patches} patches, not a square grid; "
                                  "pass img_size=(H, W)")
        img_size = (side * patch[0], side * patch[1])
    grid = (img_size[0] // patch[0], img_size[1] // patch[1])
    if grid[0] * grid[1] != num_patches:
        raise CheckpointError(f"{source} has {num_patches} patch positions but a "
                              f"{img_size[0]}x{img_size[1]} image with patch {patch[0]} gives "
                              f"{grid[0] * grid[1]}; pass the image size it was trained at")
    num_heads = _num_heads(settings, dim, head_dim, source)
    if dim % num_heads:
        raise CheckpointError(f"width {dim} is not divisible by {num_heads} heads; "
                              "pass num_heads= that divides the width")
    return dict(
        img_size=img_size, patch_size=patch, in_chans=in_chans, embed_dim=dim, depth=depth,
        num_heads=num_heads, mlp_ratio=hidden / dim, num_classes=num_classes,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        **({"qk_norm": True} if head_dim is not None else {}),
        pretrained_cfg_overlay=_preprocessing_overlay(settings, img_size, in_chans))


def _head_dim(state: Mapping) -> int | None:
    """The per-head width when the attention weights determine it: the q/k normalisation
    weights (``blocks.0.attn.q_norm.weight``, size head_dim); None otherwise (``qkv`` is
    (3D, D) whatever the head count)."""
    for key in ("blocks.0.attn.q_norm.weight", "blocks.0.attn.k_norm.weight"):
        if key in state and state[key].dim() == 1:
            return int(state[key].shape[0])
    return None


def _size_from_name(source: str) -> str | None:
    """The DeiT size an official file's name gives (``deit_tiny_patch16_224-a1311bcf.pth``, or
    timm's ``timm/deit_small_patch16_224.fb_in1k`` snapshot in the hub cache), else None."""
    import re
    from palrp.loaders.hub import cached_repo_id

    names = [Path(source).name, cached_repo_id(source) or ""]
    for name in names:
        match = re.search(r"deit_(tiny|small|base)_patch", name)
        if match:
            return match.group(1)
    return None


def _num_heads(settings: dict, dim: int, head_dim: int | None, source: str) -> int:
    """The head count: from the attention weights where they determine it (q/k norm weights),
    checked against a given one; else the given one (config, ``num_heads=``, ``model_size=``
    or the official file's name); else :class:`CheckpointError` asking for it -- never a guess."""
    given = settings.get("num_heads")
    if given is not None:
        try:
            given = int(given)
        except (TypeError, ValueError):
            raise CheckpointError(f"num_heads must be a whole number, got {given!r}; pass "
                                  "--num-heads N") from None
        if given <= 0:
            raise CheckpointError(f"num_heads must be positive, got {given}; pass --num-heads N")
    if head_dim is not None:
        if head_dim <= 0 or dim % head_dim:
            raise CheckpointError(f"{source} has q/k norm weights of size {head_dim}, which does "
                                  f"not divide the width {dim}; pass an intact checkpoint")
        heads = dim // head_dim
        if given is not None and given != heads:
            raise CheckpointError(f"{source} has {heads} attention heads (head width {head_dim} "
                                  f"of {dim}) but {given} were given; pass --num-heads {heads} "
                                  "or none")
        return heads
    if given is None:
        raise CheckpointError(
            f"{source} does not record its number of attention heads (its weights of width "
            f"{dim} fit any head count that divides it); pass --num-heads N (num_heads=N), "
            "--model-size tiny|small|base for official DeiT weights, or a config with "
            "\"num_heads\" (safetensors metadata or a sibling .json {\"config\": {...}})")
    return given


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)


def load_deit(checkpoint, **overrides) -> torch.nn.Module:
    """A plain ViT/DeiT checkpoint (path or state dict) -> timm ``VisionTransformer``, eval mode.

    The geometry (image and patch size, width, depth, MLP ratio, classes, qkv bias) is inferred
    from the weights; the head count only where the weights determine it (q/k norm weights of
    size head_dim), else it comes from the file's config, ``num_heads=``, ``model_size=`` or an
    official file's name (``deit_<size>_patch16_224``) -- none of these: one line asking for
    it, never a guessed count. Non-finite weights are refused (the first one is named).
    ``overrides`` also set ``img_size``, ``mean``/``std`` and ``class_names``, and check
    expectations: ``model_size`` ("tiny", "small", "base") and ``num_classes`` raise
    :class:`CheckpointError` with a fix when they disagree with the weights.
    """
    import timm
    state, file_cfg, source = _source_state(checkpoint)
    kwargs = _infer_deit_kwargs(state, file_cfg, dict(overrides), source)
    try:
        model = timm.create_model(_DEIT_ARCH, pretrained=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a geometry timm cannot build
        raise CheckpointError(f"cannot build the ViT {source} describes ({type(exc).__name__}: "
                              f"{_first_line(exc)}); pass an intact DeiT/ViT checkpoint") from None
    _load_strict(model, state, source, "the inferred ViT",
                 "pass a plain DeiT/ViT checkpoint (other timm families: --timm-model NAME)")
    check_finite_parameters(model, source, CheckpointError)
    return model.eval()


def _load_strict(model, state: dict, source: str, what: str, fix: str) -> None:
    own = set(model.state_dict())
    extra = sorted(set(state) - own)
    missing = sorted(own - set(state))
    if extra or missing:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:3])}{'...' if len(extra) > 3 else ''}")
        raise CheckpointError(f"{source} does not fit {what} ({'; '.join(parts)}); {fix}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source} does not fit {what} ({_first_line(exc)}); {fix}") from None


def load_timm_model(name: str, weights, **kwargs) -> torch.nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)`` with the weights of ``weights``
    (a .safetensors/.pth/.bin path or a state dict), strict, eval mode.

    The number of classes and the image size are taken from the weights (head rows; position
    table length, when the table covers the patch grid) unless given; other create arguments
    can come from the file's config (safetensors metadata or sibling JSON ``{"config": {...}}``,
    e.g. ``{"depth": 2, "embed_dim": 48}``), with ``mean``/``std``/``class_names`` going into
    the model's ``pretrained_cfg``. An unknown timm name, a missing file or weights of another
    architecture give one line; weights of the same family at another depth, width, patch or
    MLP size name the shapes that differ and the timm name of that size (when one fits
    exactly) or the create arguments to give.
    """
    import timm
    if not timm.is_model(name):
        import difflib
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (e.g. {', '.join(close)})" if close else ""
        raise CheckpointError(f"unknown timm model {name!r}; pass a name from "
                              f"timm.list_models(){hint}")
    state, file_cfg, source = _source_state(weights)
    settings = {**file_cfg, **kwargs}
    settings.pop("held_out_accuracy", None)
    preprocessing = {key: settings.pop(key) for key in ("mean", "std", "class_names")
                     if key in settings}
    head = state.get("head.weight", state.get("head.fc.weight"))     # head.fc: Swin's ClassifierHead
    if "num_classes" not in settings and head is not None and head.dim() == 2:
        settings["num_classes"] = head.shape[0]
    try:
        probe = timm.create_model(name, pretrained=False, **settings)
    except Exception as exc:
        raise CheckpointError(f"cannot build timm model {name!r} with {sorted(settings)} "
                              f"({exc.__class__.__name__}: {_first_line(exc)}); pass create "
                              "arguments that this architecture takes") from None
    given = dict(settings)
    if "img_size" not in settings:
        size = _img_size_from_pos_embed(probe, state)
        if size is not None and size != tuple(probe.patch_embed.img_size):
            settings["img_size"] = size
    img_size = _pair(settings.get("img_size", tuple(probe.patch_embed.img_size)))
    in_chans = int(probe.patch_embed.proj.in_channels)
    overlay = _preprocessing_overlay(preprocessing, img_size, in_chans)
    model = timm.create_model(name, pretrained=False, pretrained_cfg_overlay=overlay, **settings)
    _check_geometry(model, state, source, name, settings, given)
    _load_strict(model, state, source, f"timm model {name!r}",
                 f"pass weights saved from {name} (or the timm name they were trained as)")
    check_finite_parameters(model, source, CheckpointError)
    return model.eval()


#: Size words of timm's model names (``vit_small_...``, ``eva02_tiny_...``), tried in turn to
#: name the architecture a checkpoint of another size fits.
_SIZE_WORDS = ("tiny", "small", "medium", "base", "large", "huge", "giant", "gigantic")


def _geometry(state: Mapping) -> dict:
    """``depth``, ``embed_dim``, ``patch_size`` and ``mlp_ratio`` of a ViT-like state dict, as
    far as its shapes tell (``blocks.<i>.`` keys, ``patch_embed.proj.weight``, the first MLP
    layer); absent entries are left out."""
    geometry: dict = {}
    blocks = {int(k.split(".")[1]) for k in state
              if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if blocks:
        geometry["depth"] = max(blocks) + 1
    proj = state.get("patch_embed.proj.weight")
    if proj is not None and proj.dim() == 4:
        geometry["embed_dim"] = int(proj.shape[0])
        ph, pw = (int(v) for v in proj.shape[-2:])
        geometry["patch_size"] = ph if ph == pw else (ph, pw)
    fc1 = next((state[k] for k in ("blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1_g.weight")
                if k in state), None)
    if fc1 is not None and fc1.dim() == 2 and "embed_dim" in geometry:
        geometry["mlp_ratio"] = round(int(fc1.shape[0]) / geometry["embed_dim"], 4)
    return geometry


def _key_pattern(state: Mapping) -> set[str]:
    """The state dict's key names with the block numbers blanked (``blocks.*.attn.qkv.weight``):
    equal for two sizes of one architecture, different for two architectures."""
    return {".".join("*" if i == 1 and parts[0] == "blocks" and part.isdigit() else part
                     for i, part in enumerate(parts))
            for parts in (k.split(".") for k in state)}


def _fits(model_state: Mapping, state: Mapping) -> bool:
    return set(model_state) == set(state) and all(
        tuple(model_state[k].shape) == tuple(state[k].shape) for k in state)


def _sized_names(name: str, state: Mapping, settings: dict, patch) -> list[str]:
    """timm names (each with its head count, which no shape shows) that differ from ``name``
    only in the size word (``tiny``, ``small``, ...)
    and/or the patch (``patch16`` -> ``patch<patch>``) and whose default architecture, built
    on the meta device with the same ``settings`` (the image size re-read from the position
    table unless given), has exactly the checkpoint's keys and shapes."""
    import timm
    words = name.split("_")
    patch_word = f"patch{patch}" if isinstance(patch, int) else None
    variants = {name}
    for position, word in enumerate(words):
        if word in _SIZE_WORDS:
            variants |= {"_".join(words[:position] + [other] + words[position + 1:])
                         for other in _SIZE_WORDS}
    if patch_word:
        variants |= {"_".join(patch_word if w.startswith("patch") and w[5:].isdigit() else w
                              for w in v.split("_")) for v in variants}
    found = []
    for candidate in sorted(variants - {name}):
        if not timm.is_model(candidate):
            continue
        try:
            with torch.device("meta"):
                probe = timm.create_model(candidate, pretrained=False, **settings)
                size = None if "img_size" in settings else _img_size_from_pos_embed(probe, state)
                if size is not None and size != tuple(probe.patch_embed.img_size):
                    probe = timm.create_model(candidate, pretrained=False, img_size=size,
                                              **settings)
        except Exception:  # noqa: BLE001 - a name that does not take these settings
            continue
        if _fits(probe.state_dict(), state):
            heads = getattr(getattr(probe.blocks[0], "attn", None), "num_heads", None)
            found.append(candidate if heads is None else f"{candidate} ({heads} heads)")
    return found


def _check_geometry(model, state: Mapping, source: str, name: str, settings: dict,
                    given: dict) -> None:
    """One line when the weights are a ViT of another depth, width, patch or MLP size than
    timm's ``name`` builds: which shapes differ, the timm name of that size where one fits
    exactly (checked on the meta device, never loaded by guess), else the create arguments
    to give. ``given``: the create arguments from the caller and the file (no image size read
    from the weights)."""
    model_state = model.state_dict()
    if _key_pattern(model_state) != _key_pattern(state):
        return          # another architecture, not another size: _load_strict names the keys
    own, theirs = _geometry(model_state), _geometry(state)
    differ = [k for k in ("depth", "embed_dim", "patch_size", "mlp_ratio")
              if k in own and k in theirs and own[k] != theirs[k]]
    if not differ:
        return
    have = ", ".join(f"{k} {theirs[k]}" for k in differ)
    want = ", ".join(f"{k} {own[k]}" for k in differ)
    geometry_given = any(k in given for k in ("depth", "embed_dim", "patch_size", "mlp_ratio",
                                               "num_heads"))
    names = [] if geometry_given else _sized_names(name, state, given, theirs.get("patch_size"))
    arguments = ", ".join(f"{k}={theirs[k]}" for k in differ)
    heads = (" and its num_heads (the weights do not store it)"
             if "embed_dim" in differ else "")
    where = ("in the weights' config (safetensors metadata \"config\" or a sibling .json "
             "{\"config\": {...}})")
    if names:
        fix = (f"pass --timm-model {' or '.join(names)}, timm's architecture with these "
               f"shapes, or give {arguments}{heads} {where}")
    else:
        fix = f"give {arguments}{heads} {where}, or pass the timm name they were trained as"
    raise CheckpointError(f"{source} does not fit timm model {name!r}: the weights have {have}, "
                          f"{name} has {want}; {fix}")


def _img_size_from_pos_embed(model, state: dict) -> tuple[int, int] | None:
    """The square image size whose patch grid the checkpoint's position table covers, or None
    (no table, or a table of another length that is not a square grid)."""
    table = state.get("pos_embed")
    own = getattr(model, "pos_embed", None)
    if table is None or own is None or table.dim() != 3:
        return None
    prefix = own.shape[1] - model.patch_embed.num_patches
    patches = table.shape[1] - prefix
    side = math.isqrt(max(patches, 0))
    if side * side != patches or patches == 0:
        return None
    ph, pw = model.patch_embed.patch_size
    return (side * ph, side * pw)

