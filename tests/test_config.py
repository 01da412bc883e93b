"""palrp.config: PALRP_* environment variables first, then the working directory for data, models
and outputs, the user's cache folder for what the project generates, the package for the shipped
assets; the module-level names the drivers use hold the same values at import time."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from palrp import config

PATH_VARS = ("ASSETS_DIR", "OUTPUT_DIR", "CHECKPOINT_DIR", "CACHE_DIR", "IMAGENET_SEG_PATH",
             "IMAGENET_PATH", "IMDB_CSV_PATH", "DEIT_TINY", "DEIT_SMALL", "DEIT_BASE",
             "LLAMA_TINY", "LLAMA_2_7B", "LLAMA_3_8B")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No PALRP_* / XDG_CACHE_HOME settings, HOME and the working directory in tmp_path."""
    for name in PATH_VARS:
        monkeypatch.delenv("PALRP_" + name, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_defaults_are_under_the_working_directory(clean_env):
    work = clean_env
    assert config.output_dir() == work / "results"
    assert config.checkpoint_dir() == work / "checkpoints"
    assert config.imagenet_seg_path() == work / "gtsegs_ijcv.mat"
    assert config.imagenet_path() == work / "imagenet"
    assert config.imdb_csv_path() == work / "IMDB Dataset.csv"
    assert config.deit_checkpoints()["tiny"] == work / "checkpoints" / "deit_tiny_patch16_224-a1311bcf.pth"
    assert config.llama_models()["llama_tiny"] == work / "checkpoints" / "TinyLlama-1.1B-Chat-v1.0"


def test_environment_variables_win(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("PALRP_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("PALRP_CHECKPOINT_DIR", "~/weights")
    monkeypatch.setenv("PALRP_DEIT_BASE", str(tmp_path / "base.pth"))
    monkeypatch.setenv("PALRP_IMAGENET_PATH", str(tmp_path / "in1k"))
    monkeypatch.setenv("PALRP_IMAGENET_SEG_PATH", "")                   # empty: unset
    assert config.output_dir() == tmp_path / "out"
    assert config.checkpoint_dir() == tmp_path / "home" / "weights"      # ~ expanded
    assert config.deit_checkpoints()["tiny"].parent == tmp_path / "home" / "weights"
    assert config.deit_checkpoints()["base"] == tmp_path / "base.pth"
    assert config.llama_models()["llama_3_8b"].parent == tmp_path / "home" / "weights"
    assert config.imagenet_path() == tmp_path / "in1k"
    assert config.imagenet_seg_path() == clean_env / "gtsegs_ijcv.mat"


def test_cache_dir(clean_env, monkeypatch, tmp_path):
    assert config.cache_dir() == tmp_path / "home" / ".cache" / "palrp"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")           # not absolute: ignored
    assert config.cache_dir() == tmp_path / "home" / ".cache" / "palrp"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert config.cache_dir() == tmp_path / "xdg" / "palrp"
    monkeypatch.setenv("PALRP_CACHE_DIR", str(tmp_path / "mine"))
    assert config.cache_dir() == tmp_path / "mine"


def test_assets_ship_inside_the_package(clean_env, monkeypatch, tmp_path):
    import palrp

    assets = config.assets_dir()
    assert assets == Path(palrp.__file__).parent / "assets"
    assert (assets / "vision" / "deit_demo.safetensors").is_file()
    assert (assets / "vision" / "deit_demo.json").is_file()
    for name in ("lm/config.json", "classifier/config.json", "imdb.csv", "arc_easy.jsonl",
                 "wiki.jsonl"):
        assert (assets / "text" / name).is_file(), name
    monkeypatch.setenv("PALRP_ASSETS_DIR", str(tmp_path / "assets"))
    assert config.assets_dir() == tmp_path / "assets"


SCRIPT = """
import json
from palrp import config
print(json.dumps({k: str(getattr(config, k)) for k in
      ("OUTPUT_DIR", "CHECKPOINT_DIR", "CACHE_DIR", "ASSETS_DIR", "DEMO_VISION_DIR", "DEMO_TEXT_DIR",
       "IMAGENET_PATH", "IMDB_CSV_PATH", "SEED")} | {"tiny": str(config.DEIT_CHECKPOINTS["tiny"])}))
"""


def test_module_level_names_at_import(tmp_path):
    """What the drivers read (config.OUTPUT_DIR, ...): resolved once, at import, in a fresh
    interpreter started in another folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PALRP_") and k != "XDG_CACHE_HOME"}
    env.update(HOME=str(tmp_path / "home"), PALRP_CHECKPOINT_DIR=str(tmp_path / "ckpt"),
               PALRP_SEED="7", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = {k: v for k, v in json.loads(proc.stdout).items()}
    assets = str(Path(config.__file__).parent / "assets")
    assert got == {
        "OUTPUT_DIR": str(tmp_path / "results"), "CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "CACHE_DIR": str(tmp_path / "home" / ".cache" / "palrp"), "ASSETS_DIR": assets,
        "DEMO_VISION_DIR": assets + "/vision", "DEMO_TEXT_DIR": assets + "/text",
        "IMAGENET_PATH": str(tmp_path / "imagenet"), "IMDB_CSV_PATH": str(tmp_path / "IMDB Dataset.csv"),
        "SEED": "7", "tiny": str(tmp_path / "ckpt" / "deit_tiny_patch16_224-a1311bcf.pth")}
