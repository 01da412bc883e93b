"""The token-perturbation protocol of the NLP evaluations (docs/protocols.md), task-agnostic.

Per sample, given its token relevance r over the N perturbable tokens:

- orderings: O1 = descending r; O2 = O3 = ascending |r| (IMDB) or ascending r (ARC, Wikipedia);
  ties keep token order (stable sort). The original sorted with numpy's default (unstable)
  ``argsort`` and reversed it for O1, so its order among exactly equal relevances is unspecified;
  equal values do not occur in real-valued relevance, so the choice moves no reported number;
- fractions ``numpy.linspace(0, 1, 11)`` and ``k = int(numpy.ceil(frac * N))`` tokens per step,
  in float64 exactly as the original computed them (:func:`token_counts`): linspace gives
  0.30000000000000004, 0.6000000000000001 and 0.7000000000000001, so one token more is perturbed
  at 30%, 60% and 70% whenever ``frac * N`` is an integer there (N = 10:
  0, 1, 2, 4, 4, 5, 7, 8, 8, 9, 10). The paper's numbers were made with these counts;
  ``exact=True`` gives ``ceil(i * N / 10)`` instead (the ``--exact-counts`` option);
- **generate** (insertion): every perturbable token replaced, then the first k of O1 (and,
  separately, of O2) restored;
- **pruning** (deletion): the first k of O3 replaced, the rest kept;
- scores at each step: ``mse`` = sum over classes (IMDB) or at the reference index (ARC,
  Wikipedia) of ``(y0 - y)^2`` with y the model's logits and y0 the clean ones; ``evidence`` =
  softmax probability of the reference index; ``logit`` = its logit.

All 3 x 11 perturbed copies of a sample are scored in batched forward passes. The reported
numbers are trapezoid areas over the fractions of the mean curve (:func:`summarize`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

__all__ = ["PROTOCOL_VERSION", "FRACS", "token_counts", "TaskProtocol", "IMDB", "ARC", "WIKI", "orderings", "perturbed_inputs",
           "step_scores", "sample_curves", "summarize", "REPORTED"]

#: Version of this protocol, part of every run's identity (2: the original's token counts and
#: IMDB selection); results of another version are never mixed in.
PROTOCOL_VERSION = 2

#: The original's fractions, ``numpy.linspace(0, 1, 11)`` (0.30000000000000004, ... included).
FRACS = tuple(float(f) for f in np.linspace(0.0, 1.0, 11))

#: The six reported numbers: name -> (curve, higher is better).
REPORTED = {
    "generate_AU_AC": ("generate_o1_evidence", True),
    "generate_AU_MSE": ("generate_o1_mse", False),
    "MERF": ("generate_o1_logit", True),
    "LERF": ("generate_o2_logit", False),
    "pruning_AU_AC": ("pruning_o3_evidence", True),
    "pruning_AU_MSE": ("pruning_o3_mse", False),
}


@dataclass(frozen=True)
class TaskProtocol:
    """What differs between the three evaluations, as data."""

    name: str
    ascending_by_abs: bool   # O2/O3 ascending |r| (IMDB) or ascending r (ARC, Wikipedia)
    mse_over_classes: bool   # mse summed over all classes (IMDB) or at the reference only


IMDB = TaskProtocol("imdb", ascending_by_abs=True, mse_over_classes=True)
ARC = TaskProtocol("arc", ascending_by_abs=False, mse_over_classes=False)
WIKI = TaskProtocol("wiki", ascending_by_abs=False, mse_over_classes=False)


def orderings(relevance: torch.Tensor, ascending_by_abs: bool):
    """(O1, O2, O3) as index tensors into ``relevance`` (N,)."""
    o1 = torch.argsort(relevance, descending=True, stable=True)
    key = relevance.abs() if ascending_by_abs else relevance
    o2 = torch.argsort(key, stable=True)
    return o1, o2, o2


def token_counts(n: int, fracs=FRACS, exact: bool = False) -> list[int]:
    """Tokens perturbed at each fraction for ``n`` perturbable tokens.

    Default: the original's ``int(np.ceil(frac * n))`` in float64, with its float overshoot
    (``n = 10``: 0, 1, 2, 4, 4, 5, 7, 8, 8, 9, 10). ``exact``: ``ceil(i * n / (F - 1))`` in
    integers for the i-th of F evenly spaced fractions (``n = 10``: 0, 1, ..., 10)."""
    if exact:
        steps = len(fracs) - 1
        return [-(-i * n // steps) for i in range(len(fracs))]
    return [min(n, int(k)) for k in np.ceil(np.asarray(fracs, dtype=np.float64) * n)]


def perturbed_inputs(input_ids: torch.Tensor, positions: torch.Tensor, orders,
                     replacement_id: int, fracs=FRACS, exact_counts: bool = False) -> torch.Tensor:
    """The (3 * F, S) perturbed copies of one sample's ``input_ids`` (S,).

    ``positions`` (N,) are the perturbable token positions (real tokens), ``orders`` the
    (O1, O2, O3) index tensors into ``positions``. Rows: generate-O1 for each fraction, then
    generate-O2, then pruning-O3; :func:`token_counts` tokens at each fraction.
    """
    o1, o2, o3 = orders
    counts = token_counts(len(positions), fracs, exact_counts)
    rows = []
    for order, insert in ((o1, True), (o2, True), (o3, False)):
        for k in counts:
            ids = input_ids.clone()
            chosen = positions[order[:k]]
            if insert:
                ids[positions] = replacement_id
                ids[chosen] = input_ids[chosen]
            else:
                ids[chosen] = replacement_id
            rows.append(ids)
    return torch.stack(rows)


def step_scores(logits: torch.Tensor, clean_logits: torch.Tensor, reference: int,
                mse_over_classes: bool) -> dict[str, torch.Tensor]:
    """``mse``, ``evidence`` and ``logit`` for each row of (M, K) ``logits``."""
    logits = logits.float()
    clean = clean_logits.float()
    if mse_over_classes:
        mse = (clean[None] - logits).pow(2).sum(-1)
    else:
        mse = (clean[reference] - logits[:, reference]).pow(2)
    evidence = logits.softmax(-1)[:, reference]
    return {"mse": mse, "evidence": evidence, "logit": logits[:, reference]}


def sample_curves(score_fn: Callable[[torch.Tensor], torch.Tensor], input_ids: torch.Tensor,
                  positions: torch.Tensor, relevance: torch.Tensor, clean_logits: torch.Tensor,
                  reference: int, replacement_id: int, protocol: TaskProtocol,
                  batch_size: int = 33, fracs=FRACS, exact_counts: bool = False
                  ) -> dict[str, list[float]]:
    """Every curve of one sample. ``score_fn`` maps (M, S) ids to (M, K) logits at the
    explained position; ``relevance`` (N,) is aligned with ``positions``."""
    orders = orderings(relevance, protocol.ascending_by_abs)
    batch = perturbed_inputs(input_ids, positions, orders, replacement_id, fracs, exact_counts)
    logits = torch.cat([score_fn(chunk) for chunk in batch.split(batch_size)])
    scores = step_scores(logits, clean_logits, reference, protocol.mse_over_classes)
    steps = len(fracs)
    curves = {}
    for block, name in enumerate(("generate_o1", "generate_o2", "pruning_o3")):
        for score, values in scores.items():
            curves[f"{name}_{score}"] = values[block * steps:(block + 1) * steps].tolist()
    return curves


def _trapezoid(values, fracs) -> float:
    return float(sum((fracs[i + 1] - fracs[i]) * (values[i] + values[i + 1]) / 2
                     for i in range(len(fracs) - 1)))


def summarize(per_sample: list[dict[str, list[float]]], fracs=FRACS) -> dict:
    """Mean curves over samples and the six reported areas (trapezoid over ``fracs``)."""
    if not per_sample:
        raise ValueError("no sample to summarise")
    names = per_sample[0].keys()
    mean = {name: [sum(s[name][i] for s in per_sample) / len(per_sample)
                   for i in range(len(fracs))] for name in names}
    reported = {key: _trapezoid(mean[curve], fracs) for key, (curve, _) in REPORTED.items()}
    return {"curves": mean, "auc": reported}
