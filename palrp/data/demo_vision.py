"""The embedded vision default (docs/protocols.md, section 6): where its data and model live, and writing the data.

The data are written on first use, deterministically, into the user's cache folder
(``config.CACHE_DIR / "demo_data"``: ``$PALRP_CACHE_DIR``, else ``$XDG_CACHE_HOME/palrp``, else
``~/.cache/palrp``), never into the checkout or the installed package; the model ships inside the
package in ``config.DEMO_VISION_DIR`` (``palrp/assets/vision``, trained by
``scripts/train_demo_deit.py``).

- :func:`ensure_demo_seg`: the segmentation benchmark set in the ``gtsegs_ijcv.mat`` layout;
- :func:`ensure_demo_imagenet`: the perturbation set as ``val/<class_name>/*.png``;
- :func:`demo_model_path`: the small DeiT's safetensors file.

The set sizes keep the segmentation benchmark over all methods within minutes on 2 CPU cores.
A name change of the files (``_VERSION``) marks a change of the generator, so stale caches are
never reused.
"""
from __future__ import annotations

import os
from pathlib import Path

from palrp import config
from palrp.data.procedural_vision import CLASS_NAMES, write_gtsegs_demo, write_imagenet_demo

DEMO_IMAGE_SIZE = 64       # the demo model's input size (palrp/assets/vision/deit_demo.json)
DEMO_SEG_IMAGES = 128      # 16 per class
DEMO_SEG_SEED = 0
DEMO_IMAGENET_PER_CLASS = 16
DEMO_IMAGENET_SEED = 1
_VERSION = "v1"
DEMO_MODEL = config.DEMO_VISION_DIR / "deit_demo.safetensors"


def demo_cache_dir() -> Path:
    """Where the default demo sets are written: ``demo_data`` in the user's cache folder."""
    return Path(config.CACHE_DIR) / "demo_data"


def demo_model_path() -> Path:
    """The embedded DeiT's weights; a clear error if the file is missing from the package."""
    if not DEMO_MODEL.is_file():
        raise FileNotFoundError(f"{DEMO_MODEL} not found: it ships with the package "
                                f"(palrp/assets/vision); restore it with git checkout or reinstall "
                                f"the package, or retrain it with python scripts/train_demo_deit.py")
    return DEMO_MODEL


def ensure_demo_seg(path: str | os.PathLike | None = None) -> Path:
    """Write the demo segmentation set (``gtsegs_ijcv.mat`` layout) unless present; return its path."""
    path = Path(path) if path is not None else demo_cache_dir() / f"gtsegs_demo_{_VERSION}.mat"
    if not path.is_file():
        write_gtsegs_demo(path, DEMO_SEG_IMAGES, DEMO_IMAGE_SIZE, DEMO_SEG_SEED)
    return path


def ensure_demo_imagenet(root: str | os.PathLike | None = None) -> Path:
    """Write the demo perturbation set (``root/val/<class_name>/*.png``) unless complete; return ``root``.

    Written into a temporary folder and renamed, with a ``.complete`` marker, so an interrupted
    write is redone rather than read.
    """
    default = root is None
    root = demo_cache_dir() / f"imagenet_demo_{_VERSION}" if default else Path(root)
    if (root / ".complete").is_file():
        return root
    if root.exists() and not default:
        raise FileExistsError(f"{root} exists but is not a complete demo set; remove it yourself "
                              f"or choose another folder")
    from palrp.runtime.store import atomic_output_dir
    # an incomplete earlier write of the default set (inside our cache folder) is replaced
    with atomic_output_dir(root) as tmp:
        write_imagenet_demo(tmp, DEMO_IMAGENET_PER_CLASS, DEMO_IMAGE_SIZE, DEMO_IMAGENET_SEED)
        (tmp / ".complete").write_text(f"{len(CLASS_NAMES) * DEMO_IMAGENET_PER_CLASS} images\n")
    return root
