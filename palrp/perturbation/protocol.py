"""The ImageNet perturbation protocol (docs/protocols.md, section 2), batched and device-agnostic.

For each image and each explanation map (B, H, W):

- the map is min-max normalised per sample (:func:`palrp.metrics.segmentation.minmax_normalize`, a
  constant map becomes zeros, never NaN);
- **positive** test: pixels are removed most relevant first; **negative** test: least relevant first
  (the map is negated). The removal order is a stable sort, so tied pixels go in raster order
  (top-left first) whatever the batch, the device or the number of processes. The original took
  ``torch.topk(map, k)`` afresh at every step; which of several equal values ``topk`` returns is
  unspecified (it differs between CPU and CUDA and with ``k``, and the sets need not even be
  nested from one step to the next), so no fixed order reproduces it: a stable order is the
  deterministic choice, and it agrees with the original wherever the map has no ties at the
  cut;
- at each step ``s`` in :data:`STEPS` (10%..90%) the first ``k_s = int(s * H * W)`` pixels of that
  order are replaced (:func:`removal_counts`, the original's ``int(base_size * step)`` in float64
  with ``base_size = H * W`` instead of its fixed 224 * 224), starting again from the clean image
  each time, in all channels, in [0, 1] space; the image is normalised only just before the
  model;
- replacement (``kind``): ``zero`` (0 in every channel, the paper's protocol), ``blur`` (the same
  pixel of a Gaussian-blurred copy of the image, see :func:`blur_parameters`) or ``mean`` (the
  image's own per-channel mean);
- score: the class the model predicts for every perturbed image; accuracy against the originally
  predicted class ("predicted", explained class = the prediction) or against the label ("target",
  explained class = the label).

AUCs (:func:`auc_steps`, :func:`auc_with_clean`): the trapezoid over the 9 steps with x = 0.1..0.9
(the original's convention, accuracy as a fraction), and Chefer et al.'s: the curve with the clean
0% point first, trapezoid over x = 0, 0.1, ..., 0.9, times 100. Lower is better for the positive
test, higher for the negative one.

All ``TESTS x MODES x STEPS x B`` perturbed images of a batch are built on the fly and scored in
forward passes of ``chunk`` images (:func:`predict_perturbed`), never one image at a time.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from palrp.metrics.segmentation import minmax_normalize
from palrp.loaders.vision_model import normalize

__all__ = ["PROTOCOL_VERSION", "STEPS", "TESTS", "MODES", "REPLACEMENTS", "BLUR_SIGMA_FRACTION", "removal_counts",
           "removal_ranks", "removal_masks", "blur_parameters", "gaussian_blur",
           "replacement_values", "perturb", "predict_perturbed", "accuracy_curve", "auc_steps",
           "auc_with_clean", "summarize"]

#: Version of this protocol, part of every run's identity (2: the original's removal counts);
#: stored scores of another version are never reused.
PROTOCOL_VERSION = 2
#: Fractions of the pixels removed (docs/protocols.md, section 2).
STEPS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: positive: most relevant pixels first; negative: least relevant first.
TESTS: tuple[str, ...] = ("positive", "negative")
#: predicted: explain the predicted class, score against it; target: explain the label, score against it.
MODES: tuple[str, ...] = ("predicted", "target")
REPLACEMENTS: tuple[str, ...] = ("zero", "blur", "mean")
#: Gaussian sigma of the ``blur`` replacement as a fraction of the shorter image side
#: (7 px at 224, 2 px at 64); geometry follows the image, never a constant size.
BLUR_SIGMA_FRACTION = 1.0 / 32.0


def removal_counts(n_pixels: int, steps: Sequence[float] = STEPS) -> list[int]:
    """Pixels removed at each step: ``int(n_pixels * step)`` in float64, truncated exactly as the
    original computed it, float rounding included (90 pixels at 0.7: 62, since
    ``0.7 * 90 == 62.99999999999999``; at 224 x 224 no step is affected)."""
    return [int(n_pixels * step) for step in steps]


def removal_ranks(maps: torch.Tensor, positive: bool) -> torch.Tensor:
    """(B, H*W) long: each pixel's position in the removal order (0 = removed first).

    The map is min-max normalised per sample; the positive test orders by decreasing relevance,
    the negative test by decreasing negated relevance (least relevant first). Ties keep raster
    order (stable sort).
    """
    if maps.dim() != 3:
        raise ValueError(f"maps have shape {tuple(maps.shape)}; expected (B, H, W)")
    key = minmax_normalize(maps.float()).flatten(1)
    if not positive:
        key = -key
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def removal_masks(maps: torch.Tensor, positive: bool, steps: Sequence[float] = STEPS) -> torch.Tensor:
    """(S, B, H, W) bool: the pixels removed at each step (True = removed)."""
    ranks = removal_ranks(maps, positive)
    counts = torch.tensor(removal_counts(ranks.shape[1], steps), device=ranks.device)
    return (ranks[None] < counts[:, None, None]).view(len(steps), *maps.shape)


def blur_parameters(height: int, width: int) -> tuple[float, int]:
    """(sigma, kernel size) of the ``blur`` replacement for an H x W image.

    ``sigma = BLUR_SIGMA_FRACTION * min(H, W)``; the kernel covers +-3 sigma
    (``2 * ceil(3 sigma) + 1`` taps), limited to what reflect padding allows (radius < min(H, W)).
    """
    side = min(height, width)
    sigma = BLUR_SIGMA_FRACTION * side
    radius = min(max(1, math.ceil(3 * sigma)), side - 1)
    return sigma, 2 * radius + 1


def gaussian_blur(images: torch.Tensor, sigma: float | None = None,
                  kernel_size: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) images with reflect padding; defaults from
    :func:`blur_parameters`."""
    default_sigma, default_size = blur_parameters(*images.shape[-2:])
    sigma = default_sigma if sigma is None else sigma
    kernel_size = default_size if kernel_size is None else kernel_size
    radius = kernel_size // 2
    if radius == 0 or sigma <= 0:
        return images.clone()
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def replacement_values(images01: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, C, H, W) values that removed pixels take: zeros, the blurred image, or the per-image
    channel mean."""
    if kind == "zero":
        return torch.zeros_like(images01)
    if kind == "blur":
        return gaussian_blur(images01)
    if kind == "mean":
        return images01.mean(dim=(2, 3), keepdim=True).expand_as(images01)
    raise ValueError(f"unknown perturbation {kind!r}; choose one of {', '.join(REPLACEMENTS)}")


def perturb(images01: torch.Tensor, maps: torch.Tensor, positive: bool, kind: str = "zero",
            steps: Sequence[float] = STEPS) -> torch.Tensor:
    """(S, B, C, H, W): the perturbed [0, 1] images of every step (each from the clean image).

    Materialises every step at once; :func:`predict_perturbed` builds them chunk by chunk instead.
    """
    masks = removal_masks(maps, positive, steps)[:, :, None]
    return torch.where(masks, replacement_values(images01, kind)[None], images01[None])


@torch.no_grad()
def predict_perturbed(model, images01: torch.Tensor, maps_list: Sequence[torch.Tensor],
                      positive_list: Sequence[bool], kind: str, chunk: int,
                      steps: Sequence[float] = STEPS) -> torch.Tensor:
    """Predicted classes of every perturbed image: (len(maps_list), S, B) long.

    ``maps_list[c]`` (B, H, W) with ``positive_list[c]`` defines one (test, mode) combination. The
    ``C*S*B`` perturbed images are built on the fly in blocks of ``chunk`` images, each block
    normalised with the model's mean/std (:func:`palrp.loaders.vision_model.normalize`) and scored in one forward pass.
    """
    if chunk < 1:
        raise ValueError(f"chunk {chunk} must be at least 1")
    batch, channels, height, width = images01.shape
    ranks = torch.stack([removal_ranks(m.to(images01.device), p)
                         for m, p in zip(maps_list, positive_list)])          # (C, B, HW)
    counts = torch.tensor(removal_counts(height * width, steps), device=images01.device)
    values = replacement_values(images01, kind)
    n_steps, total = len(steps), len(maps_list) * len(steps) * batch
    preds = torch.empty(total, dtype=torch.long)
    for start in range(0, total, chunk):
        item = torch.arange(start, min(start + chunk, total), device=images01.device)
        combo, step, sample = item // (n_steps * batch), (item // batch) % n_steps, item % batch
        removed = (ranks[combo, sample] < counts[step][:, None]).view(-1, 1, height, width)
        x = torch.where(removed, values[sample], images01[sample])
        preds[start:start + len(item)] = model(normalize(model, x)).argmax(dim=-1).cpu()
    return preds.view(len(maps_list), n_steps, batch)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid rule (numpy's ``trapz`` was renamed across the supported versions)."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def accuracy_curve(step_preds: np.ndarray, reference: np.ndarray) -> list[float]:
    """Fraction of samples whose prediction equals ``reference`` at each step: (N, S) vs (N,)."""
    step_preds, reference = np.asarray(step_preds), np.asarray(reference)
    return (step_preds == reference[:, None]).mean(axis=0).astype(float).tolist()


def auc_steps(curve: Sequence[float], steps: Sequence[float] = STEPS) -> float:
    """The original's AUC: trapezoid of the 9-step curve over x = 0.1..0.9."""
    return _trapezoid(np.asarray(curve, dtype=float), np.asarray(steps, dtype=float))


def auc_with_clean(clean: float, curve: Sequence[float], steps: Sequence[float] = STEPS) -> float:
    """Chefer et al.'s AUC: the curve with the clean 0% point first, trapezoid over
    x = 0, 0.1, ..., 0.9, times 100."""
    y = np.concatenate([[clean], np.asarray(curve, dtype=float)])
    x = np.concatenate([[0.0], np.asarray(steps, dtype=float)])
    return 100.0 * _trapezoid(y, x)


def summarize(records: Iterable[dict], steps: Sequence[float] = STEPS) -> dict:
    """Curves and AUCs of one method from per-sample records.

    A record holds ``label``, ``pred`` (the clean prediction) and ``<test>.<mode>``: the S predicted
    classes of the perturbed images. Returns ``{"n_images", "clean_accuracy", test: {mode: {...}}}``
    where each entry has ``curve`` (S accuracies), ``auc``, ``curve_with_clean`` (S+1, from 0%)
    and ``auc_with_clean`` (x100).
    """
    records = list(records)
    if not records:
        raise ValueError("no per-sample record to summarise")
    label = np.array([r["label"] for r in records])
    pred = np.array([r["pred"] for r in records])
    reference = {"predicted": pred, "target": label}
    out: dict = {"n_images": len(records), "clean_accuracy": float((pred == label).mean())}
    for test in TESTS:
        out[test] = {}
        for mode in MODES:
            preds = np.array([r[test][mode] for r in records])
            curve = accuracy_curve(preds, reference[mode])
            clean = float((pred == reference[mode]).mean())
            out[test][mode] = {"curve": curve, "auc": auc_steps(curve, steps),
                               "curve_with_clean": [clean] + curve,
                               "auc_with_clean": auc_with_clean(clean, curve, steps)}
    return out
