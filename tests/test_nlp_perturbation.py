"""The token-perturbation protocol (docs/protocols.md, section 4) on hand-made cases with known curves."""
import math

import numpy as np
import pytest
import torch

from palrp.nlp.pert_driver import format_table, run_name
from palrp.nlp.perturbation import (ARC, FRACS, orderings, perturbed_inputs, sample_curves,
                              step_scores, summarize, token_counts)


def test_orderings_signed_and_absolute():
    r = torch.tensor([0.1, -0.5, 0.3, 0.0, 0.3])
    o1, o2, o3 = orderings(r, ascending_by_abs=True)
    assert o1.tolist() == [2, 4, 0, 3, 1]          # descending, ties in token order
    assert o2.tolist() == o3.tolist() == [3, 0, 2, 4, 1]   # ascending |r|
    _, o2, _ = orderings(r, ascending_by_abs=False)
    assert o2.tolist() == [1, 3, 0, 2, 4]          # ascending r


def test_perturbed_inputs_counts_and_tokens():
    ids = torch.tensor([100, 11, 12, 13, 14])       # position 0 (BOS) is not perturbable
    positions = torch.tensor([1, 2, 3, 4])
    orders = orderings(torch.tensor([0.4, 0.1, 0.3, 0.2]), ascending_by_abs=False)
    rows = perturbed_inputs(ids, positions, orders, replacement_id=0)
    assert rows.shape == (33, 5)
    assert (rows[:, 0] == 100).all()
    expected_k = [math.ceil(round(f * 4, 9)) for f in FRACS]
    assert expected_k == [0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4]
    for step, k in enumerate(expected_k):
        gen1, gen2, prune = rows[step], rows[11 + step], rows[22 + step]
        assert int((gen1[1:] != 0).sum()) == k and int((prune[1:] == 0).sum()) == k
        # generate-O1 restores the most relevant first: 11, 13, 14, 12
        assert set(gen1[gen1 != 0].tolist()) == {100, *[11, 13, 14, 12][:k]}
        # generate-O2 and pruning-O3 follow ascending relevance: 12, 14, 13, 11
        assert set(gen2[gen2 != 0].tolist()) == {100, *[12, 14, 13, 11][:k]}
        assert set(prune[prune != 0].tolist()) == {100, *[12, 14, 13, 11][k:]}


def test_counts_are_numpys_linspace_ceil_arithmetic():
    """The original: fracs = np.linspace(0, 1, 11), k = int(np.ceil(frac * N)), float overshoot
    included (0.30000000000000004 * 10 -> 4)."""
    assert FRACS[3] == 0.30000000000000004 and FRACS[6] == 0.6000000000000001
    assert token_counts(10) == [0, 1, 2, 4, 4, 5, 7, 8, 8, 9, 10]
    assert token_counts(20) == [0, 2, 4, 7, 8, 10, 13, 15, 16, 18, 20]
    assert token_counts(7) == [0, 1, 2, 3, 3, 4, 5, 5, 6, 7, 7]
    for n in range(0, 300):
        assert token_counts(n) == [int(np.ceil(f * n)) for f in np.linspace(0.0, 1.0, 11)]
    ids = torch.arange(10) + 1
    rows = perturbed_inputs(ids, torch.arange(10), orderings(torch.arange(10.0), False), 0)
    assert [int((r != 0).sum()) for r in rows[:11]] == [0, 1, 2, 4, 4, 5, 7, 8, 8, 9, 10]


def test_fraction_counts_avoid_float_overshoot():
    """The explicit option --exact-counts: ceil(i * N / 10)."""
    ids = torch.arange(10) + 1
    positions = torch.arange(10)
    orders = orderings(torch.arange(10.0), False)
    rows = perturbed_inputs(ids, positions, orders, 0, exact_counts=True)
    assert [int((r != 0).sum()) for r in rows[:11]] == list(range(11))  # 0.7*10 is 7, not 8
    assert token_counts(7, exact=True) == [math.ceil(i * 7 / 10) for i in range(11)]


def test_step_scores_by_hand():
    clean = torch.tensor([2.0, 0.0])
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    imdb = step_scores(logits, clean, reference=0, mse_over_classes=True)
    torch.testing.assert_close(imdb["mse"], torch.tensor([0.0, 5.0]))
    torch.testing.assert_close(imdb["logit"], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(imdb["evidence"], torch.tensor(
        [1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))]))
    arc = step_scores(logits, clean, reference=1, mse_over_classes=False)
    torch.testing.assert_close(arc["mse"], torch.tensor([0.0, 1.0]))


def test_curves_of_a_linear_toy_model_are_known():
    """logit_0 = sum of the weights of the original tokens still present; logit_1 = 0."""
    original = torch.tensor([5, 6, 7, 8])
    weights = torch.tensor([1.0, 4.0, 2.0, 3.0])

    def score(ids):
        present = (ids == original).float()
        return torch.stack((present @ weights, torch.zeros(len(ids))), -1)

    clean = score(original[None])[0]
    curves = sample_curves(score, original, torch.arange(4), weights, clean, reference=0,
                           replacement_id=0, protocol=ARC)
    # insertion by descending relevance: 0, 4, 4, 7, 7, 7, 9, 9, 10, 10, 10
    assert curves["generate_o1_logit"] == [0, 4, 4, 7, 7, 7, 9, 9, 10, 10, 10]
    # insertion by ascending relevance: 0, 1, 1, 3, 3, 3, 6, 6, 10, 10, 10
    assert curves["generate_o2_logit"] == [0, 1, 1, 3, 3, 3, 6, 6, 10, 10, 10]
    # deletion by ascending relevance: 10, 9, 9, 7, 7, 7, 4, 4, 0, 0, 0
    assert curves["pruning_o3_logit"] == [10, 9, 9, 7, 7, 7, 4, 4, 0, 0, 0]
    assert curves["pruning_o3_mse"][-1] == pytest.approx(100.0)


def test_summary_is_trapezoid_of_the_mean_curve():
    ones = {name: [1.0] * 11 for name in ("generate_o1_evidence", "generate_o1_mse",
                                          "generate_o1_logit", "generate_o2_logit",
                                          "pruning_o3_evidence", "pruning_o3_mse")}
    ramp = {name: [f for f in FRACS] for name in ones}
    out = summarize([ones, ramp])
    assert out["curves"]["generate_o1_logit"][5] == pytest.approx(0.75)
    assert out["auc"]["generate_AU_AC"] == pytest.approx(0.75)   # (1 + 0.5) / 2
    assert set(out["auc"]) == {"generate_AU_AC", "generate_AU_MSE", "MERF", "LERF",
                               "pruning_AU_AC", "pruning_AU_MSE"}
    with pytest.raises(ValueError):
        summarize([])


def test_run_names_and_table():
    class A:  # argparse stand-in
        pe, single_norm, pe_only, without_abs, clamp = True, True, False, False, True
    assert run_name(A) == "pa_lrp-single_norm-clamp"
    A.pe = False
    assert run_name(A) == "attnlrp"
    runs = [{"model": "m", "method": m, "run": m, "num_samples": 3, "num_correct": None,
             "auc": {k: 0.5 for k in ("generate_AU_AC", "generate_AU_MSE", "MERF", "LERF",
                                      "pruning_AU_AC", "pruning_AU_MSE")}}
            for m in ("pa_lrp", "attnlrp")]
    table = format_table(runs).splitlines()
    assert "| m | attnlrp | 3 | - |" in table[2] and "pa_lrp" in table[3]
    assert r"\begin{tabular}" in format_table(runs, latex=True)
