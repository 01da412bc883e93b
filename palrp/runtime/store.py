"""Resumable per-sample result stores, the identity of a run, and atomic output files.

A :class:`SampleStore` is a folder of append-only JSON-lines files, one per rank
(``<name>.rank<r>.jsonl``), each line one finished sample keyed by its dataset index. Lines are
flushed and fsynced as they are written, so a crash loses at most the sample in flight; a torn
last line is ignored on reading, and a complete line that is not a record is skipped with a
warning (that sample is recomputed). Reading merges every rank's file (so a run resumed with a
different number of processes still finds all finished samples) and orders records by index,
which makes merged results independent of how the work was sharded.

:func:`check_run` ties a result folder to the run that made it (``run.json``: the model and data
files with their size and modification time, the method, every flag that changes a number and
the protocol's version), so results of one run are never reused for another.

Every file the project writes goes through :func:`atomic_output` (or the ``atomic_write_*``
helpers built on it): written under a temporary name in the same folder, then renamed into
place, so a reader never sees a half-written file. Files are created with the user's umask, like
any other file.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["SampleStore", "atomic_output", "atomic_output_dir", "atomic_write_bytes",
           "atomic_write_json", "atomic_write_text", "fingerprint", "check_run", "RUN_FILE"]

RUN_FILE = "run.json"


# --- atomic files ----------------------------------------------------------------------------

def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_output(path, suffix: str = "") -> Iterator[Path]:
    """A temporary path next to ``path`` to write to; renamed onto ``path`` when the block
    ends without error, removed otherwise. ``suffix`` is kept at the end of the temporary name
    for writers that choose the format by it (``savefig``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    if suffix:
        tmp = tmp.with_name(tmp.name + suffix)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as stream:
                os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output_dir(path) -> Iterator[Path]:
    """A temporary folder next to ``path`` to fill (``save_pretrained``); it replaces ``path``
    when the block ends without error (the old folder survives until the new one is complete).
    Only ``path`` itself is replaced: never call it on a folder the run did not create."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    tmp.mkdir()
    try:
        yield tmp
        old = _temporary_name(path)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half-written)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as stream:
            stream.write(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# --- the identity of a run -------------------------------------------------------------------

def fingerprint(source) -> dict | str:
    """What identifies an input: a file by its resolved path, size and modification time; a
    folder (a ``save_pretrained`` model, an image folder) by the same of every file directly in
    it; anything else (a dataset name) as the string itself."""
    path = Path(source)
    if path.is_file():
        stat = path.stat()
        return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        return {"path": str(path.resolve()),
                "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}
    return str(source)


def _differences(stored: dict, identity: dict) -> list[str]:
    keys = list(identity) + [k for k in stored if k not in identity]
    return [k for k in keys if stored.get(k) != identity.get(k)]


def _short(value) -> str:
    if isinstance(value, dict) and "path" in value:
        value = value["path"] + (" (changed since)" if "size" in value or "files" in value else "")
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def check_run(folder, identity: dict, overwrite: bool = False, owned: Iterable[str] = (),
              ctx=None, defaults: dict | None = None) -> bool:
    """Refuse to mix results of different runs in ``folder``; return whether it resumes one.

    The first run writes ``folder/run.json`` = ``identity``. A later run must have the same
    identity; otherwise it stops with one line naming what differs and the two ways out
    (another ``--output-dir``, or ``--overwrite``). With ``overwrite``, the files of ``folder``
    matching the glob patterns ``owned`` (what the run writes) and ``run.json`` are removed
    first; nothing else is touched. ``ctx`` (a :class:`runtime.DistContext`) makes every rank
    take the same decision, and only rank 0 write.

    ``defaults`` are identity keys added after results were first recorded, with the value
    every earlier run had (e.g. ``{"preprocess": "protocol"}``): a stored record without such a
    key compares as if it held that value, so a folder written before the key existed still
    resumes with the default and is refused with any other value."""
    folder = Path(folder)
    path = folder / RUN_FILE
    main = ctx is None or ctx.is_main
    if overwrite:
        if main:
            for pattern in (RUN_FILE, *owned):
                for file in folder.glob(pattern):
                    if file.is_file():
                        file.unlink()
        if ctx is not None:
            ctx.barrier()
    stored, problem = None, None
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(stored, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            problem = (f"error: {path} is not a readable run record; pass another --output-dir, "
                       f"or --overwrite to replace the results in {folder}")
    elif any(next(folder.glob(pattern), None) is not None for pattern in owned):
        problem = (f"error: {folder} holds results but no {RUN_FILE} saying which run made them; "
                   f"pass another --output-dir, or --overwrite to replace them")
    if problem is None and stored is not None and defaults:
        stored = {**stored, **{k: v for k, v in defaults.items() if k not in stored}}
    if problem is None and stored is not None and stored != identity:
        what = _differences(stored, identity)
        first = what[0]
        problem = (f"error: {folder} holds results of another run ({', '.join(what)} differ: "
                   f"{first} {_short(identity.get(first))} here, {_short(stored.get(first))} "
                   f"there); pass another --output-dir, or --overwrite to replace them")
    ok = problem is None
    if ctx is not None:
        ok = ctx.all_ok(ok)
    if not ok:
        raise SystemExit(problem or f"error: another process found results of another run in "
                                    f"{folder}; pass another --output-dir, or --overwrite")
    if stored is None and main:
        atomic_write_json(path, identity)
    if ctx is not None:
        ctx.barrier()
    return stored is not None


# --- per-sample stores -----------------------------------------------------------------------

class SampleStore:
    """Per-sample records of one named result (e.g. one method) under ``folder``."""

    def __init__(self, folder, name: str, rank: int = 0):
        self.folder = Path(folder)
        self.name = name
        self.rank = rank
        self.folder.mkdir(parents=True, exist_ok=True)
        self._stream = None
        self._warned: set[Path] = set()

    @property
    def path(self) -> Path:
        return self.folder / f"{self.name}.rank{self.rank}.jsonl"

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.name}.rank*.jsonl"))

    def records(self) -> list[dict]:
        """Every finished record of every rank, one per index, ordered by index. A complete
        line that is not a record with an integer ``index`` is skipped with a warning on
        stderr, so its sample is recomputed."""
        by_index: dict[int, dict] = {}
        for file in self._files():
            with open(file, encoding="utf-8", errors="replace") as stream:
                for lineno, line in enumerate(stream, 1):
                    if not line.endswith("\n"):
                        break  # torn write at a crash: the sample is recomputed
                    try:
                        record = json.loads(line)
                        index = int(record["index"])
                    except (ValueError, TypeError, KeyError):
                        if file not in self._warned:
                            self._warned.add(file)
                            print(f"warning: {file} line {lineno} is not a result record; "
                                  f"skipped (that sample is computed again)", file=sys.stderr)
                        continue
                    by_index[index] = record
        return [by_index[i] for i in sorted(by_index)]

    def done(self) -> set[int]:
        return {int(r["index"]) for r in self.records()}

    def append(self, records: Iterable[dict]) -> None:
        if self._stream is None:
            self._truncate_torn_tail()
            self._stream = open(self.path, "a", encoding="utf-8")
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
