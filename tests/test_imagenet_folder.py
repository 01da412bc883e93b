"""ImageNet folder-per-class reader and the --fract subset (docs/protocols.md, section 2)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from palrp.data.imagenet import ImageNetFolder, subset_indices


def _make_tree(root, classes=("zebra", "Apple", "n01440764", "b_cls"), per_class=2):
    rng = np.random.default_rng(0)
    for c in classes:                         # created in a non-sorted order on purpose
        d = root / "val" / c
        d.mkdir(parents=True)
        for j in reversed(range(per_class)):
            arr = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"img{j}.png")
    (root / "val" / "zebra" / "notes.txt").write_text("not an image")
    Image.fromarray(np.full((6, 6), 200, dtype=np.uint8)).save(root / "val" / "Apple" / "gray.JPEG")
    return root


def test_label_order_matches_torchvision_imagefolder(tmp_path):
    root = _make_tree(tmp_path)
    ours = ImageNetFolder(root, 8)
    ref = ImageFolder(str(root / "val"))
    assert ours.classes == ref.classes and ours.class_to_idx == ref.class_to_idx
    assert ours.samples == ref.samples and ours.num_classes == 4
    assert [ours[k][1] for k in range(len(ours))] == ref.targets


def test_images_resized_in_unit_range(tmp_path):
    root = _make_tree(tmp_path)
    ds = ImageNetFolder(root, (6, 9))
    for k in range(len(ds)):
        x, label, index = ds[k]
        assert x.shape == (3, 6, 9) and x.dtype == torch.float32 and index == k
        assert 0.0 <= x.min() and x.max() <= 1.0
    path = ds.samples[3][0]
    ref = np.asarray(Image.open(path).convert("RGB").resize((9, 6), Image.BILINEAR)) / 255.0
    torch.testing.assert_close(ds[3][0], torch.from_numpy(ref).permute(2, 0, 1).float())
    gray = [k for k, (p, _) in enumerate(ds.samples) if p.endswith("gray.JPEG")][0]
    x = ds[gray][0]
    assert torch.allclose(x, torch.full_like(x, 200 / 255))   # grayscale read as RGB


def test_subset_indices_seeded_and_sorted(tmp_path):
    a = subset_indices(1000, 0.05)
    assert a == subset_indices(1000, 0.05, seed=42) and len(a) == 50 and a == sorted(a)
    assert a != subset_indices(1000, 0.05, seed=0)
    assert len(set(a)) == 50 and all(0 <= i < 1000 for i in a)
    root = _make_tree(tmp_path)
    full = ImageNetFolder(root, 8)
    idx = subset_indices(len(full), 0.5)
    sub = ImageNetFolder(root, 8, indices=idx)
    assert len(sub) == len(idx)
    for k, i in enumerate(idx):
        assert sub[k][2] == i and sub[k][1] == full.targets[i]
        torch.testing.assert_close(sub[k][0], full[i][0])


def test_bad_fract():
    with pytest.raises(ValueError, match="selects no image of 100"):
        subset_indices(100, 0.001)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        subset_indices(100, 1.5)


def test_bad_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*--demo"):
        ImageNetFolder(tmp_path / "nowhere", 8)
    with pytest.raises(FileNotFoundError, match="has no val/ folder"):
        ImageNetFolder(tmp_path, 8)
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no class folders"):
        ImageNetFolder(tmp_path, 8)
    (tmp_path / "val" / "cls").mkdir()
    (tmp_path / "val" / "cls" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="hold no images"):
        ImageNetFolder(tmp_path, 8)
