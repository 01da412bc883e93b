"""Segmentation metrics (docs/protocols.md, section 1): hand-computed cases, sklearn's AP, thresholds, accumulation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from palrp.metrics.segmentation import (SegmentationAccumulator, average_precision, binarize, intersection_union,
                                  minmax_normalize, otsu_threshold, pixel_correct, prepare_maps,
                                  segmentation_ap, threshold)


def test_minmax_normalize_and_constant_map():
    maps = torch.tensor([[[1.0, 3.0], [5.0, 2.0]], [[7.0, 7.0], [7.0, 7.0]]])
    out = minmax_normalize(maps)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [1.0, 0.25]]))
    assert torch.equal(out[1], torch.zeros(2, 2))
    assert torch.equal(minmax_normalize(maps[:, None]), out)


def test_thresholds_by_hand():
    m = torch.tensor([[[0.0, 0.2], [0.4, 1.0]]])
    assert threshold(m, "mean").item() == pytest.approx(0.4)
    std = np.std([0.0, 0.2, 0.4, 1.0], ddof=1)
    assert threshold(m, "MoV").item() == pytest.approx(0.4 / (3 * std + 1e-10))
    assert binarize(m, "mean").tolist() == [[[False, False], [False, True]]]
    zero = torch.zeros(1, 3, 3)
    for kind in ("mean", "otsu", "mov"):
        t = threshold(zero, kind)
        assert torch.isfinite(t).all() and not binarize(zero, kind).any()
    with pytest.raises(ValueError, match="unknown threshold type"):
        threshold(m, "median")


def _otsu_numpy(img):
    """Otsu as the original evaluation computes it (256 bins on [0,1], bin centre of the best split)."""
    hist, bins = np.histogram(img.ravel(), bins=256, range=(0, 1))
    hist = hist.astype(float)
    centers = (bins[:-1] + bins[1:]) / 2
    w1, w2 = np.cumsum(hist), np.cumsum(hist[::-1])[::-1]
    m1 = np.cumsum(hist * centers) / w1
    m2 = (np.cumsum((hist * centers)[::-1]) / w2[::-1])[::-1]
    var = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return centers[np.argmax(var)]


def test_otsu_matches_reference_and_splits_modes():
    g = torch.Generator().manual_seed(0)
    maps = minmax_normalize(torch.rand(4, 16, 12, generator=g) ** 3)
    maps[1] = torch.round(maps[1] * 8) / 8                  # values exactly on bin edges
    got = otsu_threshold(maps)
    for i in range(4):
        assert got[i].item() == pytest.approx(_otsu_numpy(maps[i].numpy()), abs=1e-7)
    bimodal = torch.cat([torch.zeros(40), torch.full((60,), 0.9)]).view(1, 10, 10)
    assert 0 < otsu_threshold(bimodal).item() < 0.9
    assert binarize(bimodal, "otsu").sum().item() == 60


def test_pixel_accuracy_and_iou_by_hand():
    pred = torch.tensor([[[1, 1, 0], [0, 0, 0]]], dtype=torch.bool)
    mask = torch.tensor([[[1, 0, 0], [1, 0, 0]]])
    correct, total = pixel_correct(pred, mask)
    assert correct.tolist() == [4] and total.tolist() == [6]
    inter, union = intersection_union(pred, mask)
    assert inter.tolist() == [[3, 1]] and union.tolist() == [[5, 3]]


def test_average_precision_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(5, 200, generator=g)
    scores[:3] = torch.round(scores[:3] * 5) / 5              # many ties
    labels = torch.rand(5, 200, generator=g) > 0.7
    labels[4] = True                                          # all positive
    got = average_precision(scores, labels)
    for i in range(5):
        assert got[i].item() == pytest.approx(average_precision_score(labels[i].numpy(), scores[i].numpy()),
                                              abs=1e-12)


def test_segmentation_ap_is_two_channel_sklearn_ap():
    g = torch.Generator().manual_seed(2)
    maps = minmax_normalize(torch.round(torch.rand(3, 9, 7, generator=g) * 6))
    masks = (torch.rand(3, 9, 7, generator=g) > 0.5).long()
    masks[2] = 0                                              # no foreground
    got = segmentation_ap(maps, masks)
    for i in range(3):
        m, fg = maps[i].numpy().ravel(), masks[i].numpy().ravel()
        ref = average_precision_score(np.concatenate([1 - fg, fg]), np.concatenate([1 - m, m]))
        assert got[i].item() == pytest.approx(ref, abs=1e-12)


def _data(seed, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 4, 4, generator=g), (torch.rand(n, 8, 8, generator=g) > 0.5).long()


def test_accumulator_by_hand_and_upsampling():
    acc = SegmentationAccumulator()
    maps = torch.tensor([[[0.0, 0.2], [0.4, 1.0]]])
    mask = torch.tensor([[[0, 0], [1, 1]]])
    per = acc.update(maps, mask)
    r = acc.compute()
    assert r["pixel_accuracy"] == pytest.approx(75.0)
    assert r["iou"] == pytest.approx([2 / 3, 1 / 2]) and r["miou"] == pytest.approx(7 / 12)
    assert per["ap"][0] == pytest.approx(r["map"])
    coarse, masks = _data(0, 2)
    up = prepare_maps(coarse, (8, 8))
    ref = minmax_normalize(F.interpolate(coarse[:, None], size=(8, 8), mode="bilinear",
                                         align_corners=False)[:, 0])
    torch.testing.assert_close(up, ref)


def test_accumulator_resume_merge_and_constant_maps():
    maps, masks = _data(3)
    whole = SegmentationAccumulator("otsu")
    whole.update(maps, masks)
    first, second = SegmentationAccumulator("otsu"), SegmentationAccumulator("otsu")
    first.update(maps[:2], masks[:2])
    second.update(maps[2:], masks[2:])
    resumed = SegmentationAccumulator.from_state_dict(json.loads(json.dumps(first.state_dict())))
    resumed.update(maps[2:], masks[2:])
    merged = first.merge(second)
    for other in (resumed, merged):
        for k, v in whole.compute().items():
            assert other.compute()[k] == pytest.approx(v)
    with pytest.raises(ValueError, match="same --threshold-type"):
        SegmentationAccumulator("mean").load_state_dict(whole.state_dict())
    const = SegmentationAccumulator()
    const.update(torch.full((2, 4, 4), 3.0), masks[:2])
    assert all(np.isfinite(v) for v in (const.compute()["miou"], const.compute()["map"]))
