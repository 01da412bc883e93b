"""Data-parallel runs (torchrun, gloo on CPU) give exactly the one-process results, and a
killed multi-process run resumes (issue 8). Each driver runs on a few embedded-default images."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(script: str, args: list[str], processes: int) -> subprocess.CompletedProcess:
    if processes == 1:
        command = [sys.executable, script]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   "--master_addr=127.0.0.1", f"--master_port={_free_port()}", script]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **_keep_env()}
    proc = subprocess.run(command + args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _keep_env():
    import os
    return {k: v for k, v in os.environ.items() if k in ("HOME", "PYTHONPATH", "PALRP_OUTPUT_DIR",
                                                         "PALRP_CACHE_DIR", "XDG_CACHE_HOME",
                                                         "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}


def _methods(path: Path) -> dict:
    return json.loads(path.read_text())["methods"]


def _assert_same_metrics(actual, expected, where="methods"):
    """Equal metrics: counts exactly, floats to 1e-6 relative. Two shardings put other images
    together in a batch, and float32 GEMMs round by the batch's shape, so maps agree to about
    1e-9 of their maximum, not bit for bit; a lost or doubled image changes a metric by far
    more (and changes the counts)."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            _assert_same_metrics(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_same_metrics(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-6, abs=1e-9), where
    else:
        assert actual == expected, where


def test_segmentation_two_processes_equal_one_and_resume(tmp_path):
    common = ["--method", "pa_lrp", "rollout", "transformer_attribution", "--demo", "--limit", "10",
              "--batch-size", "3", "--num-examples", "0", "--device", "cpu"]
    launch("analyze_seg_results.py", common + ["--output-dir", str(tmp_path / "one")], 1)
    launch("analyze_seg_results.py", common + ["--output-dir", str(tmp_path / "two")], 2)
    one = next((tmp_path / "one").rglob("results.json"))
    two = next((tmp_path / "two").rglob("results.json"))
    _assert_same_metrics(_methods(two), _methods(one))
    # "kill" the two-process run: drop rank 1's last records and the results, then resume
    # with two processes again; only the lost images are recomputed.
    for part in two.parent.glob("per_image/*.rank1.jsonl"):
        lines = part.read_text().splitlines(keepends=True)
        part.write_text("".join(lines[:-2]) + lines[-2][:10])
    two.unlink()
    launch("analyze_seg_results.py", common + ["--output-dir", str(tmp_path / "two")], 2)
    resumed = json.loads(two.read_text())
    _assert_same_metrics(resumed["methods"], _methods(one))
    assert 0 < resumed["this_run"]["images"] < 10


def test_perturbation_two_processes_equal_one(tmp_path):
    common = ["--method", "pa_lrp", "rollout", "--demo", "--fract", "0.08", "--batch-size", "4",
              "--device", "cpu"]
    launch("analyze_pert_results.py", common + ["--output-dir", str(tmp_path / "one")], 1)
    launch("analyze_pert_results.py", common + ["--output-dir", str(tmp_path / "two")], 2)
    one = json.loads(next((tmp_path / "one").rglob("results.json")).read_text())
    two = json.loads(next((tmp_path / "two").rglob("results.json")).read_text())
    _assert_same_metrics(two["methods"], one["methods"])


def test_finetuning_two_processes_equal_one(tiny_llama, tmp_path):
    """DDP over two ranks with the global batch split between them (last batch of 7 samples
    uneven) trains the same classifier as one process."""
    import torch
    from safetensors.torch import load_file

    def args(out):
        return ["--model-path", str(tiny_llama / "lm"), "--data-path", str(tiny_llama / "imdb.csv"),
                "--output-dir", str(tmp_path / out), "--max-train", "31", "--max-test", "9",
                "--batch-size", "8", "--num-epochs", "1", "--lr", "3e-3", "--max-length", "48",
                "--device", "cpu"]

    launch("NLP/main_imdb.py", args("one"), 1)
    launch("NLP/main_imdb.py", args("two"), 2)
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one["epochs"][0]["test_accuracy"] == two["epochs"][0]["test_accuracy"]
    assert one["epochs"][0]["train_loss"] == pytest.approx(two["epochs"][0]["train_loss"], rel=1e-4)
    a = load_file(str(tmp_path / "one" / "best" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "best" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_nlp_perturbation_two_processes_equal_one(tiny_llama, tmp_path):
    from palrp.data import text_procedural as tp

    wiki = tmp_path / "wiki.jsonl"
    wiki.write_text("".join(json.dumps(a) + "\n" for a in tp.wiki_articles(5, 0)))
    common = ["--mode", "pert", "--model-path", str(tiny_llama / "lm"), "--data-path", str(wiki),
              "--max-length", "40", "--pe", "--single-norm", "--device", "cpu"]
    launch("NLP/eval_pert_wiki.py", common + ["--output-dir", str(tmp_path / "one")], 1)
    launch("NLP/eval_pert_wiki.py", common + ["--output-dir", str(tmp_path / "two")], 2)
    one = json.loads(next((tmp_path / "one").rglob("metrics.json")).read_text())
    two = json.loads(next((tmp_path / "two").rglob("metrics.json")).read_text())
    assert one["num_samples"] == two["num_samples"] == 5
    assert one["curves"] == two["curves"] and one["auc"] == two["auc"]
