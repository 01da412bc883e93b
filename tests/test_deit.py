"""DeiT model: parity with timm, checkpoint formats, geometry inference, clear errors."""
import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import make_timm_vit
from modules.deit import CheckpointError, load_deit


@pytest.mark.parametrize("geometry", [
    dict(img_size=224, patch_size=16, embed_dim=192, depth=2, num_heads=3, num_classes=1000),
    dict(img_size=96, patch_size=16, embed_dim=48, depth=2, num_heads=4, num_classes=7),
    dict(img_size=64, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10),
])
def test_forward_equals_timm(geometry):
    reference = make_timm_vit(**geometry)
    model = load_deit(reference.state_dict(), num_heads=geometry["num_heads"])
    assert model.img_size == (geometry["img_size"],) * 2
    assert model.patch_size == (geometry["patch_size"],) * 2
    assert model.num_classes == geometry["num_classes"]
    images = torch.randn(2, 3, geometry["img_size"], geometry["img_size"])
    with torch.no_grad():
        expected = reference(images)
        torch.testing.assert_close(model(images), expected, rtol=1e-5, atol=1e-5)
        # the explanation forward computes the same function
        torch.testing.assert_close(model(images, lrp=True), expected, rtol=1e-4, atol=1e-4)
    assert set(model.state_dict()) == set(reference.state_dict())


def test_official_pth_timm_pth_and_safetensors(tmp_path):
    reference = make_timm_vit(img_size=64, patch_size=8, embed_dim=32, num_heads=2)
    state = reference.state_dict()
    torch.save({"model": state, "optimizer": {}, "epoch": 3}, tmp_path / "official.pth")
    torch.save(state, tmp_path / "timm.pth")
    cfg = {"num_heads": 2, "img_size": [64, 64], "class_names": list("abcde")}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "m.safetensors"),
              metadata={"config": json.dumps(cfg)})
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "side.safetensors"))
    (tmp_path / "side.json").write_text(json.dumps({"config": cfg, "held_out_accuracy": 0.9}))
    images = torch.randn(1, 3, 64, 64)
    expected = reference(images).detach()
    for name, heads in [("official.pth", 2), ("timm.pth", 2), ("m.safetensors", None),
                        ("side.safetensors", None)]:
        kwargs = {} if heads is None else {"num_heads": heads}
        model = load_deit(tmp_path / name, **kwargs)
        torch.testing.assert_close(model(images).detach(), expected, rtol=1e-5, atol=1e-5)
    assert load_deit(tmp_path / "m.safetensors").cfg.class_names == list("abcde")


def test_named_size_convention_of_64_channels_per_head():
    reference = make_timm_vit(img_size=32, patch_size=16, embed_dim=384, depth=1, num_heads=6)
    assert load_deit(reference.state_dict()).cfg.num_heads == 6
    assert load_deit(reference.state_dict(), model_size="small").cfg.num_heads == 6


def test_mismatches_give_one_clear_line(tmp_path):
    state = make_timm_vit(img_size=32, patch_size=16, embed_dim=384, depth=1, num_heads=6,
                          num_classes=10).state_dict()
    with pytest.raises(CheckpointError, match="width 384 .*DeiT-Tiny has 192; pass --model-size small"):
        load_deit(state, model_size="tiny")
    with pytest.raises(CheckpointError, match="10-class head but 1000 classes were expected"):
        load_deit(state, num_classes=1000)
    with pytest.raises(CheckpointError, match="not a DeiT/ViT checkpoint"):
        load_deit({"conv1.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match="distilled"):
        load_deit({**state, "dist_token": torch.zeros(1, 1, 384)})
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_deit(tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_deit(tmp_path / "garbage.pth")
    model = load_deit(state)
    with pytest.raises(ValueError, match="resize them first"):
        model(torch.zeros(1, 3, 48, 48))
