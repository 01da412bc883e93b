"""Every path and default of the project in one place.

Each value can be overridden by an environment variable (``PALRP_<NAME>``) and, in the
scripts, by a command-line flag of the same meaning. Nothing here is hard-wired into the
engine: the engine takes geometry from the model, and the scripts take paths from here.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent


def _path(name: str, default: Path | str) -> Path:
    """A path setting: ``PALRP_<name>`` wins over the default."""
    return Path(os.environ.get(f"PALRP_{name}", str(default))).expanduser()


# --- where things live -------------------------------------------------------------
ASSETS_DIR = _path("ASSETS_DIR", PROJECT_ROOT / "assets")
OUTPUT_DIR = _path("OUTPUT_DIR", PROJECT_ROOT / "results")
CHECKPOINT_DIR = _path("CHECKPOINT_DIR", PROJECT_ROOT / "checkpoints")

# Vision data: the ImageNet-Segmentation file of Guillaumin et al. and ImageNet validation.
IMAGENET_SEG_PATH = _path("IMAGENET_SEG_PATH", PROJECT_ROOT / "gtsegs_ijcv.mat")
IMAGENET_PATH = _path("IMAGENET_PATH", PROJECT_ROOT / "imagenet")  # holds val/<class>/<img>

# Official DeiT weights (facebookresearch/deit releases), looked up by --model-size.
DEIT_CHECKPOINTS = {
    "tiny": _path("DEIT_TINY", CHECKPOINT_DIR / "deit_tiny_patch16_224-a1311bcf.pth"),
    "small": _path("DEIT_SMALL", CHECKPOINT_DIR / "deit_small_patch16_224-cd65a155.pth"),
    "base": _path("DEIT_BASE", CHECKPOINT_DIR / "deit_base_patch16_224-b5f2ef4d.pth"),
}

# Llama models: local folders saved with save_pretrained (no hub downloads at run time).
LLAMA_MODELS = {
    "llama_tiny": _path("LLAMA_TINY", CHECKPOINT_DIR / "TinyLlama-1.1B-Chat-v1.0"),
    "llama_2_7b": _path("LLAMA_2_7B", CHECKPOINT_DIR / "Llama-2-7b-hf"),
    "llama_3_8b": _path("LLAMA_3_8B", CHECKPOINT_DIR / "Llama-3.1-8B-Instruct"),
}
IMDB_CSV_PATH = _path("IMDB_CSV_PATH", PROJECT_ROOT / "IMDB Dataset.csv")

# --- the embedded defaults (docs/protocols.md, section 6) -------------------------------------
DEMO_VISION_DIR = ASSETS_DIR / "vision"
DEMO_TEXT_DIR = ASSETS_DIR / "text"

# ImageNet normalisation used by DeiT.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SEED = int(os.environ.get("PALRP_SEED", 42))
