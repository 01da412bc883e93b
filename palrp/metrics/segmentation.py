"""Metrics of the ImageNet-Segmentation benchmark (docs/protocols.md, section 1), torch-native and batched.

For a batch of explanation maps (B,H,W) and ground-truth masks (B,H,W) in {0,1}:

1. each map is upsampled (bilinear) to the mask size if it is coarser, then min-max normalised per
   image; a constant map becomes all zeros (never NaN);
2. a per-image threshold t: the map's mean (default), Otsu's threshold, or "MoV"
   ``mean / (3 * std + 1e-10)`` (std with Bessel's correction, as ``torch.std``); foreground = map > t;
3. pixel accuracy = correct pixels / all pixels, summed over the data set;
4. mIoU = mean over {background, foreground} of (sum of intersections / sum of unions) over the data set;
5. mAP = mean over images of ``sklearn.metrics.average_precision_score`` of the flattened two-channel
   one-hot mask against the scores ``[1 - map, map]``.

An image whose mask holds one class only (no foreground pixel: "empty"; no background pixel:
"full") is degenerate: its AP and IoU of the missing class are undefined, so it is counted
(``n_degenerate``), reported per image, and left out of every sum above; the numbers of the other
images are unchanged.

:class:`SegmentationAccumulator` keeps the data-set sums; it can be saved (``state_dict``), restored
(``load_state_dict``) to resume a run, and merged (``merge``) across processes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

THRESHOLDS = ("mean", "otsu", "mov")
#: Version of the segmentation protocol, part of every run's identity (results of another
#: version are never mixed in).
#: 2: images with a degenerate (single-class) mask are excluded from every metric and counted;
#: per-image records carry ``degenerate`` (1 had neither, and averaged such images in).
PROTOCOL_VERSION = 2
_EPS = 2.220446049250313e-16  # np.spacing(1.0): the original's guard against 0/0 in the ratios


def _as_maps(maps: torch.Tensor) -> torch.Tensor:
    """(B,H,W) or (B,1,H,W) -> (B,H,W) floating."""
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(f"maps have shape {tuple(maps.shape)}; expected (B, H, W) or (B, 1, H, W)")
    return maps if maps.is_floating_point() else maps.float()


def _as_masks(masks: torch.Tensor) -> torch.Tensor:
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ValueError(f"masks have shape {tuple(masks.shape)}; expected (B, H, W)")
    return masks > 0


def minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalisation to [0, 1]; a constant map gives zeros, never NaN."""
    maps = _as_maps(maps)
    flat = maps.reshape(len(maps), -1)
    lo = flat.min(dim=1, keepdim=True).values
    rng = flat.max(dim=1, keepdim=True).values - lo
    out = torch.where(rng > 0, (flat - lo) / torch.where(rng > 0, rng, torch.ones_like(rng)),
                      torch.zeros_like(flat))
    return out.reshape(maps.shape)


def prepare_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample maps to ``size`` (bilinear, as the original) if they differ, then min-max normalise."""
    maps = _as_maps(maps)
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return minmax_normalize(maps)


def otsu_threshold(maps: torch.Tensor) -> torch.Tensor:
    """Otsu's threshold per image, for maps normalised to [0, 1]; returns (B,).

    The original's procedure: 256-bin histogram over [0, 1] (``numpy.histogram`` bin assignment,
    reproduced exactly), between-class variance ``w1[:-1] * w2[1:] * (m1[:-1] - m2[1:])**2`` and the
    centre of the best bin (as ``skimage.filters.threshold_otsu``). Empty classes count as zero
    variance (a constant map gives bin 0).
    """
    maps = _as_maps(maps)
    b, nbins = len(maps), 256
    v = maps.reshape(b, -1).double()
    edges = torch.linspace(0.0, 1.0, nbins + 1, dtype=torch.float64, device=v.device)
    idx = torch.clamp((v * nbins).floor().long(), 0, nbins - 1)
    idx = idx - (v < edges[idx]).long()
    idx = idx + ((v >= edges[(idx + 1).clamp(max=nbins)]) & (idx != nbins - 1)).long()
    inside = (v >= 0) & (v <= 1)
    hist = torch.zeros(b, nbins, dtype=torch.float64, device=v.device)
    hist.scatter_add_(1, idx.clamp(0, nbins - 1), inside.double())
    centers = (edges[:-1] + edges[1:]) / 2
    w1 = hist.cumsum(1)
    w2 = hist.flip(1).cumsum(1).flip(1)
    m1 = (hist * centers).cumsum(1) / w1
    m2 = (hist * centers).flip(1).cumsum(1).flip(1) / w2
    var = torch.nan_to_num(w1[:, :-1] * w2[:, 1:] * (m1[:, :-1] - m2[:, 1:]) ** 2, nan=0.0)
    return centers[var.argmax(1)].to(maps.dtype)


def threshold(maps: torch.Tensor, kind: str = "mean") -> torch.Tensor:
    """Per-image threshold (B,) of normalised maps: ``mean``, ``otsu`` or ``mov`` (docs/protocols.md, section 1)."""
    maps = _as_maps(maps)
    kind = kind.lower()
    flat = maps.reshape(len(maps), -1)
    if kind == "mean":
        return flat.mean(1)
    if kind == "otsu":
        return otsu_threshold(maps)
    if kind == "mov":
        return flat.mean(1) / (3 * flat.std(1) + 1e-10)
    raise ValueError(f"unknown threshold type {kind!r}; choose one of {', '.join(THRESHOLDS)}")


def binarize(maps: torch.Tensor, kind: str = "mean") -> torch.Tensor:
    """Foreground (B,H,W) bool: normalised map > its per-image threshold."""
    maps = _as_maps(maps)
    return maps > threshold(maps, kind).view(-1, 1, 1)


def pixel_correct(pred: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: number of correctly labelled pixels and number of pixels, int64 (B,) each."""
    masks = _as_masks(masks)
    correct = (pred.bool() == masks).reshape(len(masks), -1).sum(1)
    total = torch.full_like(correct, masks[0].numel())
    return correct, total


def intersection_union(pred: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and class (background 0, foreground 1): intersection and union, int64 (B, 2) each."""
    masks = _as_masks(masks)
    pred = pred.bool()
    b = len(masks)
    inter = torch.stack([(~pred & ~masks).reshape(b, -1).sum(1), (pred & masks).reshape(b, -1).sum(1)], 1)
    union = torch.stack([(~pred | ~masks).reshape(b, -1).sum(1), (pred | masks).reshape(b, -1).sum(1)], 1)
    return inter, union


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Row-wise ``sklearn.metrics.average_precision_score(labels[i], scores[i])``; (B,) float64.

    AP = sum over distinct score thresholds (descending) of (R_k - R_{k-1}) * P_k, tied scores forming
    one threshold, as sklearn does. A row without positives gives 0 (sklearn warns and gives 0 too).
    """
    if scores.shape != labels.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must both be (B, N)")
    s, order = scores.sort(dim=1, descending=True)
    y = labels.gather(1, order).double()
    tp = y.cumsum(1)
    rank = torch.arange(1, s.shape[1] + 1, dtype=torch.float64, device=s.device)
    end = torch.ones_like(s, dtype=torch.bool)          # last item of each group of tied scores
    end[:, :-1] = s[:, 1:] != s[:, :-1]
    tp_end = torch.where(end, tp, torch.zeros_like(tp))
    prev = torch.cummax(tp_end, 1).values
    prev = torch.cat([torch.zeros_like(prev[:, :1]), prev[:, :-1]], 1)
    positives = tp[:, -1]
    gain = torch.where(end, (tp - prev) * tp / rank, torch.zeros_like(tp)).sum(1)
    return torch.where(positives > 0, gain / positives.clamp(min=1), torch.zeros_like(gain))


def segmentation_ap(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-image AP of the one-hot mask (2 channels) against ``[1 - map, map]`` (docs/protocols.md, section 1); (B,)."""
    maps = _as_maps(maps)
    fg = _as_masks(masks).reshape(len(maps), -1)
    m = maps.reshape(len(maps), -1)
    scores = torch.cat([1 - m, m], 1)
    labels = torch.cat([~fg, fg], 1)
    return average_precision(scores, labels)


def degenerate_kind(masks: torch.Tensor) -> list[str | None]:
    """Per image: ``"empty"`` (no foreground pixel), ``"full"`` (no background pixel) or None
    (both classes present, the metrics are defined)."""
    fg = _as_masks(masks)
    fg = fg.reshape(len(fg), -1)
    empty, full = (~fg.any(1)).tolist(), fg.all(1).tolist()
    return ["empty" if e else "full" if f else None for e, f in zip(empty, full)]


class SegmentationAccumulator:
    """Data-set sums of the metrics of docs/protocols.md, section 1; resumable (state_dict) and mergeable.

    ``update(maps, masks)`` takes raw maps (any scale; upsampled and min-max normalised here) and
    masks (B,H,W) in {0,1}, and returns the per-image values (for logging or per-image files).
    Images with a degenerate mask (:func:`degenerate_kind`) are counted in ``n_degenerate`` and
    left out of the sums; their per-image ``ap`` is None (undefined).
    """

    def __init__(self, threshold: str = "mean"):
        if threshold.lower() not in THRESHOLDS:
            raise ValueError(f"unknown threshold type {threshold!r}; choose one of {', '.join(THRESHOLDS)}")
        self.threshold = threshold.lower()
        self.correct = 0
        self.labeled = 0
        self.inter = [0, 0]
        self.union = [0, 0]
        self.ap_sum = 0.0
        self.n_images = 0
        self.n_degenerate = 0

    @torch.no_grad()
    def update(self, maps: torch.Tensor, masks: torch.Tensor) -> dict:
        masks = _as_masks(masks)
        maps = prepare_maps(maps, tuple(masks.shape[-2:]))
        if len(maps) != len(masks):
            raise ValueError(f"{len(maps)} maps but {len(masks)} masks; give one mask per map")
        pred = binarize(maps, self.threshold)
        correct, total = pixel_correct(pred, masks)
        inter, union = intersection_union(pred, masks)
        ap = segmentation_ap(maps, masks)
        kinds = degenerate_kind(masks)
        keep = torch.tensor([k is None for k in kinds], dtype=torch.bool)
        self.correct += int(correct[keep].sum())
        self.labeled += int(total[keep].sum())
        self.inter = [a + int(b) for a, b in zip(self.inter, inter[keep].sum(0).tolist())]
        self.union = [a + int(b) for a, b in zip(self.union, union[keep].sum(0).tolist())]
        self.ap_sum += float(ap[keep].sum())
        self.n_images += int(keep.sum())
        self.n_degenerate += len(kinds) - int(keep.sum())
        return {"correct": correct.tolist(), "pixels": total.tolist(), "intersection": inter.tolist(),
                "union": union.tolist(),
                "ap": [v if k is None else None for v, k in zip(ap.tolist(), kinds)],
                "degenerate": kinds}

    def compute(self) -> dict:
        """``pixel_accuracy`` (%), ``miou``, ``map``, ``iou`` per class over the ``n_images``
        images with a two-class mask, and ``n_degenerate`` (images left out). Without any
        two-class image the metrics are None (undefined), never a number."""
        if self.n_images == 0:
            return {"pixel_accuracy": None, "miou": None, "map": None, "iou": [None, None],
                    "n_images": 0, "n_degenerate": self.n_degenerate}
        iou = [i / (_EPS + u) for i, u in zip(self.inter, self.union)]
        return {"pixel_accuracy": 100.0 * self.correct / (_EPS + self.labeled),
                "miou": sum(iou) / 2, "map": self.ap_sum / self.n_images,
                "iou": iou, "n_images": self.n_images, "n_degenerate": self.n_degenerate}

    def state_dict(self) -> dict:
        """Plain, JSON-serialisable state."""
        return {"threshold": self.threshold, "correct": self.correct, "labeled": self.labeled,
                "inter": list(self.inter), "union": list(self.union), "ap_sum": self.ap_sum,
                "n_images": self.n_images, "n_degenerate": self.n_degenerate}

    def load_state_dict(self, state: dict) -> "SegmentationAccumulator":
        if state.get("threshold") != self.threshold:
            raise ValueError(f"saved state uses threshold {state.get('threshold')!r}, this run uses "
                             f"{self.threshold!r}; resume with the same --threshold-type")
        self.correct, self.labeled = int(state["correct"]), int(state["labeled"])
        self.inter = [int(x) for x in state["inter"]]
        self.union = [int(x) for x in state["union"]]
        self.ap_sum, self.n_images = float(state["ap_sum"]), int(state["n_images"])
        self.n_degenerate = int(state.get("n_degenerate", 0))
        return self

    @classmethod
    def from_state_dict(cls, state: dict) -> "SegmentationAccumulator":
        return cls(state["threshold"]).load_state_dict(state)

    def merge(self, other: "SegmentationAccumulator") -> "SegmentationAccumulator":
        """Add another accumulator's sums (e.g. another rank's shard) into this one; returns self."""
        if other.threshold != self.threshold:
            raise ValueError(f"cannot merge threshold {other.threshold!r} into {self.threshold!r}")
        self.correct += other.correct
        self.labeled += other.labeled
        self.inter = [a + b for a, b in zip(self.inter, other.inter)]
        self.union = [a + b for a, b in zip(self.union, other.union)]
        self.ap_sum += other.ap_sum
        self.n_images += other.n_images
        self.n_degenerate += other.n_degenerate
        return self
