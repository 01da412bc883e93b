"""The command-line explainer: a figure from a checkpoint and an image; clear errors."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_timm_vit

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "explain_image.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=240)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save({"model": make_timm_vit(img_size=32, patch_size=8).state_dict()}, path)
    return path


def test_writes_figure_for_any_image_size(checkpoint, tmp_path):
    image = tmp_path / "photo.jpg"
    Image.fromarray((np.random.default_rng(0).random((45, 70, 3)) * 255).astype("uint8")).save(image)
    out = tmp_path / "fig.png"
    proc = run("--model", checkpoint, "--image", image, "--output", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "predicted:" in proc.stdout
    with Image.open(out) as fig:
        assert fig.size[0] > fig.size[1] > 100   # four panels side by side


def test_bad_inputs_exit_non_zero_with_one_line(checkpoint, tmp_path):
    bad_image = tmp_path / "broken.png"
    bad_image.write_bytes(b"\x89PNG garbage")
    proc = run("--model", checkpoint, "--image", bad_image)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot read")
    good = tmp_path / "ok.png"
    Image.new("RGB", (10, 10)).save(good)
    proc = run("--model", checkpoint, "--image", good, "--model-size", "small")
    assert proc.returncode != 0
    assert "width 24 but DeiT-Small has 384" in proc.stderr.strip().splitlines()[-1]
    proc = run("--model", tmp_path / "nothing.pth", "--image", good)
    assert proc.returncode != 0 and "checkpoint not found" in proc.stderr
