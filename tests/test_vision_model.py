"""palrp/loaders/vision_model.py: geometry and preprocessing read from timm models (tiny, random)."""
import math

import pytest
import timm
import torch
from PIL import Image

from palrp.loaders import vision_model as vm

FAMILIES = {
    # name: (create kwargs, patch, grid, prefix tokens, class token)
    "deit_tiny_patch16_224": (dict(img_size=32), (16, 16), (2, 2), 1, True),
    "deit_tiny_distilled_patch16_224": (dict(img_size=32), (16, 16), (2, 2), 2, True),
    "vit_small_patch16_224": (dict(img_size=48, class_token=False, global_pool="avg"),
                              (16, 16), (3, 3), 0, False),
    "vit_small_patch14_reg4_dinov2": (dict(img_size=28), (14, 14), (2, 2), 5, True),
    "eva02_tiny_patch14_224": (dict(img_size=42), (14, 14), (3, 3), 1, True),
}


def _tiny(name, **kw):
    return timm.create_model(name, pretrained=False, depth=1, **kw).eval()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_geometry_from_model(name):
    kw, patch, grid, prefix, cls = FAMILIES[name]
    model = _tiny(name, **kw)
    assert vm.patch_size(model) == patch
    assert vm.grid_size(model) == grid
    assert vm.grid_size(model, torch.zeros(1, 3, *vm.image_size(model))) == grid
    assert vm.num_prefix_tokens(model) == prefix
    assert vm.has_class_token(model) is cls
    # the token count the stock model produces agrees
    tokens = model.forward_features(torch.zeros(1, 3, *vm.image_size(model))).shape[1]
    assert tokens == prefix + grid[0] * grid[1]


def test_grid_size_dynamic_and_refusals():
    model = _tiny("vit_small_patch14_dinov2", img_size=28, dynamic_img_size=True)
    assert vm.grid_size(model, (42, 70)) == (3, 5)
    tokens = model.forward_features(torch.zeros(1, 3, 42, 70)).shape[1]
    assert tokens == 1 + 15
    with pytest.raises(ValueError, match="multiple"):
        vm.grid_size(model, (43, 70))
    fixed = _tiny("deit_tiny_patch16_224", img_size=32)
    with pytest.raises(ValueError, match="dynamic_img_size"):
        vm.grid_size(fixed, (48, 48))


def test_data_config_and_normalize_use_model_mean_std():
    clip = _tiny("vit_base_patch16_clip_224", img_size=32)
    cfg = vm.data_config(clip)
    assert cfg["input_size"] == (3, 32, 32)  # the built size, not the pretrained 224
    assert cfg["mean"] == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert cfg["crop_pct"] == pytest.approx(0.95)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(vm.normalize(clip, x), (x - mean) / std)
    with pytest.raises(ValueError, match="channels"):
        vm.normalize(clip, torch.rand(1, 1, 32, 32))


def test_eval_transform_keeps_aspect_ratio(tmp_path):
    model = _tiny("deit_tiny_patch16_224", img_size=32)
    # a 2:1 photo whose left and right thirds are red and the centre blue
    width, height = 120, 60
    pixels = torch.zeros(height, width, 3, dtype=torch.uint8)
    pixels[..., 0] = 255
    pixels[:, 40:80] = torch.tensor([0, 0, 255], dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(tmp_path / "wide.png")
    out = vm.load_image(tmp_path / "wide.png", model, crop_pct=1.0)
    assert out.shape == (1, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    # short side 60 -> 32, long side 120 -> 64; the centre 32 columns hold columns 16..48 of
    # the resized image = source columns 30..90: blue in the middle half, red at the edges.
    assert out[0, 2, :, 10:22].min() > 0.9 and out[0, 0, :, 10:22].max() < 0.1
    assert out[0, 0, :, :3].min() > 0.9 and out[0, 0, :, -3:].min() > 0.9
    # a squash would have put the blue band at columns 10.7..21.3 and red up to column 10:
    # here red covers only about (40 - 30) / 60 * 32 ~ 5 columns on each side
    assert out[0, 0, 16, :8].mean() < 0.9
    # crop_pct from the data config: the short side goes to floor(32 / 0.9) = 35
    cfg = vm.data_config(model)
    default = vm.eval_transform(model)(Image.open(tmp_path / "wide.png"))
    scale = math.floor(32 / cfg["crop_pct"])
    assert default.shape == (3, 32, 32) and scale == 35
    with pytest.raises(FileNotFoundError, match="not found"):
        vm.load_image(tmp_path / "missing.png", model)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read"):
        vm.load_image(tmp_path / "bad.png", model)
