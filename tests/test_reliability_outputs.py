"""Output folders, user-given names and flags, damaged stored results (issue 22): one run at a
time per folder (a lock, stale locks taken over), names that cannot leave the output folder,
flags refused before the compute, damaged records and metrics recomputed or left out -- each
with its exit status, its one line, and nothing written or mixed."""
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_tiny_text_models
from NLP import eval_pert_imdb, main_imdb
from palrp.runtime import check_run
from palrp.runtime.cli import perturbation_main
from palrp.runtime.store import (LOCK_FILE, ListOf, MapOf, SampleStore, acquire_lock,
                                 record_problem, release_locks, run_lock)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_text_models(tmp_path_factory.mktemp("reliability_outputs"))


@pytest.fixture(autouse=True)
def _no_locks_left():
    yield
    release_locks()


def _pert_argv(tiny, out, *extra):
    return ["--mode", "pert", "--device", "cpu", "--output-dir", str(out), "--max-samples", "3",
            "--max-length", "64", "--model-path", str(tiny / "clf"), "--data-path",
            str(tiny / "imdb.csv"), *map(str, extra)]


def _run_folder(out, run="attnlrp"):
    return out / eval_pert_imdb.TASK.protocol.name / "clf" / run


def _one_line(exc_info) -> str:
    message = exc_info.value.code
    assert isinstance(message, str) and message.startswith("error: ")  # exit status 1
    assert "\n" not in message and "Traceback" not in message
    return message


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- 1. one run at a time per output folder ---------------------------------------------------

@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of a folder until the test ends."""
    started = []

    def start(folder: Path):
        code = ("import sys, time; from palrp.runtime.store import acquire_lock; "
                "acquire_lock(sys.argv[1]); print('locked', flush=True); time.sleep(120)")
        child = subprocess.Popen([sys.executable, "-c", code, str(folder)],
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert child.stdout.readline().strip() == "locked"
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()
        child.wait()


def test_a_second_run_on_a_locked_folder_stops_with_the_owner(tiny, tmp_path, holder):
    out = tmp_path / "runs"
    folder = _run_folder(out)
    child = holder(folder)
    before = _files(out)
    with pytest.raises(SystemExit) as exc:
        perturbation_main(eval_pert_imdb.TASK, _pert_argv(tiny, out))
    message = _one_line(exc)
    assert message.startswith(f"error: {folder} is in use by another run (pid {child.pid} on "
                              f"host {socket.gethostname()}, started ")
    assert message.endswith(f"wait for it to finish or pass another --output-dir (if that "
                            f"process is gone, delete {folder / LOCK_FILE})")
    assert _files(out) == before                      # nothing written, the lock still theirs
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == child.pid


def test_two_processes_on_one_folder_exit_non_zero_with_one_line(tiny, tmp_path, holder):
    out = tmp_path / "runs"
    child = holder(_run_folder(out))
    run = subprocess.run([sys.executable, "NLP/eval_pert_imdb.py", *_pert_argv(tiny, out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert f"is in use by another run (pid {child.pid} on host" in lines[0]
    assert not (_run_folder(out) / "run.json").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_released(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    folder = _run_folder(out)
    folder.mkdir(parents=True)
    pid = _dead_pid()
    (folder / LOCK_FILE).write_text(json.dumps(
        {"pid": pid, "host": socket.gethostname(), "started": "2026-01-01 00:00:00 UTC",
         "token": "old"}))
    metrics = perturbation_main(eval_pert_imdb.TASK, _pert_argv(tiny, out))
    err = capsys.readouterr().err
    assert (f"warning: took over the lock of {folder} left by process {pid} on "
            f"{socket.gethostname()} (started 2026-01-01 00:00:00 UTC), which is no longer "
            f"running") in err
    assert metrics["num_samples"] >= 3
    assert not (folder / LOCK_FILE).exists()          # released at the end of the run


def test_a_lock_of_another_host_is_refused(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_FILE).write_text(json.dumps(
        {"pid": _dead_pid(), "host": "elsewhere.example", "started": "x", "token": "t"}))
    with pytest.raises(SystemExit) as exc:
        check_run(folder, {"a": 1})
    assert "in use by another run" in _one_line(exc) and "host elsewhere.example" in exc.value.code
    assert not (folder / "run.json").exists()


def test_an_unreadable_lock_is_refused_with_how_to_clear_it(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_FILE).write_text("{torn")
    with pytest.raises(SystemExit) as exc:
        check_run(folder, {"a": 1})
    assert _one_line(exc) == (f"error: {folder} is locked by {folder / LOCK_FILE}, which does "
                              f"not say which run holds it; if no run is writing to {folder}, "
                              f"delete {folder / LOCK_FILE} and start again")


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with run_lock(folder):
            assert (folder / LOCK_FILE).is_file()
            raise RuntimeError("crash")
    assert not (folder / LOCK_FILE).exists()
    check_run(folder, {"a": 1})                       # the next run takes it
    assert (folder / LOCK_FILE).is_file()
    release_locks()
    assert not (folder / LOCK_FILE).exists()


def test_a_process_killed_holding_the_lock_leaves_a_lock_the_next_run_takes_over(tmp_path,
                                                                                   capsys):
    folder = tmp_path / "run"
    code = ("import os, sys; from palrp.runtime.store import acquire_lock; "
            "acquire_lock(sys.argv[1]); os._exit(0)")      # no cleanup, as kill -9
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, cwd=ROOT)
    assert (folder / LOCK_FILE).is_file()
    assert check_run(folder, {"a": 1}) is False
    assert "which is no longer running" in capsys.readouterr().err
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_ranks_other_than_0_share_the_folder_of_their_run(tmp_path, holder, monkeypatch):
    folder = tmp_path / "run"
    holder(folder)                                    # rank 0 of the run holds it
    monkeypatch.setenv("RANK", "1")
    acquire_lock(folder)                              # rank 1 does not lock: no error
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] != os.getpid()


def test_the_fine_tune_refuses_a_locked_output_folder(tiny, tmp_path, holder):
    out = tmp_path / "imdb"
    child = holder(out)
    before = _files(out)
    with pytest.raises(SystemExit) as exc:
        main_imdb.main(["--model-path", str(tiny / "lm"), "--data-path", str(tiny / "imdb.csv"),
                        "--output-dir", str(out), "--max-train", "8", "--num-epochs", "1"])
    assert f"is in use by another run (pid {child.pid}" in _one_line(exc)
    assert _files(out) == before


# --- 2. names and flags given by the user -----------------------------------------------------

@pytest.mark.parametrize("stem", ["../..", "../escaped", "/tmp/palrp_abs_stem", "a/b", "a\\b",
                                  "..", ""])
def test_a_stem_that_leaves_the_output_folder_is_refused(tiny, tmp_path, stem):
    import explain_text
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        explain_text.main([str(tiny / "lm"), "--text", "a good film", "--device", "cpu",
                           "--output-dir", str(out), "--stem", stem])
    assert _one_line(exc) == (f"error: argument --stem: {stem!r} is not a plain file name (no "
                              f"folders, no '/' or '\\', not '..'); pass a name such as "
                              f"'review': the files go into --output-dir; see "
                              f"{exc.value.code.split('; see ')[1]}")
    assert list(tmp_path.iterdir()) == []             # nothing written, not even the folder
    assert not Path("/tmp/palrp_abs_stem.json").exists()


def test_a_stem_refused_from_the_command_line_exits_1_in_one_line(tiny, tmp_path):
    run = subprocess.run([sys.executable, "explain_text.py", str(tiny / "lm"), "--text", "good",
                          "--output-dir", str(tmp_path / "out"), "--stem", "../.."],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "error: argument --stem: '../..' is not a plain file name (no folders, no '/' or '\\', "
        "not '..'); pass a name such as 'review': the files go into --output-dir; see "
        "explain_text.py --help"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,shown", [("x.txt", ".txt"), ("figure", "no extension")])
def test_a_figure_output_of_another_format_is_refused_before_the_compute(tmp_path, name, shown):
    import explain_image
    image = tmp_path / "cat.png"
    image.write_bytes(b"not needed: refused before the image is read")
    with pytest.raises(SystemExit) as exc:
        explain_image.main(["--demo", "--image", str(image), "--device", "cpu",
                            "--output", str(tmp_path / "out" / name)])
    assert _one_line(exc) == (f"error: argument --output: {tmp_path / 'out' / name} has "
                              f"{shown}, not an image format; pass a name ending in .png (or "
                              f".jpg, .jpeg, .pdf, .svg, .tif, .tiff, .webp, .eps); see "
                              f"{exc.value.code.split('; see ')[1]}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.png"]


@pytest.mark.parametrize("seed", ["-1", str(2 ** 32), str(2 ** 64)])
def test_a_seed_out_of_range_is_refused_by_the_parser(tiny, tmp_path, seed):
    out = tmp_path / "imdb"
    with pytest.raises(SystemExit) as exc:
        main_imdb.main(["--model-path", str(tiny / "lm"), "--data-path", str(tiny / "imdb.csv"),
                        "--output-dir", str(out), "--seed", seed])
    assert _one_line(exc).startswith(f"error: argument --seed: {seed} is not a seed; pass an "
                                     f"integer from 0 to 4294967295; see ")
    assert not out.exists()


def test_the_seed_limits_are_accepted(tiny, tmp_path):
    for seed in ("0", str(2 ** 32 - 1)):
        args = main_imdb.parse_args(["--model-path", str(tiny / "lm"), "--data-path",
                                     str(tiny / "imdb.csv"), "--output-dir", str(tmp_path),
                                     "--seed", seed])
        assert args.seed == int(seed)


# --- 3. damaged stored results ----------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory):
    """A finished perturbation run: its output folder and metrics."""
    out = tmp_path_factory.mktemp("finished") / "runs"
    metrics = perturbation_main(eval_pert_imdb.TASK, _pert_argv(tiny, out))
    return out, metrics


def _damage_line(path: Path, line: int, damage) -> None:
    lines = path.read_text().splitlines()
    record = json.loads(lines[line])
    damage(record)
    lines[line] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("damage,problem", [
    (lambda r: r.pop("curves"), "record has no 'curves'"),
    (lambda r: r.update(tokens="many"), "tokens is not an integer"),
    (lambda r: r["curves"]["generate_o1_logit"].__setitem__(3, math.nan),
     "curves.generate_o1_logit[3] is nan"),
    (lambda r: r["curves"]["pruning_o3_mse"].pop(), "curves.pruning_o3_mse has 10 values, not 11"),
    (lambda r: r.update(index="0"), "is not a result record"),
])
def test_a_damaged_record_is_recomputed_on_resume(tiny, finished, tmp_path, capsys, damage,
                                                  problem):
    import shutil
    source, metrics = finished
    out = tmp_path / "runs"
    shutil.copytree(source, out)
    samples = _run_folder(out) / "samples.rank0.jsonl"
    _damage_line(samples, 1, damage)
    capsys.readouterr()
    again = perturbation_main(eval_pert_imdb.TASK, _pert_argv(tiny, out))
    err = capsys.readouterr().err
    assert f"warning: {samples} line 2 " in err and problem in err
    assert "skipped (that sample is computed again)" in err and "Traceback" not in err
    assert again["num_samples"] == metrics["num_samples"]
    assert again["auc"] == pytest.approx(metrics["auc"], abs=1e-9)   # the same numbers


@pytest.mark.parametrize("damage,problem", [
    (lambda text: text[: len(text) // 2], "not JSON: "),
    (lambda text: json.dumps({**json.loads(text), "auc": {**json.loads(text)["auc"],
                                                          "MERF": math.nan}}), "auc.MERF is nan"),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "auc"}),
     "metrics has no 'auc'"),
    (lambda text: "[]", "metrics is not an object"),
])
def test_analyze_leaves_a_damaged_metrics_file_out_of_the_table(tiny, finished, tmp_path,
                                                                capsys, damage, problem):
    import shutil
    source, metrics = finished
    out = tmp_path / "runs"
    shutil.copytree(source, out)
    perturbation_main(eval_pert_imdb.TASK, _pert_argv(tiny, out, "--pe", "--single-norm"))
    damaged = _run_folder(out) / "metrics.json"
    damaged.write_text(damage(damaged.read_text()))
    capsys.readouterr()
    runs = perturbation_main(eval_pert_imdb.TASK, ["--mode", "analyze", "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert [r["run"] for r in runs] == ["pa_lrp-single_norm"]     # the damaged row left out
    assert "| clf | attnlrp |" not in captured.out and "| clf | pa_lrp-single_norm |" in captured.out
    line = [l for l in captured.err.splitlines() if l.startswith("warning:")]
    assert len(line) == 1 and problem in line[0]
    assert line[0].startswith(f"warning: {damaged} is damaged (")
    assert line[0].endswith(f"left out of the table; run --mode pert again with that run's flags "
                            f"(recorded in {damaged.parent / 'run.json'}) to recompute it")
    # the command it names recomputes the file from the stored samples
    again = perturbation_main(eval_pert_imdb.TASK, _pert_argv(tiny, out))
    assert again["auc"] == pytest.approx(metrics["auc"], abs=1e-9)
    runs = perturbation_main(eval_pert_imdb.TASK, ["--mode", "analyze", "--output-dir", str(out)])
    assert sorted(r["run"] for r in runs) == ["attnlrp", "pa_lrp-single_norm"]


def test_analyze_with_every_metrics_file_damaged_stops_with_one_line(finished, tmp_path, capsys):
    import shutil
    source, _ = finished
    out = tmp_path / "runs"
    shutil.copytree(source, out)
    (_run_folder(out) / "metrics.json").write_text("{")
    with pytest.raises(SystemExit) as exc:
        perturbation_main(eval_pert_imdb.TASK, ["--mode", "analyze", "--output-dir", str(out)])
    assert _one_line(exc) == (f"error: no finished run under {out / 'imdb'}; run --mode pert "
                              f"first")
    assert "is damaged" in capsys.readouterr().err


def test_records_are_checked_against_their_schema(tmp_path, capsys):
    schema = {"correct": float, "ap": (float, None), "union": ListOf(float, 2),
              "curves": MapOf(ListOf(int))}
    good = {"correct": 3, "ap": None, "union": [1, 2.5], "curves": {"a": [1, 2]}}
    assert record_problem(good, schema) is None
    assert record_problem({**good, "correct": True}, schema) == "correct is not a number"
    assert record_problem({**good, "ap": math.inf}, schema) == "ap is inf"
    assert record_problem({**good, "union": [1]}, schema) == "union has 1 values, not 2"
    assert record_problem({**good, "curves": {}}, schema) == "curves is not a non-empty object"
    assert record_problem({**good, "curves": {"a": [1.5]}}, schema) == \
        "curves.a[0] is not an integer"
    store = SampleStore(tmp_path, "m", schema=schema)
    store.append([{"index": 0, **good}, {"index": 1, **good, "ap": math.nan},
                  {"index": True, **good}, {"index": 2, **good}])
    store.close()
    assert [r["index"] for r in store.records()] == [0, 2]
    err = capsys.readouterr().err
    assert err == (f"warning: {store.path} line 2 is a damaged record (ap is nan); skipped "
                   f"(that sample is computed again)\n")
    store.append([{"index": 1, **good}])              # recomputed: the valid record counts
    store.close()
    assert store.done() == {0, 1, 2}
