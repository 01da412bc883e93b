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

import atexit
import json
import math
import os
import shutil
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["SampleStore", "atomic_output", "atomic_output_dir", "atomic_write_bytes",
           "atomic_write_json", "atomic_write_text", "fingerprint", "check_run", "RUN_FILE",
           "LOCK_FILE", "acquire_lock", "release_lock", "release_locks", "run_lock",
           "ListOf", "MapOf", "record_problem"]

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
              ctx=None, defaults: dict | None = None, lock: bool = True) -> bool:
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
    resumes with the default and is refused with any other value.

    With ``lock`` (the default) the run first takes ``folder``'s lock (:func:`acquire_lock`,
    rank 0 only): a second run on the same folder stops with one line before anything is
    touched. The lock is released by :func:`release_locks` at the end of the run or at exit."""
    folder = Path(folder)
    path = folder / RUN_FILE
    main = ctx is None or ctx.is_main
    if lock:
        refused = None
        if main:
            try:
                acquire_lock(folder)
            except SystemExit as exc:
                refused = str(exc)
        if not (refused is None if ctx is None else ctx.all_ok(refused is None)):
            raise SystemExit(refused or f"error: {folder} is in use by another run; wait for it "
                                        f"to finish or pass another --output-dir")
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


# --- one run at a time per folder ------------------------------------------------------------

LOCK_FILE = "run.lock"
_held: dict[Path, str] = {}          # lock file -> the token this process wrote into it
_atexit_registered = False


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22), which
    tells a live owner from an unrelated process that got its pid later; None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                             # alive, another user's
    except (OverflowError, ValueError):
        return False
    now = _process_start(pid)
    return started is None or now is None or now == started


def _lock_owner(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _in_use(folder: Path, path: Path, owner: dict | None) -> str:
    if owner is None:
        return (f"error: {folder} is locked by {path}, which does not say which run holds it; "
                f"if no run is writing to {folder}, delete {path} and start again")
    return (f"error: {folder} is in use by another run (pid {owner['pid']} on host "
            f"{owner.get('host', '?')}, started {owner.get('started', '?')}); wait for it to "
            f"finish or pass another --output-dir (if that process is gone, delete {path})")


def acquire_lock(folder) -> Path:
    """Make this process the one run writing to ``folder``: create ``folder/run.lock`` holding
    the owner's pid, host and start time, atomically (a complete file linked into place; it
    fails if one exists). A lock of a live process, or of any process on another host, stops
    this one with one line naming the folder, the owner and what to do; a lock of a process of
    this host that is no longer running is taken over with a warning line. The lock is released
    by :func:`release_locks` (called when a run ends, and at exit). Under a launcher only rank 0
    (``RANK``) locks: the ranks of one run share its folder. Taking a lock this process holds
    again is a no-op."""
    global _atexit_registered
    folder = Path(folder)
    path = folder / LOCK_FILE
    if int(os.environ.get("RANK", "0") or 0) != 0 or path in _held:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    owner = {"pid": os.getpid(), "host": socket.gethostname(),
             "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
             "process_start": _process_start(os.getpid()), "token": token,
             "command": " ".join(sys.argv)[:300]}
    for _ in range(3):
        tmp = _temporary_name(path)
        tmp.write_text(json.dumps(owner) + "\n", encoding="utf-8")
        try:
            os.link(tmp, path)
            taken = True
        except FileExistsError:
            taken = False
        except OSError:                  # a file system without hard links
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                taken = False
            else:
                with os.fdopen(fd, "w", encoding="utf-8") as stream:
                    stream.write(json.dumps(owner) + "\n")
                taken = True
        finally:
            tmp.unlink(missing_ok=True)
        if taken:
            _held[path] = token
            if not _atexit_registered:
                atexit.register(release_locks)
                _atexit_registered = True
            return path
        other = _lock_owner(path)
        if other is None:
            if not path.exists():
                continue                 # released meanwhile: try again
            raise SystemExit(_in_use(folder, path, other))
        if other.get("host") != owner["host"] or \
                _alive(other["pid"], other.get("process_start")):
            raise SystemExit(_in_use(folder, path, other))
        stale = _temporary_name(path)    # take over: move it aside, check it is the one read
        try:
            os.replace(path, stale)
        except FileNotFoundError:
            continue
        moved = _lock_owner(stale)
        if moved is not None and moved.get("token") != other.get("token"):
            try:                         # another process took it over first: give it back
                os.link(stale, path)
            except OSError:
                pass
            stale.unlink(missing_ok=True)
            continue
        stale.unlink(missing_ok=True)
        print(f"warning: took over the lock of {folder} left by process {other['pid']} on "
              f"{other['host']} (started {other.get('started', '?')}), which is no longer "
              f"running", file=sys.stderr)
    raise SystemExit(_in_use(folder, path, _lock_owner(path)))


def release_lock(folder) -> None:
    """Remove ``folder/run.lock`` if this process holds it (and it still holds our token)."""
    path = Path(folder) / LOCK_FILE
    token = _held.pop(path, None)
    if token is not None and (_lock_owner(path) or {}).get("token") == token:
        path.unlink(missing_ok=True)


def release_locks() -> None:
    """Release every lock this process holds (the end of a run, however it ends)."""
    for path in list(_held):
        release_lock(path.parent)


@contextmanager
def run_lock(folder) -> Iterator[Path]:
    """:func:`acquire_lock` for the block; released when it ends, however it ends."""
    path = Path(folder) / LOCK_FILE
    held = path in _held
    acquire_lock(folder)
    try:
        yield path
    finally:
        if not held:
            release_lock(folder)


# --- what a stored record must hold ----------------------------------------------------------

class ListOf:
    """A record field that is a list of ``item`` (a spec), of exactly ``length`` items if given."""

    def __init__(self, item, length: int | None = None):
        self.item, self.length = item, length


class MapOf:
    """A record field that is a non-empty object whose every value matches ``value`` (a spec)."""

    def __init__(self, value):
        self.value = value


def record_problem(value, spec, where: str = "record") -> str | None:
    """What makes ``value`` (parsed JSON) not match ``spec``, or None when it matches. A spec is
    ``int`` (an integer, not a bool), ``float`` (a finite number: NaN and infinities are
    damage), ``bool``, ``str``, ``None``, a tuple of specs (any of them), :class:`ListOf`,
    :class:`MapOf`, or a dict ``{key: spec}`` (an object with at least those keys)."""
    if isinstance(spec, tuple):
        problems = [record_problem(value, s, where) for s in spec]
        return None if None in problems else problems[0]
    if spec is None:
        return None if value is None else f"{where} is not null"
    if spec is bool:
        return None if isinstance(value, bool) else f"{where} is not true/false"
    if spec is int:
        return None if isinstance(value, int) and not isinstance(value, bool) \
            else f"{where} is not an integer"
    if spec is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{where} is not a number"
        return None if math.isfinite(value) else f"{where} is {value}"
    if spec is str:
        return None if isinstance(value, str) else f"{where} is not a string"
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            return f"{where} is not a list"
        if spec.length is not None and len(value) != spec.length:
            return f"{where} has {len(value)} values, not {spec.length}"
        for i, item in enumerate(value):
            problem = record_problem(item, spec.item, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(spec, MapOf):
        if not isinstance(value, dict) or not value:
            return f"{where} is not a non-empty object"
        spec = {key: spec.value for key in value}
    elif isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"{where} is not an object"
    else:
        raise TypeError(f"unknown record spec {spec!r}")
    for key, sub in spec.items():
        if key not in value:
            return f"{where} has no {key!r}"
        problem = record_problem(value[key], sub, f"{key}" if where == "record" else f"{where}.{key}")
        if problem:
            return problem
    return None


# --- per-sample stores -----------------------------------------------------------------------

class SampleStore:
    """Per-sample records of one named result (e.g. one method) under ``folder``."""

    def __init__(self, folder, name: str, rank: int = 0, schema: dict | None = None):
        self.folder = Path(folder)
        self.name = name
        self.rank = rank
        self.schema = schema
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
        line that is not a record with an integer ``index``, or (with a ``schema``, see
        :func:`record_problem`) lacks a field, holds one of the wrong type or a NaN, is
        skipped with one warning line per file on stderr naming the file, the line and the
        damage, so its sample is recomputed (a later valid record of the index wins)."""
        by_index: dict[int, dict] = {}
        for file in self._files():
            with open(file, encoding="utf-8", errors="replace") as stream:
                for lineno, line in enumerate(stream, 1):
                    if not line.endswith("\n"):
                        break  # torn write at a crash: the sample is recomputed
                    problem = None
                    try:
                        record = json.loads(line)
                        index = record["index"]
                        if isinstance(index, bool) or not isinstance(index, int):
                            raise TypeError("the index is not an integer")
                    except (ValueError, TypeError, KeyError, IndexError):
                        problem = "is not a result record"
                    else:
                        if self.schema is not None:
                            damage = record_problem(record, self.schema)
                            problem = damage and f"is a damaged record ({damage})"
                    if problem:
                        if file not in self._warned:
                            self._warned.add(file)
                            print(f"warning: {file} line {lineno} {problem}; skipped (that "
                                  f"sample is computed again)", file=sys.stderr)
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
