"""Hub ids and timm pretrained names through the local Hugging Face cache (issue 23, item 2):
a cache laid out here in the hub's layout (``models--org--name/blobs``, ``snapshots/<commit>/``
links to the blobs, ``refs/main``) under a temporary ``HF_HOME``, with ``HF_HUB_OFFLINE=1``
and nothing downloaded. ``palrp.load_model`` and the drivers read tiny models from it by hub id
(a Llama causal LM and a classifier with their tokenizer, a timm ``test_vit`` written by timm's
``save_for_hf``); a model that is not cached, and ``--allow-download`` in offline mode, are one
line. The drivers run in subprocesses (huggingface_hub reads ``HF_HOME`` and
``HF_HUB_OFFLINE`` at import)."""
import hashlib
import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import palrp
from conftest import make_tiny_text_models
from palrp import config
from palrp.loaders import hub
from palrp.loaders.text_models import load_text_model

ROOT = Path(__file__).resolve().parents[1]
LM, CLF = "palrp-test/tiny-llama", "palrp-test/tiny-classifier"
TIMM_NAME = "test_vit.r160_in1k"          # a real timm pretrained name (hub id timm/<name>)
TEXT = "the movie was great and the plot was good"


def cache_repo(cache: Path, repo_id: str, source: Path, commit: str | None = None) -> Path:
    """Put the files of ``source`` into the hub cache ``cache`` as huggingface_hub lays out a
    download: ``models--org--name/blobs/<sha256>``, ``snapshots/<commit>/<file>`` as relative
    links to the blobs, ``refs/main`` holding the commit. Returns the snapshot folder."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """The tiny models saved locally and cached under ``<root>/hf`` (HF_HOME): the Llama LM and
    classifier by hub id (the LM also as TinyLlama's id, for ``--model-size llama_tiny``), the
    timm model with config.json + model.safetensors as ``save_for_hf`` writes them; and a
    second HF_HOME holding only the timm weights, as timm's own download leaves a repo."""
    from timm.models._hub import save_for_hf

    root = tmp_path_factory.mktemp("hub")
    (root / "models").mkdir()
    models = make_tiny_text_models(root / "models")
    torch.manual_seed(0)
    vit = timm.create_model(TIMM_NAME, pretrained=False).eval()
    save_for_hf(vit, root / "timm", safe_serialization=True)
    cache = root / "hf" / "hub"
    snapshots = {LM: cache_repo(cache, LM, models / "lm"),
                 CLF: cache_repo(cache, CLF, models / "clf"),
                 config.LLAMA_HUB_IDS["llama_tiny"]: cache_repo(
                     cache, config.LLAMA_HUB_IDS["llama_tiny"], models / "lm"),
                 "timm/" + TIMM_NAME: cache_repo(cache, "timm/" + TIMM_NAME, root / "timm")}
    weights_only = root / "weights_only"
    weights_only.mkdir()
    (weights_only / "model.safetensors").write_bytes((root / "timm" / "model.safetensors").read_bytes())
    cache_repo(root / "hf_weights_only" / "hub", "timm/" + TIMM_NAME, weights_only)
    return Namespace(root=root, models=models, hf_home=root / "hf", cache=cache,
                     snapshots=snapshots, vit=vit)


@pytest.fixture
def offline(layout, monkeypatch):
    """HF_HOME = the laid-out cache, HF_HUB_OFFLINE=1, no other cache setting."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(layout.hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return layout


def _env(layout, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_", "PALRP_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(layout.hf_home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PALRP_OUTPUT_DIR=str(tmp_path / "results"),
               PALRP_CHECKPOINT_DIR=str(tmp_path / "no_checkpoints"),
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def _run(layout, tmp_path, *argv):
    return subprocess.run([sys.executable, *map(str, argv)], cwd=tmp_path, env=_env(layout, tmp_path),
                          capture_output=True, text=True, timeout=300)


def _one_line(text: str) -> str:
    text = text.strip()
    assert text and "\n" not in text, text
    return text


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- the cache layout and its resolution ---------------------------------------------------------

def test_hub_ids_resolve_to_the_cached_snapshots(offline):
    assert hub.hub_cache_dir() == offline.cache
    assert hub.offline()
    snapshot = offline.snapshots[LM]
    assert hub.resolve_model_dir(LM) == snapshot
    assert hub.resolve_model_dir(f"hf-hub:{LM}") == snapshot
    assert hub.resolve_model_dir(f"{LM}@{snapshot.name}") == snapshot      # a pinned commit
    assert hub.resolve_model_dir(offline.models / "lm") == offline.models / "lm"
    assert hub.cached_repo_id(snapshot / "model.safetensors") == LM
    assert hub.model_label(snapshot) == "tiny-llama"
    assert hub.model_label(offline.models / "lm") == "lm"
    assert hub.parse_hub_id("org/name@v1.0") == ("org/name", "v1.0")
    for not_an_id in ("/abs/path", "a/b/c", "name", "org/na--me", "../x"):
        assert hub.parse_hub_id(not_an_id) is None, not_an_id
    # HF_HUB_CACHE wins over HF_HOME, as in huggingface_hub
    os.environ["HF_HUB_CACHE"] = str(offline.root / "elsewhere")
    try:
        assert hub.hub_cache_dir() == offline.root / "elsewhere"
    finally:
        del os.environ["HF_HUB_CACHE"]


def test_load_model_by_hub_id_explains_like_the_local_folder(offline):
    ids = None
    for repo, folder, head in ((LM, "lm", "causal_lm"), (CLF, "clf", "classifier")):
        loaded = palrp.load_model(repo, device="cpu")
        local = load_text_model(offline.models / folder, device="cpu")
        assert loaded.head == head and loaded.path == offline.snapshots[repo]
        assert _same_weights(loaded.model, local.model)
        ids = loaded.tokenizer(TEXT, return_tensors="pt")
        assert torch.equal(ids["input_ids"], local.tokenizer(TEXT, return_tensors="pt")["input_ids"])
        got = palrp.explain(loaded.model, dict(ids))
        want = palrp.explain(local.model, dict(ids))
        assert got.relevance["input_ids"].shape == ids["input_ids"].shape
        assert got.relevance["input_ids"].abs().sum() > 0
        torch.testing.assert_close(got.relevance["input_ids"], want.relevance["input_ids"],
                                   rtol=0, atol=0)
        torch.testing.assert_close(got.positional["input_ids"], want.positional["input_ids"],
                                   rtol=0, atol=0)
    # the text loader itself also takes a cached hub id
    assert load_text_model(CLF, "classifier", device="cpu").path == offline.snapshots[CLF]


def test_load_model_timm_by_name_by_hub_id_and_weights_only_cache(offline, monkeypatch):
    by_name = palrp.load_model(TIMM_NAME)
    by_id = palrp.load_model("timm/" + TIMM_NAME)
    assert _same_weights(by_name, offline.vit) and _same_weights(by_id, offline.vit)
    assert tuple(by_name.pretrained_cfg["mean"]) == tuple(by_id.pretrained_cfg["mean"]) == (0.5,) * 3
    assert not by_name.training
    image = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    got = palrp.explain(by_name, image)
    want = palrp.explain(offline.vit, image)
    assert got.streams["pixel_values"].pixels.shape == (1, 160, 160)
    torch.testing.assert_close(got.streams["pixel_values"].pixels,
                               want.streams["pixel_values"].pixels, rtol=0, atol=0)
    # a repo timm itself downloaded holds only the weights (no config.json): both names work
    monkeypatch.setenv("HF_HOME", str(offline.root / "hf_weights_only"))
    assert _same_weights(palrp.load_model(TIMM_NAME), offline.vit)
    assert _same_weights(palrp.load_model("timm/" + TIMM_NAME), offline.vit)


@pytest.mark.parametrize("spec, fragments", [
    ("palrp-test/absent", ["palrp-test/absent", "`hf download palrp-test/absent`",
                           "--allow-download"]),
    (f"{LM}@v9", [f"{LM}@v9", f"`hf download {LM} --revision v9`"]),
    ("test_vit3.r160_in1k", ["test_vit3.r160_in1k", "`hf download timm/test_vit3.r160_in1k`"]),
    ("timm/test_vit3.r160_in1k", ["`hf download timm/test_vit3.r160_in1k`"]),
    ("no_such_model_xyz", ["no_such_model_xyz", "timm.list_pretrained()"]),
])
def test_a_model_neither_local_nor_cached_is_one_line(offline, spec, fragments):
    with pytest.raises(hub.HubError) as info:
        palrp.load_model(spec)
    message = _one_line(str(info.value))
    assert all(f in message for f in fragments), message
    assert str(offline.cache) in message or "list_pretrained" in message


def test_allow_download_is_refused_in_offline_mode(offline):
    with pytest.raises(hub.HubError) as info:
        palrp.load_model(LM, allow_download=True)          # even for a cached model
    assert "HF_HUB_OFFLINE" in _one_line(str(info.value))


def test_nothing_is_downloaded_unless_allowed(offline, monkeypatch):
    """Every hub call without allow_download is cache-only; with it (and the offline mode
    off), the repo's listing decides what is fetched: no other frameworks' weights, no .bin
    where safetensors exist, no original/ duplicates."""
    import huggingface_hub
    from huggingface_hub import constants

    calls = []
    real_snapshot = huggingface_hub.snapshot_download

    def snapshot(repo_id, **kw):
        calls.append(("snapshot", repo_id, kw.get("local_files_only", False),
                      kw.get("allow_patterns")))
        if kw.get("local_files_only"):
            return real_snapshot(repo_id, **kw)
        return str(offline.snapshots[LM])              # stands in for the download

    def download(*args, **kw):
        calls.append(("file", args, kw))
        raise AssertionError("hf_hub_download called")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo, revision=None: [
        "config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json",
        "original/consolidated.00.pth", "flax_model.msgpack", "onnx/model.onnx"])
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for spec in ("org/missing", "test_vit3.r160_in1k"):
        with pytest.raises(hub.HubError):
            palrp.load_model(spec)
    assert calls and all(c[0] == "snapshot" and c[2] for c in calls), calls
    calls.clear()
    assert hub.cached_snapshot("org/missing", allow_download=True) == offline.snapshots[LM]
    assert [c[2] for c in calls] == [True, False]
    assert calls[1][3] == ["config.json", "model.safetensors", "tokenizer.json"]
    assert hub.files_to_fetch(["a.json", "pytorch_model.bin", "tokenizer.model"]) == [
        "a.json", "pytorch_model.bin", "tokenizer.model"]


# --- named models: the configured folder, else the cache ----------------------------------------

def test_named_sizes_read_the_cache_first_unless_their_folder_is_set(offline, monkeypatch, tmp_path):
    from palrp.nlp import imdb_model

    missing = tmp_path / "TinyLlama-1.1B-Chat-v1.0"
    monkeypatch.setitem(config.LLAMA_MODELS, "llama_tiny", missing)
    cached = offline.snapshots[config.LLAMA_HUB_IDS["llama_tiny"]]
    assert imdb_model.model_folder("llama_tiny") == cached
    missing.mkdir()
    # the cache wins over the default folder; a folder the user names (PALRP_LLAMA_TINY) wins
    assert imdb_model.model_folder("llama_tiny") == cached
    monkeypatch.setenv("PALRP_LLAMA_TINY", str(missing))
    assert imdb_model.model_folder("llama_tiny") == missing
    monkeypatch.delenv("PALRP_LLAMA_TINY")
    monkeypatch.setitem(config.LLAMA_MODELS, "llama_2_7b", tmp_path / "absent")
    with pytest.raises(hub.HubError) as info:
        imdb_model.model_folder("llama_2_7b")
    message = _one_line(str(info.value))
    assert message.startswith(f"model folder not found: {tmp_path / 'absent'}")
    assert "`hf download meta-llama/Llama-2-7b-hf`" in message and "PALRP_LLAMA_2_7B" in message


def test_deit_sizes_read_timms_copy_from_the_cache(offline, monkeypatch, tmp_path):
    """--model-size tiny without the official file: timm's deit_tiny_patch16_224.fb_in1k in
    the cache, loaded by the same DeiT loader; the results folder is named after the repo."""
    from safetensors.torch import save_file

    from palrp.runtime.cli import checkpoint_and_overrides
    from palrp.runtime.vision_run import load_model_or_exit, model_label

    torch.manual_seed(1)
    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    source = tmp_path / "deit"
    source.mkdir()
    save_file({k: v.contiguous() for k, v in deit.state_dict().items()},
              str(source / "model.safetensors"))
    repo = config.DEIT_HUB_IDS["tiny"]
    snapshot = cache_repo(offline.cache, repo, source)
    try:
        official = tmp_path / "deit_tiny_patch16_224-a1311bcf.pth"
        monkeypatch.setitem(config.DEIT_CHECKPOINTS, "tiny", official)
        args = Namespace(model=None, timm_model=None, model_size="tiny", demo=False,
                         pretrained=False, allow_download=False)
        checkpoint, overrides = checkpoint_and_overrides(args)
        assert checkpoint == snapshot / "model.safetensors" and overrides == {"model_size": "tiny"}
        assert model_label(checkpoint) == "deit_tiny_patch16_224.fb_in1k"
        assert _same_weights(load_model_or_exit(checkpoint, overrides, "cpu"), deit)
        official.write_bytes(b"")
        # the cache wins over the default file; a file the user names (PALRP_DEIT_TINY) wins
        assert checkpoint_and_overrides(args)[0] == snapshot / "model.safetensors"
        monkeypatch.setenv("PALRP_DEIT_TINY", str(official))
        assert checkpoint_and_overrides(args)[0] == official
    finally:
        import shutil
        shutil.rmtree(snapshot.parents[1])


# --- the drivers, by hub id, in subprocesses --------------------------------------------------

def test_explain_text_by_hub_id(layout, tmp_path):
    proc = _run(layout, tmp_path, ROOT / "explain_text.py", LM, "--text", TEXT, "--device", "cpu",
                "--output-dir", tmp_path / "by_id")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"model: {LM}" in (tmp_path / "by_id" / "explanation.html").read_text()
    import explain_text
    explain_text.main([str(layout.models / "lm"), "--text", TEXT, "--device", "cpu",
                       "--output-dir", str(tmp_path / "local")])
    got = json.loads((tmp_path / "by_id" / "explanation.json").read_text())
    want = json.loads((tmp_path / "local" / "explanation.json").read_text())
    assert got["tokens"] == want["tokens"] and got["target"] == want["target"]
    for name in ("AttnLRP", "PA-LRP", "PE-only"):
        np.testing.assert_allclose(got["maps"][name], want["maps"][name], rtol=1e-6, atol=1e-7)


def test_nlp_driver_by_model_path_hub_id(layout, tmp_path):
    out = tmp_path / "runs"
    proc = _run(layout, tmp_path, ROOT / "NLP" / "eval_pert_imdb.py", "--model-path", CLF,
                "--data-path", layout.models / "imdb.csv", "--max-samples", "2",
                "--max-length", "64", "--device", "cpu", "--output-dir", out, "--pe",
                "--single-norm")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "imdb" / "tiny-classifier" / "pa_lrp-single_norm" /
                          "metrics.json").read_text())
    assert metrics["model"] == str(layout.snapshots[CLF]) and metrics["num_correct"] == 2
    assert "| tiny-classifier | pa_lrp-single_norm |" in proc.stdout


def test_explain_image_by_timm_pretrained_name(layout, tmp_path):
    from palrp.loaders import vision_model

    image = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((120, 140, 3)) * 255).astype("uint8")).save(image)
    proc = _run(layout, tmp_path, ROOT / "explain_image.py", "--timm-model", TIMM_NAME,
                "--pretrained", "--image", image, "--output", tmp_path / "map.png",
                "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "map.png").stat().st_size > 0
    with torch.no_grad():
        x = vision_model.normalize(layout.vit, vision_model.load_image(image, layout.vit))
        predicted = int(layout.vit(x).argmax())
    assert proc.stdout.startswith(f"predicted: {predicted} (")


def test_missing_hub_id_and_offline_download_are_one_line(layout, tmp_path):
    proc = _run(layout, tmp_path, ROOT / "explain_text.py", "palrp-test/absent", "--text", TEXT)
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert line.startswith("error: palrp-test/absent is neither a local folder nor in the "
                           "Hugging Face cache") and "`hf download palrp-test/absent`" in line
    proc = _run(layout, tmp_path, ROOT / "explain_image.py", "--timm-model", TIMM_NAME,
                "--pretrained", "--allow-download", "--image", tmp_path / "x.png")
    assert proc.returncode == 1
    assert "HF_HUB_OFFLINE" in _one_line(proc.stderr) and proc.stdout == ""


# --- the other drivers' flags, in process ------------------------------------------------------

def test_main_imdb_and_pert_driver_take_hub_ids(offline, tmp_path, monkeypatch):
    from NLP import main_imdb
    from palrp.nlp import pert_driver

    args = main_imdb.parse_args(["--model-path", LM, "--data-path", str(offline.models / "imdb.csv")])
    assert args.model_path == offline.snapshots[LM]
    assert args.output_dir == Path(config.OUTPUT_DIR) / "imdb" / "tiny-llama"
    result = main_imdb.main(["--eval", "--model-path", CLF, "--data-path",
                             str(offline.models / "imdb.csv"), "--max-test", "4", "--device",
                             "cpu", "--output-dir", str(tmp_path / "eval")])
    assert result["model_path"] == str(offline.snapshots[CLF]) and result["test_samples"] == 4
    with pytest.raises(SystemExit) as info:
        main_imdb.parse_args(["--model-path", "palrp-test/absent"])
    assert "`hf download palrp-test/absent`" in _one_line(str(info.value))
    # the named size of a perturbation task, from the cache (TinyLlama's id)
    monkeypatch.setitem(config.LLAMA_MODELS, "llama_tiny", tmp_path / "absent")
    task = Namespace(demo_model=None)
    path = pert_driver.resolve_model_path(task, pert_driver.PerturbationOptions(model_size="llama_tiny"))
    assert path == offline.snapshots[config.LLAMA_HUB_IDS["llama_tiny"]]
    with pytest.raises(pert_driver.PerturbationError, match="HF_HUB_OFFLINE"):
        pert_driver.check_options(pert_driver.PerturbationOptions(allow_download=True))


def test_seg_driver_with_pretrained_timm_model(offline, tmp_path):
    import analyze_seg_results as seg
    from palrp.data.gtsegs import write_gtsegs

    rng = np.random.default_rng(0)
    mat = write_gtsegs(tmp_path / "small.mat",
                       [(rng.random((40, 50, 3)) * 255).astype("uint8") for _ in range(2)],
                       [(rng.random((40, 50)) > 0.6).astype("uint8") for _ in range(2)])
    assert seg.main(["--timm-model", TIMM_NAME, "--pretrained", "--method", "rollout",
                     "--device", "cpu", "--num-examples", "0", "--imagenet-seg-path", str(mat),
                     "--output-dir", str(tmp_path / "seg")]) == 0
    results = json.loads((tmp_path / "seg" / TIMM_NAME / "mean" / "results.json").read_text())
    assert results["img_size"] == [160, 160] and results["mean"] == [0.5, 0.5, 0.5]
    assert results["n_images"] == 2
    assert results["model"] == str(offline.snapshots["timm/" + TIMM_NAME] / "model.safetensors")
    for argv, fragment in (
            (["--timm-model", TIMM_NAME, "--pretrained", "--model", str(mat)], "pass one of them"),
            (["--pretrained"], "pass --timm-model NAME with it"),
            (["--timm-model", "test_vit3.r160_in1k", "--pretrained"],
             "`hf download timm/test_vit3.r160_in1k`")):
        with pytest.raises(SystemExit) as info:
            seg.main([*argv, "--method", "rollout", "--imagenet-seg-path", str(mat),
                      "--output-dir", str(tmp_path / "bad"), "--device", "cpu"])
        assert fragment in _one_line(str(info.value))
