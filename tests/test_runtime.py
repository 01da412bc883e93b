"""Sharding and the resumable sample store."""
import json

import pytest

from palrp.runtime import DistContext, SampleStore, atomic_write_json


def test_shards_are_disjoint_and_cover_everything():
    indices = list(range(11))
    shards = [DistContext(rank=r, world_size=3).shard(indices) for r in range(3)]
    assert sorted(sum(shards, [])) == indices
    assert all(not set(a) & set(b) for a in shards for b in shards if a is not b)


def test_store_merges_ranks_in_index_order_and_ignores_torn_lines(tmp_path):
    with SampleStore(tmp_path, "m", rank=1) as store:
        store.append([{"index": 3, "v": 3.0}, {"index": 1, "v": 1.0}])
    with SampleStore(tmp_path, "m", rank=0) as store:
        store.append([{"index": 2, "v": 2.0}])
    with open(tmp_path / "m.rank0.jsonl", "a") as stream:
        stream.write('{"index": 7, "v"')            # a crash mid-write
    store = SampleStore(tmp_path, "m", rank=0)
    assert [r["index"] for r in store.records()] == [1, 2, 3]
    assert store.done() == {1, 2, 3}
    store.append([{"index": 7, "v": 7.0}])          # resumes on a clean line
    store.close()
    assert [r["v"] for r in SampleStore(tmp_path, "m").records()] == [1.0, 2.0, 3.0, 7.0]
    assert SampleStore(tmp_path, "other").records() == []


def test_atomic_json(tmp_path):
    path = atomic_write_json(tmp_path / "a" / "r.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_missing_official_deit_checkpoint_says_where_it_comes_from():
    from palrp import config
    from palrp.runtime.vision_run import load_model_or_exit
    missing = config.DEIT_CHECKPOINTS["small"]
    if missing.exists():
        pytest.skip(f"{missing} exists here")
    with pytest.raises(SystemExit) as exc:
        load_model_or_exit(missing, {"model_size": "small"}, "cpu")
    message = str(exc.value)
    assert message.startswith("error: checkpoint not found") and "\n" not in message
    assert f"https://dl.fbaipublicfiles.com/deit/{missing.name}" in message
    assert f"put the file at {missing}" in message


def test_atomic_output_leaves_nothing_behind_on_failure_and_dirs_swap_whole(tmp_path):
    import pytest

    from palrp.runtime import atomic_output, atomic_output_dir
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    folder = tmp_path / "best"
    folder.mkdir()
    (folder / "stale.txt").write_text("from the last save")
    with atomic_output_dir(folder) as tmp:
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    with pytest.raises(RuntimeError):
        with atomic_output_dir(folder) as tmp:
            (tmp / "partial").write_text("x")
            raise RuntimeError
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "f.bin"]


def test_one_table_writer_for_markdown_and_latex():
    import pytest

    from palrp.runtime.tables import latex_table, markdown_table
    md = markdown_table(["run", "N"], [["a|b", "3"]], note="* a note")
    assert md.splitlines() == ["| run | N |", "|---|---|", r"| a\|b | 3 |", "", "* a note"]
    tex = latex_table(["Run", "AU_AC %"], [["pa_lrp", "0.5"]], text_columns=1)
    assert tex.splitlines()[:3] == [r"\begin{tabular}{lr}", r"\toprule", r"Run & AU\_AC \% \\"]
    assert r"pa\_lrp & 0.5 \\" in tex
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])
