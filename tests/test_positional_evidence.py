"""benchmarks/positional_evidence.py: the metrics on hand-made maps, each task's ground truth,
the function-preserving reparametrisations, and a tiny run of the CLI."""
import json
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import positional_evidence as cli                                   # noqa: E402
from positional_evidence_lib import metrics as MX                   # noqa: E402
from positional_evidence_lib import models as M                     # noqa: E402
from positional_evidence_lib import tasks as T                      # noqa: E402

EVIDENCE = torch.tensor([[False, True, False, False], [True, False, False, True]])


# --- metrics on hand-made maps -----------------------------------------------------------

def test_all_relevance_on_the_evidence_gives_mass_and_pointing_one():
    maps = torch.where(EVIDENCE, torch.tensor(-2.0), torch.tensor(0.0))
    assert MX.evidence_mass(maps, EVIDENCE).tolist() == [1.0, 1.0]
    assert MX.pointing(maps, EVIDENCE).tolist() == [1.0, 1.0]


def test_no_relevance_on_the_evidence_gives_zero_and_uniform_gives_the_evidence_share():
    off = torch.where(EVIDENCE, torch.tensor(0.0), torch.tensor(1.0))
    assert MX.evidence_mass(off, EVIDENCE).tolist() == [0.0, 0.0]
    assert MX.pointing(off, EVIDENCE).tolist() == [0.0, 0.0]
    uniform = torch.ones(2, 4)
    assert MX.evidence_mass(uniform, EVIDENCE).tolist() == [0.25, 0.5]


def test_an_all_zero_map_has_no_mass_and_no_pointing():
    zero = torch.zeros(2, 4)
    assert torch.isnan(MX.evidence_mass(zero, EVIDENCE)).all()
    assert torch.isnan(MX.pointing(zero, EVIDENCE)).all()


def test_positional_share_and_combined_map():
    token = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    positional = torch.tensor([[0.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0]])
    assert MX.positional_share(token, positional).tolist() == [0.0, 0.5]
    assert MX.positional_share(torch.zeros(1, 3), torch.ones(1, 3)).tolist() == [1.0]
    assert MX.combined(token, positional).tolist() == [[1, 1, 0, 0], [1, 1, 0, 2]]
    assert MX.combined(token, None).tolist() == token.abs().tolist()


def test_win_rate_counts_ties_as_half():
    mass = torch.tensor([0.9, 0.5, 0.1, float("nan")])
    reference = torch.tensor([0.5, 0.5, 0.2, 0.3])
    out = MX.win_rate(mass, reference)
    assert out[:3].tolist() == [1.0, 0.5, 0.0] and torch.isnan(out[3])


def test_conservation_residual_and_shift():
    total, logit = torch.tensor([2.0, 1.0, -3.0]), torch.tensor([2.0, 4.0, 3.0])
    assert MX.conservation_residual(total, logit).tolist() == [0.0, 0.75, 2.0]
    before = torch.tensor([[1.0, -1.0], [2.0, 0.0]])
    assert MX.shift(before, before).tolist() == [0.0, 0.0]
    assert MX.shift(before, 2 * before).tolist() == [1.0, 1.0]
    assert MX.shift(before, -before).tolist() == [2.0, 2.0]


def test_bootstrap_interval_includes_seed_variance():
    mean, low, high, seeds, samples = MX.bootstrap_ci([[0.5] * 10, [0.5] * 10], 50)
    assert (mean, low, high, seeds, samples) == (0.5, 0.5, 0.5, 2, 20)
    # each seed constant, seeds different: the interval is wide although no seed varies
    mean, low, high, _, _ = MX.bootstrap_ci([[0.0] * 20, [1.0] * 20, [0.5] * 20], 400)
    assert mean == pytest.approx(0.5) and low <= 0.2 and high >= 0.8
    mean, _, _, seeds, samples = MX.bootstrap_ci([[1.0, float("nan")], [float("nan")]], 10)
    assert (mean, seeds, samples) == (1.0, 1, 1)


# --- ground truth of the tasks -------------------------------------------------------------

def _redraw_outside_evidence(task, batch, seed):
    """The batch with every non-evidence position redrawn (fillers / fresh noise)."""
    g = torch.Generator().manual_seed(seed)
    inputs = batch.inputs.clone()
    if task.kind == "text":
        fillers = torch.tensor(T.FILLERS)[torch.randint(len(T.FILLERS), inputs.shape, generator=g)]
        keep = batch.evidence.clone()
        keep[:, 0] = True                                     # [CLS]
        return torch.where(keep, inputs, fillers)
    noise = T.NOISE * torch.randn(inputs.shape, generator=g)
    cells = batch.evidence.reshape(-1, T.GRID, T.GRID)
    keep = cells.repeat_interleave(T.CELL, 1).repeat_interleave(T.CELL, 2)[:, None]
    return torch.where(keep, inputs, noise)


@pytest.mark.parametrize("name", list(T.TASKS))
def test_the_label_is_a_function_of_the_evidence_alone(name):
    task = T.TASKS[name]
    batch = T.sample(task, 300, 3)
    assert torch.equal(task.label_of(batch.inputs), batch.labels)
    assert torch.equal(task.evidence_of(batch.inputs), batch.evidence)
    assert batch.labels.unique().numel() == task.num_classes
    redrawn = _redraw_outside_evidence(task, batch, 4)
    assert not torch.equal(redrawn, batch.inputs)
    assert torch.equal(task.label_of(redrawn), batch.labels)
    assert torch.equal(task.evidence_of(redrawn), batch.evidence)


@pytest.mark.parametrize("name", [n for n, t in T.TASKS.items() if t.position_is_evidence])
def test_position_tasks_change_label_when_the_evidence_moves(name):
    """The evidence content moved (text: rolled by one content position; image: by one cell)
    changes the label of position tasks, never of their controls' evidence content."""
    task = T.TASKS[name]
    batch = T.sample(task, 200, 5)
    if task.kind == "text":
        moved = batch.inputs.clone()
        moved[:, 1:] = torch.roll(batch.inputs[:, 1:], 1, dims=1)
    else:
        moved = torch.roll(batch.inputs, T.CELL, dims=3)
    changed = (task.label_of(moved) != batch.labels).float().mean()
    assert changed > 0.25
    control = [t for t in T.TASKS.values() if t.control_of == name]
    for c in control:
        cb = T.sample(c, 200, 5)
        shifted = cb.inputs.clone()
        if c.kind == "text":
            shifted[:, 1:] = torch.roll(cb.inputs[:, 1:], 1, dims=1)
        else:
            shifted = torch.roll(cb.inputs, T.CELL, dims=3)
        assert torch.equal(c.label_of(shifted), cb.labels)


# --- models --------------------------------------------------------------------------------

@pytest.mark.parametrize("model_name,task_name", [("bert", "marker_slot"), ("llama", "marker_slot"),
                                                  ("bert_nope", "marker_type"),
                                                  ("vit", "object_cell"),
                                                  ("eva_rope", "object_cell"),
                                                  ("vit_nope", "object_shape")])
def test_reparametrisation_preserves_the_function_and_changes_the_parameters(model_name,
                                                                            task_name):
    task = T.TASKS[task_name]
    model = M.build(model_name, task, 0).eval()
    with torch.no_grad():                     # learned tables away from their small init
        for name, p in model.named_parameters():
            if "pos" in name and p.requires_grad:
                p.normal_(0, 0.5)
    batch = T.sample(task, 8, 1)
    changed, how = M.reparametrised(model, model_name, 0)
    with torch.no_grad():
        a = M.logits_of(model, model_name, batch.inputs)
        b = M.logits_of(changed, model_name, batch.inputs)
    assert torch.allclose(a, b, atol=1e-4), how
    moved = [n for (n, p), (_, q) in zip(model.named_parameters(), changed.named_parameters())
             if not torch.equal(p, q)]
    assert moved, how


# --- the command line ----------------------------------------------------------------------

SMOKE = ["--quick", "--tasks", "marker_slot", "--models", "bert", "--seeds", "0",
         "--train-samples", "128", "--max-epochs", "1", "--explain-samples", "4"]


def test_cli_smoke_run_writes_the_outputs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main([*SMOKE, "--output-dir", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["seeds"] == [0]
    assert [(m["task"], m["model"], m["seed"]) for m in result["models"]] == \
        [("marker_slot", "bert", 0)]
    metrics = {r["metric"] for r in result["summary"]}
    assert {"positional_share", "evidence_mass", "pointing", "win_rate_vs_attn_lrp",
            "conservation_residual", "reparam_shift"} <= metrics
    row = next(r for r in result["summary"] if r["method"] == "pa_lrp"
               and r["metric"] == "evidence_mass" and r["channel"] == "combined")
    assert row["position_is_evidence"] is True and row["n_seeds"] == 1 and row["n_samples"] == 4
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    assert (out / "results.md").exists() and (out / "figures" / "marker_slot.png").exists()
    capsys.readouterr()
    assert cli.main([*SMOKE, "--output-dir", str(out)]) == 0
    assert "reusing" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["summary"] == result["summary"]


def test_cli_refuses_an_unwritable_output_dir_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main([*SMOKE, "--output-dir", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write to --output-dir")
