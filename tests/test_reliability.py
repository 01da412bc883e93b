"""Reliability (issue 14): no stale or mixed results, nothing foreign runs on resume, nothing
outside a run is replaced, files follow the umask, and every bad input of every command line
gives one line on stderr, a non-zero exit and no traceback, before any long work."""
import json
import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import analyze_pert_results
import analyze_seg_results
import explain_image
import explain_text
from conftest import make_timm_vit, make_tiny_llama_folder, make_tiny_text_models
from palrp.data.gtsegs import write_gtsegs
from NLP import eval_pert_arc, eval_pert_imdb, eval_pert_wiki, main_imdb
from palrp.nlp.imdb_state import STATE_FILE
from palrp.nlp.pert_driver import format_table
from palrp.runtime.cli import perturbation_main as pert_main
from palrp.runtime import SampleStore, atomic_write_json, atomic_write_text, check_run

ROOT = Path(__file__).resolve().parents[1]


# --- fixtures: tiny models and data, built once -------------------------------------------------

@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return make_tiny_text_models(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def imdb_lm(tmp_path_factory):
    return make_tiny_llama_folder(tmp_path_factory.mktemp("imdb_lm"), rows=30)


@pytest.fixture(scope="module")
def vision(tmp_path_factory):
    """A tiny DeiT checkpoint (5 classes, 32 px), two small gtsegs files, a 2-D-image gtsegs
    file, an ImageNet folder of 5 classes and a copy of it whose images are all corrupt."""
    root = tmp_path_factory.mktemp("vision")
    torch.save({"model": make_timm_vit(img_size=32, patch_size=8).state_dict()}, root / "tiny.pth")
    (root / "tiny.json").write_text('{"config": {"num_heads": 3}}')
    rng = np.random.default_rng(0)
    for name, n in (("a.mat", 3), ("b.mat", 4)):
        images = [(rng.random((32, 36, 3)) * 255).astype("uint8") for _ in range(n)]
        masks = [(rng.random((32, 36)) > 0.5).astype("uint8") for _ in range(n)]
        write_gtsegs(root / name, images, masks)
    with h5py.File(root / "flat.mat", "w") as f:        # images stored 2-D (grey, no channels)
        img = f.create_dataset("#refs#/img0", data=np.zeros((36, 32), dtype=np.uint8))
        mask = f.create_dataset("#refs#/gt0", data=np.zeros((36, 32), dtype=np.uint8))
        holder = f.create_dataset("#refs#/gtcell0", data=np.array([[mask.ref]], dtype=h5py.ref_dtype))
        f.create_dataset("value/img", data=np.array([[img.ref]], dtype=h5py.ref_dtype))
        f.create_dataset("value/gt", data=np.array([[holder.ref]], dtype=h5py.ref_dtype))
    for c in range(5):
        folder = root / "imagenet" / "val" / f"class{c}"
        folder.mkdir(parents=True)
        for k in range(2):
            Image.fromarray((rng.random((20, 24, 3)) * 255).astype("uint8")).save(folder / f"{k}.png")
    import shutil
    shutil.copytree(root / "imagenet", root / "imagenet_bad")
    # every image unreadable: a benchmark run skips and reports single bad files
    # (tests/test_reliability_images.py), and stops in one line when none can be read
    for image in (root / "imagenet_bad" / "val").rglob("*.png"):
        image.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


# --- results are never silently wrong or mixed --------------------------------------------------

def _seg(vision, out, mat, *extra):
    return analyze_seg_results.main(["--method", "attnlrp", "--device", "cpu", "--num-examples",
                                     "0", "--model", str(vision / "tiny.pth"), "--imagenet-seg-path",
                                     str(vision / mat), "--output-dir", str(out), *extra])


def test_segmentation_results_of_other_data_are_refused_then_overwritten(vision, tmp_path,
                                                                         capsys):
    _seg(vision, tmp_path / "old", "a.mat")
    with pytest.raises(SystemExit) as exc:
        _seg(vision, tmp_path / "old", "b.mat")
    message = str(exc.value)
    assert "holds results of another run (data differ" in message and "\n" not in message
    assert "another --output-dir" in message and "--overwrite" in message
    _seg(vision, tmp_path / "fresh", "b.mat")
    _seg(vision, tmp_path / "old", "b.mat", "--overwrite")
    read = lambda out: json.loads(next(out.rglob("results.json")).read_text())["methods"]  # noqa
    assert read(tmp_path / "old") == read(tmp_path / "fresh")
    assert read(tmp_path / "old")["attnlrp"]["n_images"] == 4
    capsys.readouterr()
    _seg(vision, tmp_path / "old", "b.mat")                    # same run again: resumes
    printed = capsys.readouterr().out
    assert f"resuming {tmp_path / 'old' / 'tiny' / 'mean'}: 4 of 4 images already done" in printed


def _imdb(text, out, *extra):
    return pert_main(eval_pert_imdb.TASK, ["--mode", "pert", "--device", "cpu", "--output-dir",
                                           str(out), "--max-length", "64", "--model-path",
                                           str(text / "clf"), *map(str, extra)])


def test_nlp_runs_do_not_mix_data_or_sample_caps(text, tmp_path, capsys):
    out = tmp_path / "runs"
    first = _imdb(text, out, "--max-samples", "2", "--data-path", text / "imdb.csv")
    other = tmp_path / "other.csv"
    other.write_text((text / "imdb.csv").read_text().replace("good", "fine"))
    with pytest.raises(SystemExit, match=r"data differ.*--overwrite"):
        _imdb(text, out, "--max-samples", "2", "--data-path", other)
    with pytest.raises(SystemExit, match="max_samples differ: max_samples 3 here, 2 there"):
        _imdb(text, out, "--max-samples", "3", "--data-path", text / "imdb.csv")
    capsys.readouterr()
    again = _imdb(text, out, "--max-samples", "2", "--data-path", text / "imdb.csv")
    printed = capsys.readouterr().out
    n = first["num_samples"]
    assert f"resuming {out / 'imdb' / 'clf' / 'attnlrp'}: {n} of {n} samples already done" in printed
    assert again["auc"] == first["auc"]
    # analyze marks rows whose data or N differ from the first row of their model
    bigger = _imdb(text, out, "--max-samples", "3", "--data-path", text / "imdb.csv", "--pe")
    table = format_table([first, bigger])
    assert f"| {bigger['num_samples']}* |" in table and "not comparable" in table
    assert "*" not in format_table([first, again])


def test_run_record_mismatch_corruption_and_overwrite_scope(tmp_path):
    folder = tmp_path / "run"
    assert check_run(folder, {"model": "m", "data": "d"}) is False
    assert check_run(folder, {"model": "m", "data": "d"}) is True
    (folder / "samples.rank0.jsonl").write_text('{"index": 0}\n')
    (folder / "mine.txt").write_text("the user's")
    with pytest.raises(SystemExit) as exc:
        check_run(folder, {"model": "m", "data": "e"})
    assert str(exc.value).count("\n") == 0 and "data differ: data e here, d there" in str(exc.value)
    check_run(folder, {"model": "m", "data": "e"}, overwrite=True, owned=("samples.rank*.jsonl",))
    assert not (folder / "samples.rank0.jsonl").exists() and (folder / "mine.txt").exists()
    (folder / "run.json").write_text("{not json")
    with pytest.raises(SystemExit, match="is not a readable run record"):
        check_run(folder, {"model": "m"})
    (folder / "run.json").unlink()
    (folder / "samples.rank0.jsonl").write_text('{"index": 0}\n')
    with pytest.raises(SystemExit, match="holds results but no run.json"):
        check_run(folder, {"model": "m"}, owned=("samples.rank*.jsonl",))


def test_a_malformed_store_line_is_skipped_with_a_warning_and_recomputed(tmp_path, capsys):
    with SampleStore(tmp_path, "m") as store:
        store.append([{"index": 0, "v": 0}, {"index": 1, "v": 1}])
    with open(tmp_path / "m.rank0.jsonl", "a") as stream:
        stream.write('{"index": 2, "v": 2\n')          # complete line, not JSON
        stream.write('["not", "a", "record"]\n')
        stream.write('{"index": 3, "v": 3}\n')
    store = SampleStore(tmp_path, "m")
    assert store.done() == {0, 1, 3}
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and "line 3 is not a result record" in warnings[0]
    store.append([{"index": 2, "v": 2}])
    store.close()
    assert [r["v"] for r in SampleStore(tmp_path, "m").records()] == [0, 1, 2, 3]


def test_files_are_created_with_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write_json(tmp_path / "r.json", {"x": 1})
        text = atomic_write_text(tmp_path / "t.md", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 == stat.S_IMODE(text.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "t.md"]


# --- nothing foreign runs, nothing outside the run is replaced -----------------------------------

def _train(imdb_lm, out, *extra):
    return main_imdb.main(["--model-path", str(imdb_lm / "lm"), "--data-path",
                           str(imdb_lm / "imdb.csv"), "--output-dir", str(out), "--max-train", "8",
                           "--max-test", "4", "--batch-size", "4", "--num-epochs", "1",
                           "--max-length", "32", *extra])


class _Planted:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_training_state_loads_weights_only_and_a_planted_pickle_is_refused(imdb_lm, tmp_path):
    out = tmp_path / "run"
    _train(imdb_lm, out)
    state = torch.load(out / STATE_FILE, weights_only=True)       # tensors and numbers only
    assert state["step"] == 2 and isinstance(state["rng"]["numpy"], torch.Tensor)
    marker = tmp_path / "pwned"
    torch.save({"trainable": _Planted(marker)}, out / STATE_FILE)
    with pytest.raises(SystemExit) as exc:
        _train(imdb_lm, out, "--resume")
    assert not marker.exists()
    assert "holds objects other than tensors and numbers" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_rerun_without_resume_is_refused_and_a_foreign_best_is_never_touched(imdb_lm, tmp_path):
    out = tmp_path / "run"
    first = _train(imdb_lm, out)
    with pytest.raises(SystemExit, match="already holds a training run .*--resume.*--overwrite"):
        _train(imdb_lm, out)
    again = _train(imdb_lm, out, "--overwrite")
    assert again["epochs"][0]["test_accuracy"] == first["epochs"][0]["test_accuracy"]
    user = tmp_path / "user"
    (user / "best").mkdir(parents=True)
    (user / "best" / "notes.txt").write_text("mine")
    for flags in ([], ["--overwrite"]):
        with pytest.raises(SystemExit, match="was not written by main_imdb.py"):
            _train(imdb_lm, user, *flags)
    assert (user / "best" / "notes.txt").read_text() == "mine"
    assert not (user / STATE_FILE).exists()


# --- bad input: one line, non-zero exit, no traceback, for every command line --------------------

def _model_folder(kind, text, tmp_path):
    """Broken copies of the tiny classifier folder."""
    import shutil
    folder = tmp_path / kind
    shutil.copytree(text / "clf", folder)
    if kind == "no_weights":
        (folder / "model.safetensors").unlink()
    elif kind == "truncated":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[:len(data) // 2])
    elif kind == "bad_config":
        (folder / "config.json").write_text("{ this is not json")
    elif kind == "no_tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).unlink()
    return folder


def _unwritable(tmp_path):
    if os.geteuid() == 0:             # root writes through permission bits: use a read-only fs
        return Path("/sys/palrp_output")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "out"


def _cli(name, text, imdb_lm, vision, tmp_path):
    """(main, argv builder) for each command line: argv(output_dir, *extra)."""
    data = {"imdb": text / "imdb.csv", "wiki": text / "wiki.jsonl"}
    tasks = {"eval_pert_imdb": (eval_pert_imdb.TASK, "clf", data["imdb"]),
             "eval_pert_wiki": (eval_pert_wiki.TASK, "lm", data["wiki"])}
    if name in tasks:
        task, model, path = tasks[name]
        return (lambda argv: pert_main(task, argv),
                lambda out, *extra, model=model: ["--mode", "pert", "--device", "cpu",
                                                  "--max-length", "64", "--max-samples", "1",
                                                  "--model-path", str(text / model),
                                                  "--data-path", str(path),
                                                  "--output-dir", str(out), *map(str, extra)])
    if name == "eval_pert_arc":
        return (lambda argv: pert_main(eval_pert_arc.TASK, argv),
                lambda out, *extra: ["--mode", "pert", "--device", "cpu", "--model-path",
                                     str(text / "lm"), "--output-dir", str(out), *map(str, extra)])
    if name == "main_imdb":
        return (main_imdb.main,
                lambda out, *extra: ["--model-path", str(imdb_lm / "lm"), "--data-path",
                                     str(imdb_lm / "imdb.csv"), "--output-dir", str(out),
                                     "--max-train", "8", "--max-test", "4", "--num-epochs", "1",
                                     "--batch-size", "4", "--max-length", "32", *map(str, extra)])
    if name == "explain_text":
        return (explain_text.main,
                lambda out, *extra: [str(text / "lm"), "--text", "the movie was good",
                                     "--device", "cpu", "--output-dir", str(out), *map(str, extra)])
    if name == "explain_image":
        image = vision / "imagenet" / "val" / "class1" / "0.png"
        return (explain_image.main,
                lambda out, *extra: ["--model", str(vision / "tiny.pth"), "--image", str(image),
                                     "--device", "cpu", "--output-dir", str(out),
                                     *map(str, extra)])
    if name == "analyze_seg_results":
        return (analyze_seg_results.main,
                lambda out, *extra: ["--method", "attnlrp", "--device", "cpu", "--model",
                                     str(vision / "tiny.pth"), "--imagenet-seg-path",
                                     str(vision / "a.mat"), "--output-dir", str(out),
                                     *map(str, extra)])
    if name == "analyze_pert_results":
        return (analyze_pert_results.main,
                lambda out, *extra: ["--method", "attnlrp", "--device", "cpu", "--fract", "1",
                                     "--model", str(vision / "tiny.pth"), "--data-path",
                                     str(vision / "imagenet"), "--output-dir", str(out),
                                     *map(str, extra)])
    raise KeyError(name)


CLIS = ("explain_image", "explain_text", "analyze_seg_results", "analyze_pert_results",
        "main_imdb", "eval_pert_imdb", "eval_pert_arc", "eval_pert_wiki")

#: (command line, bad input, fragment of the expected line). ``out`` in an argument is the
#: output folder of the case; {file}, {unwritable}, {model:KIND}, {runjson} are built per case;
#: {finished}: a finished run with the default flags is in the output folder first.
BAD_INPUTS = [
    *[(cli, "output folder is a file", "{file}", "is a file, not a folder") for cli in CLIS],
    *[(cli, "output folder not writable", "{unwritable}", "cannot write to") for cli in CLIS],
    *[(cli, kind, f"--model-path {{model:{kind}}}", fragment)
      for cli in ("eval_pert_imdb", "eval_pert_wiki")
      for kind, fragment in (("no_weights", "has a config but no weights"),
                             ("truncated", "cannot read the weights"),
                             ("bad_config", "config.json is not valid JSON"),
                             ("no_tokenizer", "no usable tokenizer"))],
    ("eval_pert_imdb", "score batch 0", "--score-batch-size 0", "must be at least 1, not 0"),
    ("eval_pert_wiki", "score batch -1", "--score-batch-size -1", "must be at least 1, not -1"),
    ("eval_pert_imdb", "max length 0", "--max-length 0", "must be at least 1, not 0"),
    ("eval_pert_wiki", "max length beyond positions", "--max-length 2048",
     "beyond the 512 positions"),
    ("eval_pert_arc", "max samples 0", "--max-samples 0", "must be at least 1"),
    ("eval_pert_imdb", "corrupt run record", "{runjson:imdb/clf/attnlrp}",
     "is not a readable run record"),
    ("main_imdb", "negative learning rate", "--lr -1", "must be a positive number"),
    ("main_imdb", "max length 0", "--max-length 0", "must be at least 1, not 0"),
    ("main_imdb", "corrupt training state", "{state:garbage} --resume",
     "is not a readable training state"),
    ("main_imdb", "resume and eval", "--eval --resume", "excludes --resume"),
    ("explain_text", "max length 0", "--max-length 0", "must be at least 1, not 0"),
    ("explain_text", "target the tokenizer does not know", "--target zzzqqq",
     "becomes the unknown token"),
    ("explain_text", "unknown device", "--device tpu9", "is not a torch device"),
    ("explain_image", "--output is a folder", "--output {folder}", "is a folder; pass a file name"),
    ("analyze_seg_results", "negative example count", "--num-examples -3", "cannot be negative"),
    ("analyze_seg_results", "negative workers", "--num-workers -1", "cannot be negative"),
    ("analyze_seg_results", "images stored 2-D", "--imagenet-seg-path {flat}",
     "expected (3, W, H) RGB"),
    ("analyze_seg_results", "corrupt run record", "{runjson:tiny/mean}",
     "is not a readable run record"),
    ("analyze_pert_results", "negative workers", "--num-workers -1", "cannot be negative"),
    ("analyze_pert_results", "zero batch", "--batch-size 0", "must be at least 1"),
    ("analyze_pert_results", "corrupt image in the folder", "{badimagenet}",
     "cannot decode image"),
    ("analyze_pert_results", "map store of another layout", "{h5:tiny/explanations/attnlrp.rank0.h5}",
     "is not a map store"),
    *[(cli, "resume with the other --preprocess", "{finished} --preprocess model",
       "preprocess differ: preprocess model here, protocol there")
      for cli in ("analyze_seg_results", "analyze_pert_results")],
]


def _expand(spec: str, case: Path, text, vision) -> tuple[Path, list[str]]:
    """The output folder and the extra arguments of one case."""
    out = case / "out"
    extra = []
    for token in spec.split():
        if token == "{file}":
            case.mkdir(parents=True, exist_ok=True)
            out = case / "a_file"
            out.write_text("not a folder")
        elif token == "{unwritable}":
            out = _unwritable(case)
        elif token.startswith("{model:"):
            extra.append(str(_model_folder(token[7:-1], text, case)))
        elif token.startswith("{runjson:"):
            folder = out / token[9:-1]
            folder.mkdir(parents=True)
            (folder / "run.json").write_text("{ torn")
        elif token.startswith("{state:"):
            out.mkdir(parents=True)
            (out / STATE_FILE).write_bytes(b"garbage, not a torch file")
        elif token.startswith("{h5:"):       # written over the store of a finished run
            with h5py.File(out / token[4:-1], "w") as f:
                f.create_dataset("index", data=np.zeros((2, 2)))
        elif token == "{badimagenet}":
            extra += ["--data-path", str(vision / "imagenet_bad")]
        elif token == "{folder}":
            folder = case / "a_folder.png"       # an image name that is a folder
            folder.mkdir(parents=True)
            extra.append(str(folder))
        elif token == "{flat}":
            extra.append(str(vision / "flat.mat"))
        elif token == "{finished}":
            pass                     # made by the test before the case runs
        else:
            extra.append(token)
    return out, extra


@pytest.mark.parametrize("cli, what, spec, fragment", BAD_INPUTS,
                         ids=[f"{c}: {w}" for c, w, _, _ in BAD_INPUTS])
def test_bad_input_gives_one_line_and_no_traceback(cli, what, spec, fragment, text, imdb_lm,
                                                   vision, tmp_path, capsys):
    main, argv = _cli(cli, text, imdb_lm, vision, tmp_path)
    if "{h5:" in spec:       # a finished run of this very identity, then its store replaced
        main(argv(tmp_path / "case" / "out", "--fract", "0.2"))
        extra_run = ["--fract", "0.2"]
    elif "{finished}" in spec:   # a finished run of the default flags, resumed with others
        main(argv(tmp_path / "case" / "out"))
        extra_run = []
    else:
        extra_run = []
    out, extra = _expand(spec, tmp_path / "case", text, vision)
    extra += extra_run
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv(out, *extra))
    code = exc.value.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    if isinstance(code, str):
        lines.append(code)
    assert code not in (0, None), err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert fragment in lines[0], lines[0]
