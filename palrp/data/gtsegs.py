"""The ``gtsegs_ijcv.mat`` file of the ImageNet-Segmentation benchmark: reader, dataset, writer (docs/protocols.md, section 1).

Layout (MATLAB v7.3, i.e. HDF5): ``/value/img`` and ``/value/gt`` are (N,1) arrays of object
references. ``img[i, 0]`` dereferences to the image, uint8 stored (3,W,H): transposed to (H,W,3).
``gt[i, 0]`` dereferences to a (1,1) reference array whose single entry dereferences to the mask,
stored (W,H): transposed to (H,W), values {0,1}.

- :class:`GtSegsFile` reads single images and masks, opening the HDF5 file lazily and again in every
  process that uses it (h5py handles must not cross a fork), so it works under DataLoader workers.
- :class:`ImageNetSegDataset` applies the preprocessing of docs/protocols.md, section 1 (by default
  the protocol's: bilinear resize to the model size without crop, [0,1], mean/std normalisation;
  nearest-neighbour resize of the mask; or, given a ``transform``, the model's timm eval transform,
  the mask cropped alike) and returns ``(image, mask, index)``.
- :func:`write_gtsegs` writes the same layout, with MATLAB v7.3 conventions (512-byte MAT header
  user block, referenced data under ``/#refs#``, ``MATLAB_class`` attributes).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch

DOWNLOAD_URL = "http://calvin-vision.net/bigstuff/proj-imagenet/data/gtsegs_ijcv.mat"
_README = "https://github.com/hila-chefer/Transformer-Explainability"


def _missing_message(path: Path) -> str:
    return (f"{path} not found: download gtsegs_ijcv.mat (ImageNet-Segmentation of Guillaumin et al.) "
            f"from {DOWNLOAD_URL} (linked in the README of {_README}) and pass its path, "
            f"or run with --demo for the embedded default")


class GtSegsError(ValueError):
    """A ``gtsegs_ijcv.mat`` file that is not readable, or an entry that is not stored as the
    layout says (a mask of another size than its image included); the message is one line
    naming the file, the entry and the fix."""


class GtSegsFile:
    """Lazy reader of one ``gtsegs_ijcv.mat`` file (the layout of docs/protocols.md, section 1).

    The layout is checked when the object is created (the file is then closed again): every image
    is (3, W, H) and every mask (W, H) of its image's size (shapes only, no pixels read); each
    process reopens the file on its first read. Raises ``FileNotFoundError`` for a missing file and
    :class:`GtSegsError` (a ``ValueError``, one line) for a file that is not HDF5, does not have
    the layout, or is damaged where it is read.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(_missing_message(self.path))
        self._file: h5py.File | None = None
        self._pid: int | None = None
        try:
            with self._reading("its index"):
                f = self._open()
                self._check_layout(f)
                self._len = int(f["value/img"].shape[0])
        finally:
            self.close()

    # --- file handling -------------------------------------------------------------------
    def _open(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as e:
                text = " ".join(str(e).split())
                raise GtSegsError(f"{self.path} is not a readable HDF5 / MATLAB v7.3 file "
                                  f"({text}); download it again from {DOWNLOAD_URL} or run with "
                                  f"--demo") from None
            self._pid = os.getpid()
        return self._file

    @contextlib.contextmanager
    def _reading(self, what: str):
        """Turns a failure of h5py inside a damaged file (any exception but :class:`GtSegsError`)
        into one :class:`GtSegsError` line naming the file and ``what`` was being read."""
        try:
            yield
        except GtSegsError:
            raise
        except Exception as exc:   # noqa: BLE001 - h5py/HDF5 errors of a damaged file
            text = " ".join(str(exc).split())[:160]
            raise GtSegsError(f"{self.path} is damaged: cannot read {what} ({type(exc).__name__}"
                              f"{': ' + text if text else ''}); download it again from "
                              f"{DOWNLOAD_URL} or run with --demo") from None

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid = None, None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return self._len

    def _check_layout(self, f: h5py.File) -> None:
        def bad(what: str) -> GtSegsError:
            return GtSegsError(f"{self.path} does not have the gtsegs_ijcv.mat layout: {what}; "
                              f"use the original file from {DOWNLOAD_URL} or run with --demo")

        for key in ("value/img", "value/gt"):
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise bad(f"no dataset /{key}")
        for key in ("value/img", "value/gt"):
            d = f[key]
            if d.ndim != 2 or d.shape[1] != 1:
                raise bad(f"/{key} has shape {d.shape}, expected (N, 1)")
            if d.dtype != h5py.ref_dtype:
                raise bad(f"/{key} holds {d.dtype}, expected object references")
        if f["value/img"].shape[0] != f["value/gt"].shape[0]:
            raise bad(f"/value/img has {f['value/img'].shape[0]} entries but /value/gt has "
                      f"{f['value/gt'].shape[0]}")
        if f["value/img"].shape[0] == 0:
            raise bad("it holds no images")
        gt = f["value/gt"][:, 0]
        for i, ref in enumerate(f["value/img"][:, 0]):     # shapes only: metadata, no pixels
            shape = f[ref].shape
            if len(shape) != 3 or shape[0] != 3:
                raise GtSegsError(f"{self.path}: image {i} is stored with shape {shape}, expected "
                                  f"(3, W, H) RGB; use the original file from {DOWNLOAD_URL} or "
                                  f"rewrite that image with 3 channels")
            mask = self._mask_dataset(f, gt[i], i)
            if tuple(mask.shape) != tuple(shape[1:]):
                raise GtSegsError(
                    f"{self.path}: the mask of image {i} is {_hw(mask.shape)} (H x W) but the "
                    f"image is {_hw(shape[1:])}; give image {i} a mask of its own size (or use "
                    f"the original file from {DOWNLOAD_URL})")

    def _mask_dataset(self, f: h5py.File, ref, i: int) -> h5py.Dataset:
        """The dataset of mask ``i``, behind its (1,1) reference array."""
        holder = f[ref]
        if not isinstance(holder, h5py.Dataset) or holder.dtype != h5py.ref_dtype \
                or holder.size != 1:
            raise GtSegsError(f"{self.path}: mask {i} is not behind a (1,1) reference array "
                              f"(found {getattr(holder, 'dtype', type(holder).__name__)} "
                              f"{getattr(holder, 'shape', '')}); use the original file from "
                              f"{DOWNLOAD_URL}")
        mask = f[holder[()].reshape(-1)[0]]
        if not isinstance(mask, h5py.Dataset) or mask.ndim != 2:
            raise GtSegsError(f"{self.path}: mask {i} is stored with shape "
                              f"{getattr(mask, 'shape', type(mask).__name__)}, expected (W, H); "
                              f"use the original file from {DOWNLOAD_URL}")
        return mask

    def _index(self, i: int) -> int:
        if not -self._len <= i < self._len:
            raise IndexError(f"image index {i} out of range for {self._len} images in {self.path}")
        return i % self._len

    # --- reading -------------------------------------------------------------------------
    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 (H, W, 3)."""
        i = self._index(i)
        with self._reading(f"image {i}"):
            f = self._open()
            arr = np.asarray(f[f["value/img"][i, 0]])
            if arr.ndim != 3 or arr.shape[0] != 3:
                raise GtSegsError(f"{self.path}: image {i} is stored with shape {arr.shape}, "
                                  f"expected (3, W, H) RGB; use the original file from "
                                  f"{DOWNLOAD_URL} or rewrite that image with 3 channels")
            return np.ascontiguousarray(arr.transpose(2, 1, 0)).astype(np.uint8, copy=False)

    def mask(self, i: int) -> np.ndarray:
        """Mask ``i`` as uint8 (H, W) with values {0, 1}."""
        i = self._index(i)
        with self._reading(f"mask {i}"):
            f = self._open()
            arr = np.asarray(self._mask_dataset(f, f["value/gt"][i, 0], i))
            return (arr.T > 0).astype(np.uint8)


def _hw(shape_wh) -> str:
    """A stored (W, H) shape as ``HxW``."""
    return f"{shape_wh[1]}x{shape_wh[0]}"


class ImageNetSegDataset(torch.utils.data.Dataset):
    """The ImageNet-Segmentation benchmark as a torch Dataset (docs/protocols.md, section 1).

    Items are ``(image, mask, index)``: ``image`` float32 (3, H, W) resized bilinearly to
    ``img_size`` (no crop, aspect not kept), scaled to [0,1] and normalised with ``mean``/``std``;
    ``mask`` int64 (H, W) in {0,1}, nearest-neighbour resized; ``index`` the image's index in the file.
    ``img_size`` is an int (square) or ``(height, width)``, taken from the model.
    ``limit`` keeps the first ``limit`` images.

    ``transform`` (``--preprocess model``): a :class:`palrp.loaders.vision_model.EvalTransform`
    (the model's timm eval transform) used instead of the protocol's resize; the image goes
    through it, then mean/std, and the mask through the same resize and centre crop with
    nearest-neighbour interpolation, so mask and image stay aligned (pixels cropped away are
    not scored). Its output size must be ``img_size``.
    """

    def __init__(self, path: str | os.PathLike, img_size: int | Sequence[int],
                 mean: Sequence[float], std: Sequence[float], limit: int | None = None,
                 transform=None):
        self.file = GtSegsFile(path)
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"img_size {img_size!r} is not a positive int or (height, width) pair")
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        if self.mean.numel() != 3 or self.std.numel() != 3:
            raise ValueError("mean and std need 3 values each (one per RGB channel)")
        if limit is not None and limit < 1:
            raise ValueError(f"limit {limit} must be at least 1")
        self.n = len(self.file) if limit is None else min(limit, len(self.file))
        if transform is not None and tuple(transform.size) != size:
            raise ValueError(f"the transform gives {transform.size[0]}x{transform.size[1]} images "
                             f"but img_size is {size[0]}x{size[1]}; pass the model's input size")
        self.transform = transform

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        from PIL import Image

        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        image, mask = self.file.image(i), self.file.mask(i)
        if mask.shape != image.shape[:2]:
            raise GtSegsError(f"{self.file.path}: the mask of image {i} is {mask.shape[0]}x"
                              f"{mask.shape[1]} (H x W) but the image is {image.shape[0]}x"
                              f"{image.shape[1]}; give image {i} a mask of its own size")
        if self.transform is not None:
            x, mask = self.transform(Image.fromarray(image), mask)
            return (x - self.mean) / self.std, mask, i
        h, w = self.size
        img = Image.fromarray(image).resize((w, h), Image.BILINEAR)
        mask = Image.fromarray(mask).resize((w, h), Image.NEAREST)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div_(255.0)
        x = (x - self.mean) / self.std
        return x, torch.from_numpy(np.asarray(mask).astype(np.int64)), i


# --- writer ------------------------------------------------------------------------------
_MAT_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: pa-lrp data/gtsegs.py HDF5 schema 1.00 ."


def write_gtsegs(path: str | os.PathLike, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> Path:
    """Write images (H,W,3) uint8 and masks (H,W) {0,1} in the ``gtsegs_ijcv.mat`` layout (docs/protocols.md, section 1).

    MATLAB v7.3 conventions: a 512-byte MAT header in the HDF5 user block, the referenced arrays
    under ``/#refs#``, ``MATLAB_class`` attributes, images stored (3,W,H) and masks (W,H), each mask
    behind its own (1,1) reference array as in the original file.
    """
    path = Path(path)
    if len(images) != len(masks):
        raise ValueError(f"got {len(images)} images and {len(masks)} masks; give one mask per image")
    if len(images) == 0:
        raise ValueError("no images to write")
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        value = f.create_group("value")
        value.attrs["MATLAB_class"] = np.bytes_("struct")
        img_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        gt_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        for i, (img, mask) in enumerate(zip(images, masks)):
            img, mask = np.asarray(img), np.asarray(mask)
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"image {i} has shape {img.shape} and dtype {img.dtype}; expected uint8 (H, W, 3)")
            if mask.shape != img.shape[:2]:
                raise ValueError(f"mask {i} has shape {mask.shape}, but its image is {img.shape[:2]}")
            d = refs.create_dataset(f"img{i}", data=img.transpose(2, 1, 0))
            d.attrs["MATLAB_class"] = np.bytes_("uint8")
            m = refs.create_dataset(f"gt{i}", data=(mask > 0).astype(np.uint8).T)
            m.attrs["MATLAB_class"] = np.bytes_("uint8")
            holder = refs.create_dataset(f"gtcell{i}", data=np.array([[m.ref]], dtype=h5py.ref_dtype))
            holder.attrs["MATLAB_class"] = np.bytes_("cell")
            img_refs[i, 0], gt_refs[i, 0] = d.ref, holder.ref
        for name, data in (("img", img_refs), ("gt", gt_refs)):
            d = value.create_dataset(name, data=data)
            d.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as fh:
        header = _MAT_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
        fh.write(header.ljust(512, b"\x00"))
    return path
