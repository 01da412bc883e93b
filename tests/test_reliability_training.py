"""The IMDB fine-tuning never leaves a silently wrong result (issue 22): a non-finite loss,
gradient norm or parameter stops the run with one line (step, epoch, what, the fix: a lower
--lr), exit status non-zero, and nothing non-finite written (an earlier finite best/ and
training state kept as they were); a model with non-finite weights is refused before training
or evaluation; a run at chance level says so in its summary and in metrics.json."""
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from palrp import config
from NLP import main_imdb
from palrp.nlp import imdb_state, imdb_train
from conftest import make_tiny_llama_folder

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "NLP" / "main_imdb.py"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama LM and a 60-row IMDB-style CSV (40 train rows: 5 steps of 8 per
    epoch; 18 test rows, majority class 10/18)."""
    return make_tiny_llama_folder(tmp_path_factory.mktemp("tiny"), rows=60)


def _argv(tiny, out, *extra):
    return ["--model-path", str(tiny / "lm"), "--data-path", str(tiny / "imdb.csv"),
            "--output-dir", str(out), "--max-train", "40", "--batch-size", "8",
            "--num-epochs", "2", "--lr", "3e-3", "--max-length", "64", *extra]


def _digest(folder: Path) -> dict:
    """Every file under ``folder`` and the hash of its bytes."""
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def _finite_state(path: Path) -> dict:
    state = torch.load(path, weights_only=True)
    assert all(bool(torch.isfinite(t).all()) for t in state["trainable"].values())
    return state


@pytest.fixture
def at_step(monkeypatch):
    """``at_step(k, change)``: the k-th call of ``compute_loss`` (the k-th training step; no
    evaluation calls it) returns ``change(loss)`` instead of the loss."""
    def install(k, change):
        calls = {"n": 0}
        original = imdb_train.compute_loss

        def patched(*args, **kwargs):
            loss = original(*args, **kwargs)
            calls["n"] += 1
            return change(loss) if calls["n"] == k else loss

        monkeypatch.setattr(imdb_train, "compute_loss", patched)
    return install


def _expect_diverged(argv, fragment, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main_imdb.main(argv)
    message = str(exc.value)
    assert "\n" not in message and message.startswith("error: training diverged at step "), message
    assert fragment in message, message
    assert "rerun with a lower --lr (now 0.003)" in message
    return message


# --- a non-finite loss ------------------------------------------------------------------------

def test_an_infinite_loss_stops_the_run_and_keeps_the_finite_best(tiny, tmp_path, at_step,
                                                                     capsys):
    """inf at step 7 (epoch 2): one line, the epoch-1 best/ and state untouched."""
    out = tmp_path / "run"
    at_step(7, lambda loss: loss * float("inf"))
    # the first epoch ends at step 5: best/ and the state are written from a finite model
    seen, marks = [], {}
    with pytest.raises(SystemExit) as exc:
        main_imdb.main(_argv(tiny, out), callback=lambda step, _loss: (
            seen.append(step), step == 5 and marks.update(best=_digest(out / "best"))))
    message = str(exc.value)
    assert message == ("error: training diverged at step 7 (epoch 2): the loss is inf; stopped "
                       "before writing it (best/ and training_state.pt hold only finite "
                       "models); rerun with a lower --lr (now 0.003), with --overwrite to "
                       f"start {out} again")
    assert seen == [1, 2, 3, 4, 5, 6] and _digest(out / "best") == marks["best"]
    state = _finite_state(out / imdb_state.STATE_FILE)
    assert state["step"] == 5 and len(state["history"]) == 1
    metrics = json.loads((out / imdb_train.METRICS_FILE).read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1]


def test_a_nan_loss_at_the_first_step_writes_nothing(tiny, tmp_path, at_step, capsys):
    out = tmp_path / "run"
    at_step(1, lambda loss: loss * float("nan"))
    _expect_diverged(_argv(tiny, out), "at step 1 (epoch 1): the loss is nan;", capsys)
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_huge_learning_rate_that_diverges_exits_nonzero_with_one_line(tiny, tmp_path):
    """The command line, as a user runs it: --lr 1e30 makes the loss NaN at step 3."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(SCRIPT), *_argv(tiny, out)[:-4],
                           "--max-length", "64", "--lr", "1e30"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error: training diverged at step 3 (epoch 1): the loss is nan;")
    assert last.endswith(f"rerun with a lower --lr (now 1e+30), with --overwrite to start "
                         f"{out} again")
    assert "best test accuracy" not in proc.stdout
    assert not (out / "best").exists() and not (out / imdb_state.STATE_FILE).exists()
    assert not (out / imdb_train.METRICS_FILE).exists()


# --- a non-finite gradient --------------------------------------------------------------------

def test_an_infinite_gradient_with_a_finite_loss_stops_the_run(tiny, tmp_path, at_step, capsys):
    """The loss of step 3 is finite but its gradient is scaled by inf: the gradient norm
    clipping computes is not finite; the weights are not stepped, nothing is written."""
    out = tmp_path / "run"

    def inf_gradient(loss):
        loss.register_hook(lambda g: g * float("inf"))
        return loss

    at_step(3, inf_gradient)
    message = _expect_diverged(_argv(tiny, out, "--save-steps", "1"),
                               "at step 3 (epoch 1): the gradient norm is ", capsys)
    assert message.split("the gradient norm is ")[1].split(";")[0] in ("inf", "nan")
    state = _finite_state(out / imdb_state.STATE_FILE)
    assert state["step"] == 2 and not (out / "best").exists()


def test_train_step_leaves_the_weights_untouched_on_a_non_finite_gradient(tiny):
    from palrp.data import text_data as td
    from palrp.nlp import imdb_model

    tok = imdb_model.load_tokenizer(tiny / "lm")
    reviews, sentiments = td.load_imdb_csv(tiny / "imdb.csv")
    split = imdb_train.encode_split(tok, reviews[:8], sentiments[:8], td.DEFAULT_LABEL_IDS, 64)
    ids, mask = imdb_train.collate(split.ids, tok.pad_token_id, "cpu")
    model = imdb_model.build_model(tiny / "lm", tok, td.DEFAULT_LABEL_IDS)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    before = [p.detach().clone() for p in params]
    with pytest.raises(imdb_train.NonFiniteStep, match="the loss is nan"):
        imdb_train.train_step(model, opt, sched, ids, mask, torch.tensor(split.labels),
                              loss_scale=float("nan"), guard=lambda loss, norm:
                              imdb_train.check_finite_step(loss * float("nan"), norm))
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    assert all(p.grad is None for p in params) and not opt.state


# --- a non-finite model -----------------------------------------------------------------------

def test_a_best_model_that_is_not_finite_is_never_saved(tiny, tmp_path, monkeypatch, capsys):
    """A finite gradient whose step makes a weight infinite (the last step of epoch 2): the
    check before evaluation and saving stops the run; the epoch-1 best/ and state stay."""
    out = tmp_path / "run"
    original = imdb_train.train_step

    def step_then_break(model, *args, **kwargs):
        loss = original(model, *args, **kwargs)
        step_then_break.n += 1
        if step_then_break.n == 10:
            with torch.no_grad():
                model.score.weight[0, 0] = float("inf")
        return loss

    step_then_break.n = 0
    monkeypatch.setattr(imdb_train, "train_step", step_then_break)
    marks = {}
    with pytest.raises(SystemExit) as exc:
        main_imdb.main(_argv(tiny, out), callback=lambda step, _loss: step == 5 and marks.update(
            best=_digest(out / "best"), state=_digest(out)[imdb_state.STATE_FILE]))
    assert str(exc.value).startswith(
        "error: training diverged at step 10 (epoch 2): parameter 'score.weight' is not finite "
        "(inf) after the epoch; stopped before writing it")
    assert _digest(out / "best") == marks["best"]
    assert _digest(out)[imdb_state.STATE_FILE] == marks["state"]


def test_savers_refuse_a_non_finite_model(tiny, tmp_path):
    from palrp.data import text_data as td
    from palrp.nlp import imdb_model

    tok = imdb_model.load_tokenizer(tiny / "lm")
    model = imdb_model.build_model(tiny / "lm", tok, td.DEFAULT_LABEL_IDS)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 2] = float("nan")
    with pytest.raises(imdb_model.SetupError, match=r"^not saving .*best: parameter "
                       r"'model.layers.1.mlp.up_proj.weight' of the trained model is not finite "
                       r"\(nan\); training diverged: rerun with a lower lr$"):
        imdb_model.save_pretrained_atomic(model, tok, tmp_path / "best")
    assert not (tmp_path / "best").exists()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    with pytest.raises(imdb_model.SetupError, match="model.layers.1.mlp.up_proj.weight is not "
                                                    "finite; training diverged"):
        imdb_state.save_training_state(tmp_path / "state.pt", model, opt, sched, {})
    assert list(tmp_path.iterdir()) == []


def _nan_copy(src: Path, dst: Path, name: str) -> Path:
    """A copy of the checkpoint folder ``src`` with one NaN in tensor ``name``."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(dst / "model.safetensors")
    weights[name][0, 0] = float("nan")
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _assert_refused(message: str, folder: Path, name: str) -> None:
    """One line refusing the model in ``folder``, naming the non-finite parameter ``name`` and
    asking for finite weights (whether the loader or the IMDB code refused it)."""
    assert "\n" not in message and message.startswith("error: ") and str(folder) in message
    assert "non-finite" in message and name in message, message
    assert message.endswith("with finite weights"), message


def test_a_base_model_with_nan_weights_is_refused_before_training(tiny, tmp_path):
    bad = _nan_copy(tiny / "lm", tmp_path / "nan_lm", "model.layers.0.self_attn.q_proj.weight")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main_imdb.main(_argv(tiny, out)[2:] + ["--model-path", str(bad)])
    _assert_refused(str(exc.value), bad, "model.layers.0.self_attn.q_proj.weight")
    assert list(out.iterdir()) == []


def test_evaluating_a_classifier_with_nan_weights_exits_nonzero(tmp_path):
    bad = _nan_copy(config.DEMO_TEXT_DIR / "classifier", tmp_path / "nan_clf", "score.weight")
    with pytest.raises(SystemExit) as exc:
        main_imdb.main(["--eval", "--model-path", str(bad), "--data-path",
                        str(config.DEMO_TEXT_DIR / "imdb.csv"), "--output-dir",
                        str(tmp_path / "out"), "--max-test", "8"])
    _assert_refused(str(exc.value), bad, "score.weight")
    assert not (tmp_path / "out" / imdb_train.EVAL_FILE).exists()


# --- chance level -----------------------------------------------------------------------------

def test_the_chance_criterion():
    assert imdb_train.majority_rate([0, 1, 1, 1]) == 0.75 and imdb_train.majority_rate([]) == 0
    assert imdb_train.CHANCE_MARGIN == 0.05
    assert imdb_train.chance_warning(0.5499, 0.5) is not None
    assert imdb_train.chance_warning(0.55, 0.5) is not None           # the margin is included
    assert imdb_train.chance_warning(0.5501, 0.5) is None
    assert imdb_train.chance_warning(0.3, 0.5) is not None            # worse than the majority
    assert imdb_train.chance_warning(0.51, 0.5, spell=lambda n: "--" + n) == (
        "warning: best test accuracy 0.5100 is at chance level (majority class 0.5000, margin "
        "0.05); the model did not learn: lower --lr or train longer (--num_epochs)")


def test_a_finite_run_at_chance_warns_and_exits_normally(tiny, tmp_path, capsys):
    """--lr 1 stays finite (train loss far above ln 2) and ends at the majority rate 10/18."""
    out = tmp_path / "run"
    capsys.readouterr()
    metrics = main_imdb.main(_argv(tiny, out, "--lr", "1"))
    warning = ("warning: best test accuracy 0.5556 is at chance level (majority class 0.5556, "
               "margin 0.05); the model did not learn: lower --lr or train longer "
               "(--num-epochs)")
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == warning and lines[-2].startswith("best test accuracy 0.5556 at epoch")
    saved = json.loads((out / imdb_train.METRICS_FILE).read_text())
    for m in (metrics, saved):
        assert m["chance_warning"] == warning and m["at_chance"] is True
        assert m["majority_rate"] == pytest.approx(10 / 18) and m["chance_margin"] == 0.05
    assert all(math.isfinite(e["train_loss"]) for e in saved["epochs"])
    assert saved["epochs"][-1]["train_loss"] > 2 * math.log(2)


def test_a_run_that_learns_has_no_warning(tmp_path, capsys):
    """The embedded classifier's base with a new head learns the embedded reviews: best
    accuracy 0.70 on 64 test reviews against a majority of 0.52."""
    out = tmp_path / "run"
    capsys.readouterr()
    metrics = main_imdb.main([
        "--model-path", str(config.DEMO_TEXT_DIR / "classifier"), "--data-path",
        str(config.DEMO_TEXT_DIR / "imdb.csv"), "--output-dir", str(out), "--max-train", "128",
        "--max-test", "64", "--batch-size", "16", "--max-length", "64", "--num-epochs", "2",
        "--lr", "1e-3"])
    assert metrics["best_accuracy"] > metrics["majority_rate"] + 0.1
    assert metrics["majority_rate"] == pytest.approx(33 / 64)
    assert "warning" not in capsys.readouterr().out
    saved = json.loads((out / imdb_train.METRICS_FILE).read_text())
    assert saved["chance_warning"] is None and saved["at_chance"] is False


def test_resume_refuses_a_saved_state_with_nan_weights(tiny, tmp_path):
    """A state file altered after the run (this program never writes one) is refused."""
    out = tmp_path / "run"
    main_imdb.main(_argv(tiny, out, "--num-epochs", "1"))
    path = out / imdb_state.STATE_FILE
    state = torch.load(path, weights_only=True)
    name = sorted(state["trainable"])[0]
    state["trainable"][name].view(-1)[0] = float("nan")
    torch.save(state, path)
    best = _digest(out / "best")
    with pytest.raises(SystemExit) as exc:
        main_imdb.main(_argv(tiny, out, "--num-epochs", "1", "--resume"))
    assert str(exc.value) == (f"error: --resume: the saved state of {out} holds non-finite "
                              f"values in {name!r}; start again with --overwrite and a lower "
                              f"--lr")
    assert _digest(out / "best") == best
