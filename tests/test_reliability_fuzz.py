"""Fuzzing the readers of the remaining accepted file kinds (issue 22; images and gtsegs files are
fuzzed in tests/test_reliability_images.py, checkpoints and configs in
tests/test_reliability_models.py): truncations, byte flips and random bytes of each shipped or
written file, fed to its reader, give a result or the reader's own one-line error, never another
exception.

- the IMDB CSV, ARC-Easy and Wikipedia JSON-lines readers (palrp/data/text_data.py: DataError);
- a result folder's run record (palrp/runtime/store.py check_run: one ``error:`` line, exit);
- the perturbation map store (palrp/perturbation/map_store.py: an unreadable file is skipped
  with a warning and recomputed, a file of another layout is a MapStoreError).
"""
import random

import numpy as np
import pytest

from palrp import config
from palrp.data.text_data import DataError, load_arc, load_imdb_csv, load_wiki

TEXT = config.DEMO_TEXT_DIR


def _damaged(data: bytes, seed: int):
    """Truncations, byte flips and random blobs of ``data`` (20 of each kind)."""
    rng = random.Random(seed)
    out = [data[:cut] for cut in sorted(rng.sample(range(len(data)), 20))]
    for _ in range(20):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        out.append(bytes(flipped))
    out += [rng.randbytes(rng.randint(0, 2000)) for _ in range(20)]
    return out


def _one_line(message: str) -> bool:
    return "\n" not in message.strip() and len(message) < 600


@pytest.mark.parametrize("name,reader", [
    ("imdb.csv", load_imdb_csv),
    ("arc_easy.jsonl", lambda path: load_arc(path)),
    ("wiki.jsonl", lambda path: load_wiki(path)),
])
def test_text_data_readers_give_data_or_one_line(name, reader, tmp_path):
    source = (TEXT / name).read_bytes()
    # a small prefix of whole lines keeps each read fast
    lines = source.splitlines(keepends=True)
    data = b"".join(lines[:12])
    reader(_write(tmp_path / f"ok_{name}", data))                  # the undamaged file reads
    errors = 0
    for n, blob in enumerate(_damaged(data, seed=len(name))):
        path = _write(tmp_path / f"{n}_{name}", blob)
        try:
            result = reader(path)
        except DataError as exc:
            errors += 1
            assert _one_line(str(exc)), str(exc)
            assert str(path) in str(exc)
        else:
            assert result is not None
    assert errors > 0


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_damaged_run_records_give_one_line_or_resume(tmp_path, capsys):
    from palrp.runtime.store import check_run

    identity = {"model": "m", "data": "d", "protocol_version": 1}
    folder = tmp_path / "run"
    folder.mkdir()
    check_run(folder, identity, lock=False)
    good = (folder / "run.json").read_bytes()
    refused = 0
    for n, blob in enumerate(_damaged(good, seed=3)):
        (folder / "run.json").write_bytes(blob)
        try:
            check_run(folder, identity, lock=False)
        except SystemExit as exc:
            refused += 1
            message = str(exc.code)
            assert message.startswith("error: ") and _one_line(message), message
        (folder / "run.json").write_bytes(good)
    assert refused > 0


def test_damaged_map_store_files_are_skipped_or_refused(tmp_path, capsys):
    from palrp.perturbation.map_store import MapStoreError, MapWriter, stored_indices

    folder = tmp_path / "maps"
    writer = MapWriter(folder, "pa_lrp", 0, (4, 4))
    rows = np.random.default_rng(0).random((3, 4, 4)).astype("float32")
    writer.append(np.array([0, 1, 2]), np.array([1, 2, 3]), np.array([1, 2, 3]),
                  {"predicted": rows, "target": rows})
    writer.close()
    path = next(folder.glob("pa_lrp.rank*.h5"))
    good = path.read_bytes()
    assert stored_indices(folder, "pa_lrp") == {0, 1, 2}
    for blob in _damaged(good, seed=5):
        path.write_bytes(blob)
        try:
            done = stored_indices(folder, "pa_lrp")
        except MapStoreError as exc:
            assert _one_line(str(exc)), str(exc)
        else:
            assert done <= {0, 1, 2}
    path.write_bytes(good)
