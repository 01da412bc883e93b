"""The command-line explainer: a figure from a checkpoint and an image; clear errors."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import explain_image as cli
from conftest import make_timm_vit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save({"model": make_timm_vit(img_size=32, patch_size=8).state_dict()}, path)
    return path


def test_writes_figure_for_any_image_size(checkpoint, tmp_path, capsys):
    image = tmp_path / "photo.jpg"
    Image.fromarray((np.random.default_rng(0).random((45, 70, 3)) * 255).astype("uint8")).save(image)
    out = tmp_path / "fig.png"
    assert cli.main(["--model", str(checkpoint), "--num-heads", "3", "--image", str(image), "--output", str(out),
                     "--device", "cpu", "--target", "2"]) == 0
    printed = capsys.readouterr().out
    assert "predicted:" in printed and "class 2" in printed
    with Image.open(out) as fig:
        assert fig.size[0] > fig.size[1] > 100   # five panels side by side


def test_target_by_class_name(tmp_path, capsys):
    image = tmp_path / "flat.png"
    Image.new("RGB", (64, 64), (200, 120, 40)).save(image)
    out = tmp_path / "fig.png"
    assert cli.main(["--demo", "--image", str(image), "--target", "Grid_Star", "--output",
                     str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    predicted = printed.splitlines()[0]
    assert predicted.startswith("predicted: ") and ", p=0." in predicted
    if "(grid_star)" not in predicted:
        assert "explained: 3 (grid_star), p=" in printed
    with Image.open(out) as fig:
        assert fig.size[0] >= 1600 and fig.size[1] >= 400   # readable panels


def _error(argv) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main([str(a) for a in argv])
    message = str(exc.value)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_bad_inputs_give_one_clear_line(checkpoint, tmp_path):
    bad_image = tmp_path / "broken.png"
    bad_image.write_bytes(b"\x89PNG garbage")
    assert "cannot read" in _error(["--model", checkpoint, "--num-heads", "3", "--image", bad_image])
    good = tmp_path / "ok.png"
    Image.new("RGB", (10, 10)).save(good)
    assert "image not found" in _error(["--model", checkpoint, "--num-heads", "3", "--image", tmp_path / "no.png"])
    assert "width 24 but DeiT-Small has 384" in _error(
        ["--model", checkpoint, "--num-heads", "3", "--image", good, "--model-size", "small"])
    assert "checkpoint not found" in _error(["--model", tmp_path / "nothing.pth", "--image", good])
    assert "README of https://github.com/facebookresearch/deit" in _error(
        ["--model", tmp_path / "nothing.pth", "--image", good])
    assert "outside the model's 5 classes" in _error(
        ["--model", checkpoint, "--num-heads", "3", "--image", good, "--target", "7"])
    assert "no names for its classes" in _error(["--model", checkpoint, "--num-heads", "3", "--image", good, "--target", "cat"])
    # a state dict records no head count: the run asks for it instead of guessing
    assert "does not record its number of attention heads; pass --num-heads N" in _error(
        ["--model", checkpoint, "--image", good]).replace(" (its weights of width 24 fit any head "
                                                         "count that divides it)", "")


def test_exit_status_is_non_zero(tmp_path):
    good = tmp_path / "ok.png"
    Image.new("RGB", (10, 10)).save(good)
    proc = subprocess.run([sys.executable, str(ROOT / "explain_image.py"), "--model",
                           str(tmp_path / "nothing.pth"), "--image", str(good)],
                          capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: checkpoint not found")
