"""Resumable per-sample result stores and atomic output files.

A :class:`SampleStore` is a folder of append-only JSON-lines files, one per rank
(``<name>.rank<r>.jsonl``), each line one finished sample keyed by its dataset index. Lines are
flushed and fsynced as they are written, so a crash loses at most the sample in flight; a torn
last line is ignored on reading. Reading merges every rank's file (so a run resumed with a
different number of processes still finds all finished samples) and orders records by index,
which makes merged results independent of how the work was sharded.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

__all__ = ["SampleStore", "atomic_write_json", "atomic_write_text"]


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class SampleStore:
    """Per-sample records of one named result (e.g. one method) under ``folder``."""

    def __init__(self, folder, name: str, rank: int = 0):
        self.folder = Path(folder)
        self.name = name
        self.rank = rank
        self.folder.mkdir(parents=True, exist_ok=True)
        self._stream = None

    @property
    def path(self) -> Path:
        return self.folder / f"{self.name}.rank{self.rank}.jsonl"

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.name}.rank*.jsonl"))

    def records(self) -> list[dict]:
        """Every finished record of every rank, one per index, ordered by index."""
        by_index: dict[int, dict] = {}
        for file in self._files():
            with open(file) as stream:
                for line in stream:
                    if not line.endswith("\n"):
                        break  # torn write at a crash: the sample is recomputed
                    record = json.loads(line)
                    by_index[int(record["index"])] = record
        return [by_index[i] for i in sorted(by_index)]

    def done(self) -> set[int]:
        return {int(r["index"]) for r in self.records()}

    def append(self, records: Iterable[dict]) -> None:
        if self._stream is None:
            self._truncate_torn_tail()
            self._stream = open(self.path, "a")
        for record in records:
            self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()
        os.fsync(self._stream.fileno())

    def _truncate_torn_tail(self) -> None:
        """Drop a half-written last line left by a crash, so appends start on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as stream:
                stream.truncate(keep)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
