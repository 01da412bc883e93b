"""torchvision's vision transformers by name: ``VisionTransformer`` (``vit_b_16``, ``vit_l_32``,
...) and ``SwinTransformer`` (``swin_t``, ``swin_v2_b``, ...), the families ``tv_vit`` and
``tv_swin`` of the engine, built by ``torchvision.models.get_model(name, weights=None)`` and
given the weights of a state-dict file (or torchvision's own released file from the torch hub
cache): what ``explain_image.py --torchvision-model NAME`` loads.

Nothing is hard-coded per model: the class count is read from the checkpoint's head, a ViT's
image size from its position table (``(S / patch)^2 + 1`` rows), and the preprocessing
(resize, centre crop, mean/std, interpolation) and class names from the architecture's default
torchvision weights' metadata, which needs no download.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .checkpoints import CheckpointError, _load_strict, read_checkpoint

__all__ = ["torchvision_names", "load_torchvision_model", "cached_weights", "Preprocessing"]


def torchvision_names() -> list[str]:
    """The torchvision classification models the engine explains (the builders whose model
    class is a registered family's)."""
    import torchvision.models as tvm
    from torchvision.models.swin_transformer import SwinTransformer
    from torchvision.models.vision_transformer import VisionTransformer

    explained = (VisionTransformer, SwinTransformer)
    return sorted(name for name in tvm.list_models(module=tvm)
                  if _returns(tvm.get_model_builder(name), explained))


def _returns(builder, classes) -> bool:
    """Whether ``builder`` is annotated to return one of ``classes`` (torchvision's builders
    are; a string annotation counts by name)."""
    import inspect
    annotation = inspect.signature(builder).return_annotation
    return any(annotation is cls or annotation == cls.__name__ for cls in classes)


def _check_name(name: str) -> None:
    names = torchvision_names()
    if name not in names:
        raise CheckpointError(f"{name!r} is not a torchvision vision transformer the engine "
                              f"explains; pass one of {', '.join(names)}")


def _head(state: dict) -> tuple[str, int]:
    for key in ("heads.head.weight", "head.weight"):
        if key in state:
            return key, int(state[key].shape[0])
    raise CheckpointError("the checkpoint has no classification head (heads.head.weight or "
                          "head.weight); pass a torchvision classifier's state dict")


def _vit_image_size(state: dict, name: str) -> dict:
    """``image_size`` of a ViT from its position table (class token + a square patch grid)."""
    table = state.get("encoder.pos_embedding")
    conv = state.get("conv_proj.weight")
    if table is None or conv is None:
        return {}
    grid = math.isqrt(int(table.shape[1]) - 1)
    if grid * grid != int(table.shape[1]) - 1:
        raise CheckpointError(f"the position table of {name} has {table.shape[1]} rows, not a "
                              "class token and a square patch grid")
    return {"image_size": grid * int(conv.shape[-1])}


def load_torchvision_model(name: str, weights: Path | str) -> torch.nn.Module:
    """The torchvision model ``name`` with the state dict of ``weights`` (.pth/.bin or
    .safetensors), in eval mode. A missing file is ``FileNotFoundError``; a file that does not
    fit the architecture, or a name that is not a supported torchvision model, is a
    :class:`CheckpointError` with one line."""
    import torchvision.models as tvm

    _check_name(name)
    state, _ = read_checkpoint(weights)
    _, classes = _head(state)
    kwargs = {"num_classes": classes}
    if name.startswith("vit_"):
        kwargs.update(_vit_image_size(state, name))
    try:
        model = tvm.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot build {name} for {weights} ({exc})") from None
    _load_strict(model, state, str(weights), f"torchvision's {name}",
                 "pass the weights of that architecture")
    return model.eval()


def _default_weights(name: str):
    import torchvision.models as tvm
    return tvm.get_model_weights(name).DEFAULT


def cached_weights(name: str, allow_download: bool = False) -> Path:
    """The file of torchvision's default released weights of ``name`` in the torch hub cache
    (``torch.hub.get_dir()/checkpoints``), fetched there only with ``allow_download``;
    ``FileNotFoundError`` with one line naming the file and the fix otherwise."""
    _check_name(name)
    url = _default_weights(name).url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    if not allow_download:
        raise FileNotFoundError(f"torchvision's {name} weights are not in the torch hub cache "
                                f"({path}); download {url} there, pass the file with --model, "
                                "or add --allow-download")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(path))
    return path


class Preprocessing:
    """The eval transform of the architecture's default torchvision weights (resize the short
    side, centre crop, [0, 1] pixels; :meth:`normalize` applies the mean/std), at the model's
    input size, and the class names of those weights when the model has as many classes."""

    def __init__(self, model, name: str):
        meta = _default_weights(name)
        transform = meta.transforms()
        crop = int(transform.crop_size[0])
        size = int(getattr(model, "image_size", crop))      # a ViT's table fixes its input
        self.crop = size
        self.resize = round(int(transform.resize_size[0]) * size / crop)
        self.interpolation = transform.interpolation
        self.mean = tuple(float(v) for v in transform.mean)
        self.std = tuple(float(v) for v in transform.std)
        categories = meta.meta.get("categories") or []
        self.num_classes = _head(model.state_dict())[1]
        self.class_names = list(categories) if len(categories) == self.num_classes else None

    def load_image(self, path: Path | str) -> torch.Tensor:
        """An image file -> (1, 3, crop, crop) [0, 1] pixels (the file read as a viewer shows
        it: :func:`palrp.data.images.open_image`)."""
        from torchvision.transforms import functional as TF

        from ..data.images import open_image
        image = TF.resize(open_image(path), self.resize, interpolation=self.interpolation)
        image = TF.center_crop(image, [self.crop, self.crop])
        return TF.to_tensor(image)[None]

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=images01.dtype, device=images01.device)
        std = torch.tensor(self.std, dtype=images01.dtype, device=images01.device)
        return (images01 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
