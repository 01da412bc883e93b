"""explain_image.py --torchvision-model: a torchvision ViT or Swin by name, its weights from a
state-dict file or the torch hub cache (palrp.loaders.torchvision_models); bad input is one line
and a non-zero exit before anything is explained."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from PIL import Image

import palrp
from palrp.loaders import torchvision_models as tv
from palrp.loaders.checkpoints import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


def test_the_names_are_the_vit_and_swin_builders():
    names = tv.torchvision_names()
    assert {"vit_b_16", "vit_h_14", "swin_t", "swin_v2_b"} <= set(names)
    assert not [n for n in names if not n.startswith(("vit_", "swin_"))]


def test_a_state_dict_loads_into_the_named_architecture_with_its_geometry(tmp_path):
    """vit_b_16 at the checkpoint's own image size (from its position table) and class count
    (from its head), equal to the model that saved it."""
    torch.manual_seed(0)
    saved = tvm.vit_b_16(weights=None, image_size=64, num_classes=3).eval()
    path = tmp_path / "vit.pth"
    torch.save(saved.state_dict(), path)
    model = tv.load_torchvision_model("vit_b_16", path)
    assert model.image_size == 64 and model.heads.head.out_features == 3
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(images), saved(images))
    prep = tv.Preprocessing(model, "vit_b_16")
    assert prep.crop == 64 and prep.num_classes == 3 and prep.class_names is None
    assert palrp.explain(model, images).relevance["pixel_values"].shape == (1, 16)


def test_wrong_files_and_names_are_one_line(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(tvm.swin_t(weights=None, num_classes=4).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit torchvision's vit_b_16"):
        tv.load_torchvision_model("vit_b_16", path)
    with pytest.raises(CheckpointError, match="not a torchvision vision transformer"):
        tv.load_torchvision_model("resnet50", path)
    with pytest.raises(FileNotFoundError, match="not in the torch hub cache"):
        tv.cached_weights("vit_b_16")


def _run(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "explain_image.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_the_command_line_explains_a_torchvision_swin(tmp_path):
    torch.manual_seed(0)
    model = tvm.swin_t(weights=None, num_classes=5).eval()
    weights = tmp_path / "swin.pth"
    torch.save(model.state_dict(), weights)
    image = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(0).random((300, 260, 3)) * 255).astype("uint8")).save(image)
    out = tmp_path / "out.png"
    done = _run("--torchvision-model", "swin_t", "--model", weights, "--image", image,
                "--output", out, "--device", "cpu", "--target", "2")
    assert done.returncode == 0, done.stderr
    assert "explained: 2" in done.stdout or "predicted: 2" in done.stdout
    assert out.is_file() and out.stat().st_size > 0
    bad = _run("--torchvision-model", "swin_t", "--pretrained", "--image", image,
               "--output", tmp_path / "x.png", "--device", "cpu",
               env={**os.environ, "TORCH_HOME": str(tmp_path / "hub")})
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0
    assert "not in the torch hub cache" in bad.stderr
