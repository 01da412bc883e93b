"""Every path and default of the project in one place (installed as ``palrp.config``).

Where each path comes from, first match wins:

1. an environment variable ``PALRP_<NAME>`` (``PALRP_OUTPUT_DIR``, ``PALRP_CHECKPOINT_DIR``,
   ``PALRP_IMAGENET_PATH``, ...; an empty value counts as unset);
2. in the scripts, the command-line flag of the same meaning (``--output-dir``, ``--model``,
   ``--data-path``, ...: the drivers use the values here as their flags' defaults);
3. the current working directory for data, models and outputs: ``./results``,
   ``./checkpoints``, ``./gtsegs_ijcv.mat``, ``./imagenet``, ``./IMDB Dataset.csv``;
4. the user's cache directory for what the project generates for itself (the procedural demo
   data sets): ``$PALRP_CACHE_DIR``, else ``$XDG_CACHE_HOME/palrp``, else ``~/.cache/palrp``;
5. the embedded defaults (a small DeiT, a word-level LM and classifier, their data) ship inside
   the package, ``palrp/assets/`` (``PALRP_ASSETS_DIR`` points elsewhere).

Nothing is derived from where this file lies apart from the shipped assets, so a read-only
checkout and an installed wheel behave alike. The resolver functions (:func:`output_dir`,
:func:`cache_dir`, ...) read the environment and the working directory when called; the
module-level names (``OUTPUT_DIR``, ``CACHE_DIR``, ...) are their values at import time, which is
what the drivers use. Nothing here is hard-wired into the engine: the engine takes geometry from
the model, and the scripts take paths from here.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_PREFIX = "PALRP_"


def env_path(name: str, default: Path | str) -> Path:
    """A path setting: ``PALRP_<name>`` (when set and not empty) wins over ``default``."""
    value = os.environ.get(ENV_PREFIX + name, "")
    return Path(value or default).expanduser()


def package_dir() -> Path:
    """The installed ``palrp`` package folder (the checkout's ``palrp/`` in an editable install)."""
    from importlib.resources import files
    return Path(str(files("palrp")))


# --- the resolvers ----------------------------------------------------------------------------
def assets_dir() -> Path:
    """The embedded defaults: ``palrp/assets`` inside the package (package data of the wheel)."""
    return env_path("ASSETS_DIR", package_dir() / "assets")


def output_dir() -> Path:
    """Where the drivers write results: ``./results`` under the working directory."""
    return env_path("OUTPUT_DIR", Path.cwd() / "results")


def checkpoint_dir() -> Path:
    """Where downloaded weights are looked up: ``./checkpoints`` under the working directory."""
    return env_path("CHECKPOINT_DIR", Path.cwd() / "checkpoints")


def cache_dir() -> Path:
    """What the project generates for itself (the demo data sets): ``$PALRP_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/palrp`` (an absolute ``XDG_CACHE_HOME`` only, as the XDG spec says), else
    ``~/.cache/palrp``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path("~/.cache").expanduser()
    return env_path("CACHE_DIR", base / "palrp")


def imagenet_seg_path() -> Path:
    """The ImageNet-Segmentation file of Guillaumin et al.: ``./gtsegs_ijcv.mat``."""
    return env_path("IMAGENET_SEG_PATH", Path.cwd() / "gtsegs_ijcv.mat")


def imagenet_path() -> Path:
    """ImageNet validation, holding ``val/<class>/<img>``: ``./imagenet``."""
    return env_path("IMAGENET_PATH", Path.cwd() / "imagenet")


def imdb_csv_path() -> Path:
    """The Kaggle IMDB CSV: ``./IMDB Dataset.csv``."""
    return env_path("IMDB_CSV_PATH", Path.cwd() / "IMDB Dataset.csv")


def deit_checkpoints() -> dict[str, Path]:
    """Official DeiT weights (facebookresearch/deit releases), looked up by ``--model-size``."""
    root = checkpoint_dir()
    return {
        "tiny": env_path("DEIT_TINY", root / "deit_tiny_patch16_224-a1311bcf.pth"),
        "small": env_path("DEIT_SMALL", root / "deit_small_patch16_224-cd65a155.pth"),
        "base": env_path("DEIT_BASE", root / "deit_base_patch16_224-b5f2ef4d.pth"),
    }


def llama_models() -> dict[str, Path]:
    """Llama models: local folders saved with save_pretrained (no hub downloads at run time);
    where a folder does not exist, the drivers read the model of :data:`LLAMA_HUB_IDS` from the
    Hugging Face cache."""
    root = checkpoint_dir()
    return {
        "llama_tiny": env_path("LLAMA_TINY", root / "TinyLlama-1.1B-Chat-v1.0"),
        "llama_2_7b": env_path("LLAMA_2_7B", root / "Llama-2-7b-hf"),
        "llama_3_8b": env_path("LLAMA_3_8B", root / "Llama-3.1-8B-Instruct"),
    }


#: Hub ids of the named models (``--model-size``), read from the Hugging Face cache
#: (``HF_HOME``) where the configured file or folder does not exist (palrp/loaders/hub.py):
#: timm's copies of the official DeiT weights, and the Llama checkpoints.
DEIT_HUB_IDS = {
    "tiny": "timm/deit_tiny_patch16_224.fb_in1k",
    "small": "timm/deit_small_patch16_224.fb_in1k",
    "base": "timm/deit_base_patch16_224.fb_in1k",
}
LLAMA_HUB_IDS = {
    "llama_tiny": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "llama_2_7b": "meta-llama/Llama-2-7b-hf",
    "llama_3_8b": "meta-llama/Llama-3.1-8B-Instruct",
}


# --- the values at import time (what the drivers use) ----------------------------------------
ASSETS_DIR = assets_dir()
OUTPUT_DIR = output_dir()
CHECKPOINT_DIR = checkpoint_dir()
CACHE_DIR = cache_dir()

# Vision data: the ImageNet-Segmentation file of Guillaumin et al. and ImageNet validation.
IMAGENET_SEG_PATH = imagenet_seg_path()
IMAGENET_PATH = imagenet_path()  # holds val/<class>/<img>

DEIT_CHECKPOINTS = deit_checkpoints()
LLAMA_MODELS = llama_models()
IMDB_CSV_PATH = imdb_csv_path()

# --- the embedded defaults (docs/protocols.md, section 6) -------------------------------------
DEMO_VISION_DIR = ASSETS_DIR / "vision"
DEMO_TEXT_DIR = ASSETS_DIR / "text"

# ImageNet normalisation used by DeiT.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SEED = int(os.environ.get("PALRP_SEED") or 42)
