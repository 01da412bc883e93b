"""Procedural images, the embedded vision default and its model (docs/protocols.md, section 6)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torchvision.datasets import ImageFolder

from palrp import config
import palrp.data.demo_vision as demo
from palrp.data.gtsegs import GtSegsFile
from palrp.data.imagenet import ImageNetFolder
from palrp.data.procedural_vision import (CLASS_NAMES, NUM_CLASSES, balanced_labels, generate, write_gtsegs_demo,
                                    write_imagenet_demo)


def test_deterministic_and_batch_independent():
    a_img, a_mask, a_lab = generate(7, range(12), 32)
    b_img, b_mask, b_lab = generate(7, range(12), 32)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask) and np.array_equal(a_lab, b_lab)
    one = generate(7, [5], 32)
    assert np.array_equal(one[0][0], a_img[5]) and np.array_equal(one[1][0], a_mask[5])
    other = generate(8, range(12), 32)
    assert not np.array_equal(other[0], a_img)


def test_images_masks_and_labels():
    imgs, masks, labels = generate(0, range(2 * NUM_CLASSES), 48, balanced_labels(2 * NUM_CLASSES))
    assert imgs.shape == (16, 48, 48, 3) and imgs.dtype == np.uint8
    assert masks.shape == (16, 48, 48) and set(np.unique(masks)) == {0, 1}
    frac = masks.reshape(16, -1).mean(1)
    assert (frac > 0.03).all() and (frac < 0.7).all()
    assert labels.tolist() == list(range(NUM_CLASSES)) * 2
    assert NUM_CLASSES >= 8 and list(CLASS_NAMES) == sorted(CLASS_NAMES)
    with pytest.raises(ValueError, match="out of range"):
        generate(0, [0], 32, [NUM_CLASSES])


def test_background_carries_no_class_evidence():
    """Same scene, two classes: the pixels outside both objects are identical."""
    for i in range(4):
        a = generate(3, [i], 40, [0])
        b = generate(3, [i], 40, [5])
        outside = (a[1][0] == 0) & (b[1][0] == 0)
        assert outside.sum() > 0.4 * outside.size
        assert np.array_equal(a[0][0][outside], b[0][0][outside])


def test_demo_writers_round_trip(tmp_path):
    path = write_gtsegs_demo(tmp_path / "seg.mat", 10, size=32, seed=4)
    imgs, masks, _ = generate(4, range(10), 32, balanced_labels(10))
    g = GtSegsFile(path)
    assert len(g) == 10
    for i in (0, 9):
        assert np.array_equal(g.image(i), imgs[i]) and np.array_equal(g.mask(i), masks[i])
    root = write_imagenet_demo(tmp_path / "inet", 1, size=32, seed=5)
    ref = ImageFolder(str(root / "val"))
    assert ref.classes == list(CLASS_NAMES) and ref.targets == list(range(NUM_CLASSES))
    ours = ImageNetFolder(root, 32)
    imgs, _, labels = generate(5, range(NUM_CLASSES), 32, balanced_labels(NUM_CLASSES))
    for k in range(NUM_CLASSES):
        x, label, _ = ours[k]
        assert label == labels[k]
        assert torch.equal((x * 255).round().byte().permute(1, 2, 0), torch.from_numpy(imgs[k]))


def test_ensure_demo_sets(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_SEG_IMAGES", 8)
    monkeypatch.setattr(demo, "DEMO_IMAGENET_PER_CLASS", 1)
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    seg = demo.ensure_demo_seg()
    assert seg.parent == tmp_path / "cache" / "demo_data" and len(GtSegsFile(seg)) == 8
    stamp = seg.stat().st_mtime_ns
    assert demo.ensure_demo_seg() == seg and seg.stat().st_mtime_ns == stamp     # not rewritten
    root = demo.ensure_demo_imagenet()
    assert len(ImageNetFolder(root, 64)) == NUM_CLASSES and (root / ".complete").is_file()
    assert demo.ensure_demo_imagenet() == root
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileExistsError, match="not a complete demo set"):
        demo.ensure_demo_imagenet(tmp_path / "mine")


def test_shipped_demo_model():
    path = demo.demo_model_path()
    assert path.stat().st_size <= 5_000_000
    with safe_open(str(path), "pt") as f:
        cfg = json.loads(f.metadata()["config"])
    side = json.loads(path.with_suffix(".json").read_text())
    assert cfg["class_names"] == list(CLASS_NAMES) and cfg["num_classes"] == NUM_CLASSES
    assert cfg["img_size"] == demo.DEMO_IMAGE_SIZE and side["heldout_accuracy"] >= 0.9
    from palrp.loaders.checkpoints import load_deit

    model = load_deit(path)
    imgs, _, labels = generate(demo.DEMO_SEG_SEED, range(32), cfg["img_size"], balanced_labels(32))
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        acc = (model(x).argmax(-1).numpy() == labels).mean()
    assert acc >= 0.85
