"""Per-sample metrics of attribution maps against the ground-truth evidence, and the 95%
bootstrap interval over samples and seeds together.

Every map is (B, N) over the task's positions; ``evidence`` (B, N) is True at the evidence.
Magnitudes are absolute values; the combined map at a position is ``|token| + |positional|``
(a channel the method does not have counts as 0). A sample whose map is all zero gives NaN
(no share is defined), and NaNs are left out of the summaries.
"""
from __future__ import annotations

import numpy as np
import torch

TIE = 1e-9


def _abs(x, like):
    return torch.zeros_like(like) if x is None else x.abs()


def combined(token, positional):
    like = token if token is not None else positional
    return _abs(token, like) + _abs(positional, like)


def _share(part, whole):
    whole = whole.double()
    out = part.double() / whole
    return torch.where(whole > 0, out, torch.full_like(out, float("nan")))


def positional_share(token, positional):
    """|positional| / (|token| + |positional|), summed over positions; (B,)."""
    pos = positional.abs().sum(1)
    return _share(pos, pos + token.abs().sum(1))


def evidence_mass(values, evidence):
    """Share of the map's magnitude on the evidence positions; (B,)."""
    magnitude = values.abs()
    return _share((magnitude * evidence).sum(1), magnitude.sum(1))


def pointing(values, evidence):
    """1 where the position of largest magnitude is evidence; (B,). (NaN for an all-zero map.)"""
    magnitude = values.abs()
    hit = evidence.gather(1, magnitude.argmax(1, keepdim=True))[:, 0].double()
    return torch.where(magnitude.sum(1) > 0, hit, torch.full_like(hit, float("nan")))


def win_rate(mass, reference_mass):
    """Per sample 1 if ``mass`` beats the reference, 0.5 for a tie (within 1e-9), else 0."""
    diff = mass - reference_mass
    out = torch.where(diff > TIE, 1.0, torch.where(diff < -TIE, 0.0, 0.5)).double()
    return torch.where(torch.isnan(diff), torch.full_like(out, float("nan")), out)


def conservation_residual(total, logit):
    """|sum of relevance - explained logit| / |logit|; (B,)."""
    return (total.double() - logit.double()).abs() / logit.double().abs().clamp(min=1e-12)


def shift(before, after):
    """Relative L1 change of a map: sum |a - b| / sum |b|; (B,)."""
    return _share((after - before).abs().sum(1), before.abs().sum(1))


def bootstrap_ci(per_seed: list[np.ndarray], resamples: int, seed: int = 0):
    """Mean and 95% percentile interval of the mean when both seeds and the samples within
    each seed are resampled with replacement (seed variance included). NaNs are dropped."""
    groups = [np.asarray(v, dtype=float) for v in per_seed]
    groups = [v[~np.isnan(v)] for v in groups]
    groups = [v for v in groups if len(v)]
    if not groups:
        return float("nan"), float("nan"), float("nan"), 0, 0
    mean = float(np.mean(np.concatenate(groups)))
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for r in range(resamples):
        chosen = rng.integers(len(groups), size=len(groups))
        total, count = 0.0, 0
        for k in chosen:
            v = groups[k]
            pick = v[rng.integers(len(v), size=len(v))]
            total += pick.sum()
            count += len(pick)
        stats[r] = total / count
    low, high = np.percentile(stats, [2.5, 97.5])
    return mean, float(low), float(high), len(groups), int(sum(len(v) for v in groups))
