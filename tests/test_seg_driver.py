"""analyze_seg_results.py end to end on the embedded default, resume, and bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import analyze_seg_results as driver
from conftest import make_timm_vit
from palrp.data.gtsegs import write_gtsegs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """Six non-square images with masks, in the gtsegs layout."""
    rng = np.random.default_rng(0)
    images = [(rng.random((40 + i, 50, 3)) * 255).astype("uint8") for i in range(6)]
    masks = [(rng.random((40 + i, 50)) > 0.6).astype("uint8") for i in range(6)]
    return write_gtsegs(tmp_path_factory.mktemp("seg") / "small.mat", images, masks)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save({"model": make_timm_vit(img_size=32, patch_size=8).state_dict()}, path)
    path.with_suffix(".json").write_text('{"config": {"num_heads": 3}}')
    return path


def _run(tmp_path, *extra, out="out"):
    return driver.main(["--method", "pa_lrp", "attnlrp", "rollout", "--batch-size", "4",
                        "--device", "cpu", "--num-examples", "2",
                        "--output-dir", str(tmp_path / out), *map(str, extra)])


def test_end_to_end_writes_table_json_csv_png(tmp_path, small_set, checkpoint, capsys):
    assert _run(tmp_path, "--model", checkpoint, "--imagenet-seg-path", small_set) == 0
    printed = capsys.readouterr().out
    assert "| PA-LRP |" in printed and "| Rollout |" in printed
    folder = tmp_path / "out" / "tiny" / "mean"
    results = json.loads((folder / "results.json").read_text())
    assert results["n_images"] == 6 and set(results["methods"]) == {"pa_lrp", "attnlrp", "rollout"}
    for metrics in results["methods"].values():
        assert 0 <= metrics["pixel_accuracy"] <= 100 and 0 <= metrics["miou"] <= 1
        assert metrics["n_images"] == 6
    assert (folder / "results.csv").read_text().count("\n") == 4
    assert (folder / "examples.png").read_bytes()[:4] == b"\x89PNG"


def test_resumed_run_gives_the_same_table(tmp_path, small_set, checkpoint):
    args = ["--model", checkpoint, "--imagenet-seg-path", small_set]
    _run(tmp_path, *args, out="full")
    full = json.loads(next((tmp_path / "full").rglob("results.json")).read_text())
    # a crash after the first batch: only its per-image records exist, the last one torn
    _run(tmp_path, *args, "--limit", "4", out="crash")
    folder = next((tmp_path / "crash").rglob("per_image"))
    for part in folder.glob("*.jsonl"):
        text = part.read_text()
        part.write_text(text[: text.rstrip("\n").rfind("\n") + 1] + '{"index": 3, "cor')
    (folder.parent / "results.json").unlink()
    _run(tmp_path, *args, out="crash")
    resumed = json.loads((folder.parent / "results.json").read_text())
    assert resumed["methods"] == full["methods"]
    assert resumed["this_run"]["images"] == 3        # the torn image and the two never done


def test_bad_inputs_give_one_line(tmp_path, small_set, checkpoint):
    def error(*args):
        with pytest.raises(SystemExit) as exc:
            _run(tmp_path, *args)
        message = str(exc.value)
        assert message.startswith("error: ") and "\n" not in message
        return message

    missing = error("--model", checkpoint, "--imagenet-seg-path", tmp_path / "gtsegs_ijcv.mat")
    assert "download gtsegs_ijcv.mat" in missing and "--demo" in missing
    corrupt = tmp_path / "corrupt.mat"
    corrupt.write_bytes(b"MATLAB 5.0 MAT-file, not HDF5" * 10)
    assert "corrupt.mat" in error("--model", checkpoint, "--imagenet-seg-path", corrupt)
    assert "width 24 but DeiT-Base has 768" in error(
        "--model", checkpoint, "--model-size", "base", "--imagenet-seg-path", small_set)
    assert "not a DeiT/ViT checkpoint" in error("--model", _not_deit(tmp_path),
                                                 "--imagenet-seg-path", small_set)


def _not_deit(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}, path)
    return path


def test_missing_file_exits_non_zero(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "analyze_seg_results.py"), "--check-all",
                           "--imagenet-seg-path", str(tmp_path / "none.mat"), "--model",
                           str(tmp_path / "none.pth")], capture_output=True, text=True, cwd=ROOT,
                          timeout=240)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
