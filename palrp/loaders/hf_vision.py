"""transformers image classifiers named by a folder or a hub id, for the vision drivers
(``explain_image.py --model FOLDER_OR_ORG/NAME``).

- :func:`hf_vision_folder`: the local folder of ``spec`` when it is a transformers model
  (a ``save_pretrained`` folder whose ``config.json`` names a ``model_type``, or a hub id whose
  cached snapshot is one; nothing is downloaded unless allowed, :mod:`palrp.loaders.hub`), else
  None (a weights file, a timm folder: the other loaders' business);
- :func:`load_image_classifier`: ``AutoModelForImageClassification`` from that folder, eval mode,
  checked against the registry (a class no family explains is one line naming the supported
  ones) and for finite weights;
- :class:`Preprocessing`: the folder's image processor settings (``preprocessor_config.json``:
  size, resample, rescale, mean/std) or, without one, the config's ``image_size`` and the
  ImageNet mean/std (said in :attr:`Preprocessing.note`): a photo -> [0, 1] pixels at the input
  size (resized to it, the aspect ratio not kept, as the processors of these models do), and
  [0, 1] pixels -> the model's input;
- :func:`class_names`: ``config.id2label`` in index order (None for the generic ``LABEL_i``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from palrp.loaders.hub import cached_snapshot, is_timm_folder, parse_hub_id
from palrp.loaders.text_models import ModelFolderError, exception_line

__all__ = ["hf_vision_folder", "load_image_classifier", "Preprocessing", "class_names",
           "is_transformers_model"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _is_transformers_folder(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file() or is_timm_folder(folder):
        return False
    try:
        return "model_type" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


def hf_vision_folder(spec, *, allow_download: bool = False) -> Path | None:
    """The folder of a transformers model named by ``spec`` (a folder, or a hub id's cached
    snapshot), or None when ``spec`` is something else. A hub id missing from the cache is a
    :class:`HubError` (one line naming it and how to fetch it)."""
    path = Path(str(spec)).expanduser()
    if path.exists():
        return path if path.is_dir() and _is_transformers_folder(path) else None
    parsed = parse_hub_id(str(spec))
    if parsed is None:
        return None
    folder = cached_snapshot(*parsed, allow_download=allow_download, spec=str(spec))
    return folder if _is_transformers_folder(folder) else None


def is_transformers_model(model) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return False
    return isinstance(model, PreTrainedModel)


def load_image_classifier(folder: Path, device=None):
    """The image classifier saved in ``folder``, eval mode, on ``device``; one line
    (:class:`ModelFolderError`) when it cannot be built, is no image classifier or is of a class
    the engine does not explain."""
    from transformers import AutoModelForImageClassification

    from palrp.loaders.health import check_finite_parameters
    from palrp.modules.family import UnsupportedModelError, family_of, supported_line
    try:
        model = AutoModelForImageClassification.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 -- transformers' many load errors, as one line
        raise ModelFolderError(
            f"cannot load an image classifier from {folder} ({exception_line(exc)}); the "
            f"explained transformers image classifiers: {supported_line('image_classifier')}"
        ) from None
    try:
        family, task = family_of(model)
    except UnsupportedModelError as exc:
        raise ModelFolderError(str(exc)) from None
    if task != "image_classifier":
        raise ModelFolderError(f"{type(model).__name__} in {folder} is no image classifier; "
                               f"supported: {supported_line('image_classifier')}")
    check_finite_parameters(model, folder, ModelFolderError)
    model = model.eval()
    return model if device is None else model.to(device)


def class_names(model) -> list[str] | None:
    labels = getattr(model.config, "id2label", None) or {}
    names = [str(labels.get(i, labels.get(str(i), ""))) for i in range(model.config.num_labels)]
    if not names or all(name in ("", f"LABEL_{i}") for i, name in enumerate(names)):
        return None
    return names


def _pair(value) -> tuple[int, int]:
    if isinstance(value, dict):
        if "height" in value:
            return int(value["height"]), int(value["width"])
        side = value.get("shortest_edge") or value.get("longest_edge")
        return int(side), int(side)
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


@dataclass(frozen=True)
class Preprocessing:
    """How a transformers vision model takes an image: resize to ``size`` (H, W) with
    ``resample``, [0, 1] pixels, then ``(x - mean) / std``. ``note``: set when the folder has no
    image processor and the defaults were used."""

    size: tuple[int, int]
    resample: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    note: str = ""

    @classmethod
    def of(cls, model, folder: Path | None = None) -> "Preprocessing":
        config = model.config
        config = getattr(config, "vision_config", None) or config
        size = _pair(config.image_size)
        processor = None if folder is None else Path(folder) / "preprocessor_config.json"
        if processor is None or not processor.is_file():
            return cls(size, "bicubic", IMAGENET_MEAN, IMAGENET_STD,
                       note=f"no preprocessor_config.json: resized to {size[0]}x{size[1]}, "
                            "ImageNet mean/std")
        try:
            settings = json.loads(processor.read_text())
        except (OSError, ValueError) as exc:
            raise ModelFolderError(f"{processor} is not readable JSON ({exception_line(exc)})") from None
        if not isinstance(settings, dict):
            raise ModelFolderError(f"{processor} does not hold a JSON object")
        if settings.get("size") is not None:
            size = _pair(settings["size"])
        normalise = settings.get("do_normalize", True)
        mean = tuple(settings.get("image_mean") or IMAGENET_MEAN) if normalise else (0.0,) * 3
        std = tuple(settings.get("image_std") or IMAGENET_STD) if normalise else (1.0,) * 3
        resample = _RESAMPLE.get(settings.get("resample", 3), "bicubic")
        return cls(size, resample, tuple(map(float, mean)), tuple(map(float, std)))

    def load_image(self, path) -> torch.Tensor:
        """An image file -> (1, 3, H, W) [0, 1] pixels at :attr:`size` (read as a viewer shows
        it, :func:`palrp.data.images.open_image`)."""
        from PIL import Image

        from palrp.data.images import open_image, to_rgb
        resample = getattr(Image.Resampling, self.resample.upper())
        image = to_rgb(open_image(path)).resize((self.size[1], self.size[0]), resample)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        return (pixels.view(self.size[0], self.size[1], 3).permute(2, 0, 1).float() / 255.0)[None]

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=images01.device, dtype=images01.dtype)
        std = torch.tensor(self.std, device=images01.device, dtype=images01.dtype)
        return (images01 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


