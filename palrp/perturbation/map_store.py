"""Stage 1 of the perturbation benchmark (docs/protocols.md, section 2): explanation maps stored once, in HDF5.

One file per method and per rank, ``<folder>/<method>.rank<r>.h5``, so no two processes ever write
the same file. Each file holds, row by row:

- ``index`` (N,) int64: the image's index in the full ``val/`` split (the key for resuming and merging);
- ``label`` (N,) int64 and ``pred`` (N,) int64: the true class and the clean prediction;
- ``predicted`` (N, H, W) and ``target`` (N, H, W) float32: the raw maps (not normalised) of the
  predicted class and of the label. float32, not float16, so the removal order is the one the
  method computed (float16 would turn near-ties into ties); at 224 x 224 a map takes 196 KiB, so
  one method at ``--fract 0.1`` of ImageNet val (5,000 images, two maps each) takes about 2 GB.

Datasets are chunked per row and resizable. :meth:`MapWriter.append` extends the maps first and
``index`` last, then flushes: rows beyond ``len(index)`` are a torn append and are cut on reopening,
so a crash loses at most the batch in flight. A file HDF5 cannot open at all (killed mid-flush) is
renamed ``*.unreadable-<time>`` inside the same folder and its rows are recomputed.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

__all__ = ["MODES_STORED", "MapStoreError", "map_file", "stored_indices", "MapWriter", "MapReader"]

#: The two maps stored per image: for the predicted class and for the label.
MODES_STORED = ("predicted", "target")


class MapStoreError(ValueError):
    """A file where a map store should be that is not one; the message names it and the fix."""


def _check_layout(handle, path: Path) -> bool:
    """Whether ``handle`` holds rows (False for an empty file); :class:`MapStoreError` when its
    datasets are not those :class:`MapWriter` writes."""
    if not len(handle.keys()):
        return False
    names = ("index", "label", "pred", *MODES_STORED)
    problem = next((f"no dataset '{n}'" for n in names if n not in handle), None)
    if problem is None:
        for name in names:
            ndim = 1 if name in ("index", "label", "pred") else 3
            if not isinstance(handle[name], h5py.Dataset) or handle[name].ndim != ndim:
                problem = f"'{name}' is not a {ndim}-D dataset"
                break
    if problem:
        raise MapStoreError(f"{path} is not a map store of analyze_pert_results.py ({problem}); "
                            f"pass another --output-dir, or --overwrite to recompute the maps")
    return True


def map_file(folder, method: str, rank: int) -> Path:
    return Path(folder) / f"{method}.rank{rank}.h5"


def _rank_files(folder, method: str) -> list[Path]:
    return sorted(Path(folder).glob(f"{method}.rank*.h5"))


def _open_readable(path: Path):
    """The file opened read-only, or None (with a warning) when HDF5 cannot read it."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        print(f"warning: skipping unreadable {path} ({exc}); its rows are recomputed",
              file=sys.stderr)
        return None


def stored_indices(folder, method: str) -> set[int]:
    """Dataset indices whose maps every rank's file of ``method`` holds (complete rows only)."""
    done: set[int] = set()
    for path in _rank_files(folder, method):
        handle = _open_readable(path)
        if handle is None:
            continue
        with handle:
            if _check_layout(handle, path):
                done.update(int(i) for i in handle["index"][:])
    return done


class MapWriter:
    """Appends one method's maps to this rank's file (created or resumed)."""

    def __init__(self, folder, method: str, rank: int, size: Sequence[int]):
        self.path = map_file(folder, method, rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = tuple(int(s) for s in size)
        self.file = self._open()
        try:
            has_rows = _check_layout(self.file, self.path)
        except MapStoreError:
            self.file.close()
            raise
        if not has_rows:
            self._create()
        shape = tuple(self.file["predicted"].shape[1:])
        if shape != self.size:
            self.file.close()
            raise MapStoreError(f"{self.path} holds {shape[0]}x{shape[1]} maps but the model takes "
                             f"{self.size[0]}x{self.size[1]} images; pass another --output-dir")
        n = len(self.file["index"])
        for name in ("label", "pred", *MODES_STORED):   # cut a torn append
            if len(self.file[name]) != n:
                self.file[name].resize(n, axis=0)

    def _open(self):
        if self.path.exists():
            try:
                return h5py.File(self.path, "a")
            except OSError as exc:
                aside = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
                self.path.rename(aside)
                print(f"warning: {self.path} cannot be opened ({exc}); moved to {aside.name}, "
                      f"its rows are recomputed", file=sys.stderr)
        return h5py.File(self.path, "w")

    def _create(self) -> None:
        for name in ("index", "label", "pred"):
            self.file.create_dataset(name, shape=(0,), maxshape=(None,), dtype="int64",
                                     chunks=(1024,))
        for name in MODES_STORED:
            self.file.create_dataset(name, shape=(0, *self.size), maxshape=(None, *self.size),
                                     dtype="float32", chunks=(1, *self.size))
        self.file.flush()

    def __len__(self) -> int:
        return len(self.file["index"])

    def append(self, index, label, pred, maps: dict[str, np.ndarray]) -> None:
        """Add rows: ``index``, ``label``, ``pred`` (B,) and ``maps[mode]`` (B, H, W) per stored mode."""
        index = np.asarray(index, dtype=np.int64)
        columns = {"label": np.asarray(label, dtype=np.int64), "pred": np.asarray(pred, dtype=np.int64),
                   **{mode: np.asarray(maps[mode], dtype=np.float32) for mode in MODES_STORED}}
        start, count = len(self), len(index)
        for name, values in columns.items():
            if len(values) != count:
                raise ValueError(f"{name} has {len(values)} rows for {count} indices")
            dataset = self.file[name]
            dataset.resize(start + count, axis=0)
            dataset[start:] = values
        dataset = self.file["index"]       # last: the rows count only once this is written
        dataset.resize(start + count, axis=0)
        dataset[start:] = index
        self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


class MapReader:
    """Reads stored rows of one method by dataset index, across every rank's file."""

    def __init__(self, folder, method: str):
        self.files = []
        self.rows: dict[int, tuple[int, int]] = {}
        for path in _rank_files(folder, method):
            handle = _open_readable(path)
            if handle is None:
                continue
            try:
                has_rows = _check_layout(handle, path)
            except MapStoreError:
                handle.close()
                self.close()
                raise
            self.files.append(handle)
            for row, index in enumerate(handle["index"][:] if has_rows else []):
                self.rows.setdefault(int(index), (len(self.files) - 1, row))

    def __contains__(self, index: int) -> bool:
        return int(index) in self.rows

    def read(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """``label``, ``pred`` (B,) and the ``predicted``/``target`` maps (B, H, W) of ``indices``,
        in that order. KeyError for an index that is not stored."""
        out: dict[str, list] = {name: [] for name in ("label", "pred", *MODES_STORED)}
        for index in indices:
            file_id, row = self.rows[int(index)]
            handle = self.files[file_id]
            for name in out:
                out[name].append(handle[name][row])
        return {name: np.stack(values) for name, values in out.items()}

    def close(self) -> None:
        for handle in self.files:
            handle.close()
        self.files = []
