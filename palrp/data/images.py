"""The one image-opening function of the package: an image file read as an image viewer shows it.

:func:`open_image` is what every reader of image files uses (``palrp.loaders.vision_model.load_image``,
the ImageNet folder reader :class:`palrp.data.imagenet.ImageNetFolder`); :func:`to_rgb` is its
mode conversion, applied also to images handed over already opened (``EvalTransform``).

How each kind of file becomes 8-bit RGB:

- EXIF orientation is applied (``ImageOps.exif_transpose``), so a rotated phone photo comes out
  upright; an EXIF block that cannot be parsed is ignored (the pixels are read as stored);
- 16-bit grayscale (``I;16``, ``I;16B``, ``I;16L``; PNG and TIFF) and 32-bit integer (``I``) images
  are scaled by their bit depth, 0..65535 -> 0..255 (``I`` is taken as 16-bit, the depth PNG and
  PGM store in it; values outside are clipped), instead of PIL's clipping to 255 that turns them
  white; float images (``F``) are taken as [0, 1] when every value lies there, else as 0..255;
- palette images (``P``, ``PA``) through their palette, with their transparency if any;
- transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, a palette or ``tRNS`` transparent
  colour) is composited on white, as viewers show it on a white page (alpha is not dropped:
  a transparent pixel is white, not the colour stored under it);
- CMYK (JPEG, TIFF; Adobe's inverted CMYK is undone by PIL's decoder) through PIL's conversion;
- grayscale (``L``, ``1``) repeated in the three channels; YCbCr, LAB, HSV converted by PIL.

Errors are one line each: a missing file raises ``FileNotFoundError``; anything else that
prevents a correct image (not an image, truncated, empty, a mode with no RGB rendering, an image
over PIL's decompression-bomb limit) raises :class:`ImageReadError` (a ``ValueError``) naming the
file, the problem and the fix. The decompression-bomb limit is ``PIL.Image.MAX_IMAGE_PIXELS``
(89,478,485 pixels by default); the environment variable ``PALRP_MAX_IMAGE_PIXELS`` replaces it
for a run (a pixel count, or 0 for no limit).
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

#: The environment variable that replaces PIL's decompression-bomb limit (pixels; 0: none).
LIMIT_VARIABLE = "PALRP_MAX_IMAGE_PIXELS"


class ImageReadError(ValueError):
    """An image file that cannot be read as a correct image; ``str()`` is one line naming the
    file, the problem and the fix; ``path`` is the file and ``reason`` the problem alone."""

    def __init__(self, path, reason: str, fix: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot read image {path}: {reason}; {fix}")


_REPLACE = "replace it with a readable copy (re-export it as PNG or JPEG)"


def _pixel_limit() -> int | None:
    """The decompression-bomb limit in pixels (None: no limit), setting PIL's from
    ``PALRP_MAX_IMAGE_PIXELS`` when that is set."""
    from PIL import Image
    value = os.environ.get(LIMIT_VARIABLE)
    if value is not None and value.strip():
        try:
            limit = int(value)
            if limit < 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"{LIMIT_VARIABLE}={value!r} is not a pixel count; set it to a whole "
                             "number of pixels, or 0 for no limit") from None
        Image.MAX_IMAGE_PIXELS = limit or None
    return Image.MAX_IMAGE_PIXELS or None


def _bomb(path, pixels: int | None, limit: int | None, size=None) -> ImageReadError:
    what = f"{size[0]}x{size[1]} = {pixels:,} pixels" if size else f"{pixels:,} pixels"
    return ImageReadError(
        path, f"it has {what}, over the decompression-bomb limit of {limit:,} pixels "
              f"(PIL.Image.MAX_IMAGE_PIXELS)",
        f"resize it (e.g. to 4096 px on its long side) or, if you trust the file, raise the "
        f"limit: {LIMIT_VARIABLE}={pixels} (0 for none) in the environment, or "
        f"PIL.Image.MAX_IMAGE_PIXELS = {pixels} in Python")


def _scaled(values: np.ndarray, scale: float):
    from PIL import Image
    gray = np.clip(np.rint(values.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def to_rgb(image):
    """A PIL image as 8-bit RGB as a viewer shows it (module docstring: bit-depth scaling,
    palettes, transparency composited on white, CMYK, grayscale); an RGB image is returned
    as it is. Raises ``ValueError`` for a mode that has no RGB rendering."""
    from PIL import Image
    mode = image.mode
    transparent = ("A" in mode or "a" in mode or "transparency" in image.info)
    if mode == "RGB" and not transparent:
        return image
    if mode.startswith("I;16") or mode == "I":
        return _scaled(np.asarray(image), 255.0 / 65535.0)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        unit = values.size == 0 or (values.min() >= 0.0 and values.max() <= 1.0)
        return _scaled(values, 255.0 if unit else 1.0)
    if transparent:
        if mode == "La":
            image = image.convert("LA")
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _transposed(image):
    """``image`` turned upright by its EXIF orientation; a copy, so the file can be closed.
    An EXIF block that cannot be parsed leaves the pixels as stored."""
    from PIL import ImageOps
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:          # noqa: BLE001 - a damaged EXIF block: show the pixels as stored
        upright = None
    return image.copy() if upright is None or upright is image else upright


def open_image(path: str | os.PathLike):
    """The image file ``path`` as an 8-bit RGB ``PIL.Image`` as a viewer shows it, fully decoded
    (module docstring). Raises ``FileNotFoundError`` (a missing file) or :class:`ImageReadError`
    (not an image, truncated, empty, over the decompression-bomb limit), each with one line."""
    from PIL import Image
    path = Path(path)
    if path.is_dir():
        raise ImageReadError(path, "it is a folder", "pass an image file")
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    limit = _pixel_limit()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if limit is not None and width * height > limit:
                    raise _bomb(path, width * height, limit, (width, height))
                image.load()
                return to_rgb(_transposed(image))
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _bomb(path, int(found.group(1)) if found else 0, limit) from None
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except Exception as exc:   # noqa: BLE001 - every decoder failure of a damaged file
        raise ImageReadError(path, describe_failure(path, exc), _REPLACE) from None


def describe_failure(path: Path, exc: BaseException) -> str:
    """The problem of an image file that failed to decode, in a few words."""
    from PIL import UnidentifiedImageError
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if size == 0:
        return "the file is empty"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file PIL can read (PNG, JPEG, BMP, TIFF, WebP, ...)"
    text = " ".join(str(exc).split())[:160]
    if "truncated" in text:
        return f"the file is truncated ({text})"
    return f"the file is damaged ({type(exc).__name__}: {text})" if text else \
        f"the file is damaged ({type(exc).__name__})"


def check_image(path: str | os.PathLike) -> str | None:
    """None when :func:`open_image` reads ``path``, else the one-line reason it does not."""
    try:
        open_image(path)
    except (FileNotFoundError, ImageReadError) as exc:
        return str(exc)
    return None
