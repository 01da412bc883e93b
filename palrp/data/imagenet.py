"""ImageNet validation in the folder-per-class layout, for the perturbation tests (docs/protocols.md, section 2).

``root/val/<class folder>/<image>``. Labels follow torchvision's ``ImageFolder``: class folders
sorted by name get labels 0, 1, ...; images are listed per class in sorted order (the same functions
``ImageFolder`` uses). Images are returned in [0, 1], resized to the model's input size (bilinear,
no crop, the protocol's; or, given a ``transform``, the model's timm eval transform); normalisation
happens just before the model. :func:`subset_indices` draws the seeded
random fraction of ``--fract``. Files are opened by :func:`palrp.data.images.open_image` (as a
viewer shows them: EXIF orientation, 16-bit, palette, transparency on white, CMYK, grayscale).
:meth:`ImageNetFolder.unreadable` decodes the selected files up front and names those that cannot
be read, so a run can leave them out before its first map; an image that fails later (changed
during the run) stops it with :class:`CorruptImageError` naming the file (results so far are kept).
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from palrp.data.images import ImageReadError, open_image


class CorruptImageError(ValueError):
    """An image of the folder cannot be decoded; the message names the file and the fix,
    ``path`` is the file and ``reason`` the problem alone."""

    def __init__(self, path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"cannot decode image {path} ({reason}); replace it with a readable "
                         f"copy and rerun (finished images are kept)")


def _corrupt(path, exc: Exception) -> CorruptImageError:
    return CorruptImageError(path, exc.reason if isinstance(exc, ImageReadError) else str(exc))


def _layout_error(root: Path, what: str) -> str:
    return (f"{what}: expected ImageNet validation as {root}/val/<class folder>/<image> "
            f"(folder-per-class layout); pass --data-path, or run with --demo for the embedded default")


class ImageNetFolder(torch.utils.data.Dataset):
    """Folder-per-class ImageNet split (docs/protocols.md, section 2); items are ``(image, label, index)``.

    ``image`` float32 (3,H,W) in [0,1] at ``img_size`` (int or (height, width)); ``label`` the class
    index in ``ImageFolder`` order; ``index`` the image's position in the full split (stable across
    runs, so results can be stored and resumed by it). ``indices`` restricts the items to a subset.
    ``transform`` (``--preprocess model``): a :class:`palrp.loaders.vision_model.EvalTransform`
    (resize keeping the aspect ratio, centre crop) instead of the protocol's bilinear resize; its
    output size must be ``img_size``.
    """

    def __init__(self, root: str | os.PathLike, img_size: int | Sequence[int], split: str = "val",
                 indices: Sequence[int] | None = None, transform=None):
        self.root = Path(root)
        folder = self.root / split
        if not self.root.is_dir():
            raise FileNotFoundError(_layout_error(self.root, f"{self.root} does not exist"))
        if not folder.is_dir():
            raise FileNotFoundError(_layout_error(self.root, f"{self.root} has no {split}/ folder"))
        try:
            self.classes, self.class_to_idx = find_classes(str(folder))
        except FileNotFoundError:
            raise FileNotFoundError(_layout_error(self.root, f"{folder} holds no class folders")) from None
        self.samples = make_dataset(str(folder), self.class_to_idx, extensions=IMG_EXTENSIONS,
                                    allow_empty=True)
        if not self.samples:
            raise FileNotFoundError(_layout_error(self.root, f"the class folders of {folder} hold no images"))
        self.targets = [label for _, label in self.samples]
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"img_size {img_size!r} is not a positive int or (height, width) pair")
        self.size = size
        if transform is not None and tuple(transform.size) != size:
            raise ValueError(f"the transform gives {transform.size[0]}x{transform.size[1]} images "
                             f"but img_size is {size[0]}x{size[1]}; pass the model's input size")
        self.transform = transform
        if indices is None:
            self.indices = list(range(len(self.samples)))
        else:
            self.indices = [int(i) for i in indices]
            bad = [i for i in self.indices if not 0 <= i < len(self.samples)]
            if bad:
                raise IndexError(f"subset index {bad[0]} out of range for {len(self.samples)} images")

    def listing_sha1(self) -> str:
        """SHA-1 of the image paths relative to the split folder, in index order: what fixes
        each index and label (part of a run's identity)."""
        folder = self.root / "val"
        digest = hashlib.sha1()
        for path, label in self.samples:
            digest.update(f"{os.path.relpath(path, folder)}\t{label}\n".encode())
        return digest.hexdigest()

    def _read(self, i: int):
        """Image ``i`` of the split as RGB (:func:`palrp.data.images.open_image`); raises
        :class:`CorruptImageError` naming the file."""
        path = self.samples[int(i)][0]
        try:
            return open_image(path)
        except (ImageReadError, FileNotFoundError) as exc:
            raise _corrupt(path, exc) from None

    def unreadable(self, indices: Sequence[int] | None = None,
                   threads: int | None = None) -> dict[int, CorruptImageError]:
        """Decode every image of ``indices`` (default: this dataset's) exactly as the items are
        read, and return ``{index: error}`` for those that cannot be read (truncated, not an
        image, empty, over the decompression-bomb limit), in index order; each ``error`` is the
        :class:`CorruptImageError` the item would raise (``.path``, ``.reason``). Files are decoded in ``threads`` threads (default: up to 8)."""
        wanted = [int(i) for i in (self.indices if indices is None else indices)]

        def problem(i: int) -> CorruptImageError | None:
            try:
                self._read(i)
            except CorruptImageError as exc:
                return exc
            return None

        workers = threads or min(8, os.cpu_count() or 1)
        if workers > 1 and len(wanted) > 1:
            with ThreadPoolExecutor(workers) as pool:
                found = list(pool.map(problem, wanted))
        else:
            found = [problem(i) for i in wanted]
        return {i: reason for i, reason in sorted(zip(wanted, found)) if reason is not None}

    def check_readable(self, indices: Sequence[int] | None = None) -> None:
        """Decode every image of ``indices`` (default: all of this dataset) before any work:
        the first that cannot be read stops the run with :class:`CorruptImageError` naming it."""
        bad = self.unreadable(indices)
        if bad:
            raise next(iter(bad.values()))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        from PIL import Image

        i = self.indices[k]
        label = self.samples[i][1]
        image = self._read(i)
        if self.transform is not None:
            return self.transform(image), label, i
        image = image.resize((self.size[1], self.size[0]), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div_(255.0)
        return x, label, i


def subset_indices(n_total: int, fract: float, seed: int = 42) -> list[int]:
    """The seeded random ``fract`` of ``n_total`` items (docs/protocols.md, section 2), sorted; ``int(n_total*fract)`` of them.

    Raises ``ValueError`` for a fraction outside (0, 1] or one that selects no item.
    """
    if not 0 < fract <= 1:
        raise ValueError(f"--fract {fract} must be in (0, 1]")
    n = int(n_total * fract)
    if n == 0:
        raise ValueError(f"--fract {fract} selects no image of {n_total}; use at least {1 / n_total:.2g}")
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=g)[:n].tolist())
