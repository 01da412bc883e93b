"""palrp/loaders/checkpoints.py: DeiT/ViT checkpoints and named timm models load into timm's own
classes with the stock numbers; preprocessing read from the file; one-line errors."""
import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import make_timm_vit
from palrp.loaders import vision_model as vm
from palrp.loaders.checkpoints import CheckpointError, load_deit, load_timm_model


def _save_safetensors(path, state, cfg=None):
    meta = None if cfg is None else {"config": json.dumps(cfg)}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)


@pytest.mark.parametrize("geometry", [
    dict(img_size=224, patch_size=16, embed_dim=192, depth=2, num_heads=3, num_classes=1000),
    dict(img_size=96, patch_size=16, embed_dim=48, depth=2, num_heads=4, num_classes=7),
    dict(img_size=64, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10),
])
def test_load_deit_is_timm_with_inferred_geometry(geometry):
    reference = make_timm_vit(**geometry)
    model = load_deit(reference.state_dict(), num_heads=geometry["num_heads"])
    assert type(model).__name__ == "VisionTransformer" and not model.training
    assert vm.image_size(model) == (geometry["img_size"],) * 2
    assert vm.patch_size(model) == (geometry["patch_size"],) * 2
    assert model.num_classes == geometry["num_classes"]
    assert model.blocks[0].attn.num_heads == geometry["num_heads"]
    images = torch.randn(2, 3, geometry["img_size"], geometry["img_size"])
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), rtol=1e-6, atol=1e-6)


def test_formats_and_preprocessing_from_the_file(tmp_path):
    reference = make_timm_vit(img_size=64, patch_size=8, embed_dim=32, num_heads=2)
    state = reference.state_dict()
    torch.save({"model": state, "optimizer": {}, "epoch": 3}, tmp_path / "official.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.bin")
    cfg = {"num_heads": 2, "img_size": [64, 64], "class_names": list("abcde"),
           "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}
    _save_safetensors(tmp_path / "m.safetensors", state, cfg)
    _save_safetensors(tmp_path / "side.safetensors", state)
    (tmp_path / "side.json").write_text(json.dumps({"config": cfg, "held_out_accuracy": 0.9}))
    images = torch.randn(1, 3, 64, 64)
    expected = reference(images).detach()
    for name, heads in [("official.pth", 2), ("ddp.bin", 2), ("m.safetensors", None),
                        ("side.safetensors", None)]:
        model = load_deit(tmp_path / name, **({} if heads is None else {"num_heads": heads}))
        torch.testing.assert_close(model(images).detach(), expected, rtol=1e-6, atol=1e-6)
    model = load_deit(tmp_path / "m.safetensors")
    assert vm.class_names(model) == list("abcde")
    data = vm.data_config(model)
    assert data["mean"] == pytest.approx((0.5, 0.4, 0.3)) and data["input_size"] == (3, 64, 64)
    x01 = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(vm.normalize(model, x01),
                               (x01 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.2)
    # without a config the DeiT entry's ImageNet mean/std apply
    assert vm.data_config(load_deit(tmp_path / "official.pth", num_heads=2))["mean"] == \
        pytest.approx((0.485, 0.456, 0.406))


def test_embedded_demo_loads_to_the_same_numbers():
    """The shipped demo DeiT: the same logits as timm's VisionTransformer built by hand from the
    geometry its sidecar JSON records and loaded from the raw safetensors tensors."""
    from safetensors.torch import load_file
    from palrp.data.demo_vision import demo_model_path
    path = demo_model_path()
    recorded = json.loads(path.with_suffix(".json").read_text())
    recorded = recorded.get("config", recorded)
    by_hand = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=recorded["img_size"],
        patch_size=recorded["patch_size"], embed_dim=recorded["embed_dim"],
        depth=recorded["depth"], num_heads=recorded["num_heads"],
        mlp_ratio=recorded["mlp_ratio"], num_classes=recorded["num_classes"]).eval()
    by_hand.load_state_dict(load_file(str(path)), strict=True)
    model = load_deit(path)
    assert vm.image_size(model) == (recorded["img_size"],) * 2
    torch.manual_seed(0)
    images = torch.randn(3, 3, *vm.image_size(model))
    with torch.no_grad():
        torch.testing.assert_close(model(images), by_hand(images), rtol=0, atol=0)
    assert vm.class_names(model) == recorded["class_names"]
    assert vm.data_config(model)["mean"] == pytest.approx(recorded["mean"])


def test_deit_errors_one_line(tmp_path):
    state = make_timm_vit(img_size=32, patch_size=16, embed_dim=384, depth=1, num_heads=6,
                          num_classes=10).state_dict()
    with pytest.raises(CheckpointError, match="does not record its number of attention heads"
                       ".*pass --num-heads N"):
        load_deit(state)                                             # never a guessed count
    assert load_deit(state, num_heads=6).blocks[0].attn.num_heads == 6
    assert load_deit(state, model_size="small").blocks[0].attn.num_heads == 6
    with pytest.raises(CheckpointError, match="width 384 .*DeiT-Tiny has 192; pass --model-size small"):
        load_deit(state, model_size="tiny")
    with pytest.raises(CheckpointError, match="10-class head but 1000 classes were expected"):
        load_deit(state, num_classes=1000)
    with pytest.raises(CheckpointError, match="not a DeiT/ViT checkpoint"):
        load_deit({"conv1.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match="distilled.*--timm-model"):
        load_deit({**state, "dist_token": torch.zeros(1, 1, 384)})
    with pytest.raises(CheckpointError, match="unexpected blocks.0.ls1.gamma.*--timm-model"):
        load_deit({**state, "blocks.0.ls1.gamma": torch.zeros(384)}, num_heads=6)
    with pytest.raises(CheckpointError, match="not divisible by 5 heads"):
        load_deit(state, num_heads=5)
    with pytest.raises(CheckpointError, match="unknown DeiT setting"):
        load_deit(state, colour="red")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_deit(tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_deit(tmp_path / "garbage.pth")
    model = load_deit(state, num_heads=6)
    with pytest.raises(ValueError, match="resize them"):
        vm.grid_size(model, torch.zeros(1, 3, 48, 48))


TIMM_FAMILIES = {
    "deit_tiny_distilled_patch16_224": dict(img_size=32, patch_size=8, depth=2),
    "deit3_small_patch16_224": dict(img_size=32, embed_dim=48, num_heads=2, depth=2),
    "vit_small_patch14_dinov2": dict(img_size=28, embed_dim=48, num_heads=2, depth=2),
    "vit_small_patch14_reg4_dinov2": dict(img_size=28, embed_dim=48, num_heads=2, depth=2),
    "vit_base_patch16_clip_224": dict(img_size=32, embed_dim=48, num_heads=2, depth=2),
    "eva02_tiny_patch14_224": dict(img_size=28, depth=2),
}


@pytest.mark.parametrize("name", sorted(TIMM_FAMILIES))
def test_load_timm_model_every_family(tmp_path, name):
    kwargs = TIMM_FAMILIES[name]
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False, num_classes=6, **kwargs).eval()
    path = tmp_path / "w.safetensors"
    # the create arguments the weights do not store travel in the file's config
    config = {k: v for k, v in kwargs.items() if k != "img_size"}
    _save_safetensors(path, reference.state_dict(), config)
    model = load_timm_model(name, path)
    assert type(model) is type(reference) and model.num_classes == 6
    assert vm.image_size(model) == vm.image_size(reference)  # from the position table
    images = torch.randn(2, 3, *vm.image_size(model))
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), rtol=1e-6, atol=1e-6)
    # timm's own preprocessing for the family (e.g. CLIP's mean/std)
    assert vm.data_config(model)["mean"] == pytest.approx(vm.data_config(reference)["mean"])


def test_load_timm_model_pth_bin_and_errors(tmp_path):
    torch.manual_seed(1)
    kwargs = dict(img_size=32, embed_dim=48, num_heads=2, depth=2)
    reference = timm.create_model("vit_base_patch16_clip_224", pretrained=False, num_classes=3,
                                  **kwargs).eval()
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "w.pth")
    torch.save(reference.state_dict(), tmp_path / "w.bin")
    images = torch.randn(1, 3, 32, 32)
    for name in ("w.pth", "w.bin"):
        model = load_timm_model("vit_base_patch16_clip_224", tmp_path / name, **kwargs)
        torch.testing.assert_close(model(images).detach(), reference(images).detach())
    with pytest.raises(CheckpointError, match="unknown timm model 'vit_nonexistent_patch16'"):
        load_timm_model("vit_nonexistent_patch16", tmp_path / "w.pth")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_timm_model("vit_base_patch16_clip_224", tmp_path / "missing.safetensors")
    # weights of another architecture: one line naming the mismatch
    with pytest.raises(CheckpointError, match="does not fit timm model 'eva02_tiny_patch14_224'"):
        load_timm_model("eva02_tiny_patch14_224", tmp_path / "w.pth", **kwargs)
    with pytest.raises(CheckpointError, match="does not fit timm model 'vit_base_patch16_clip_224'"
                                              ": the weights have mlp_ratio 4.0, .* has mlp_ratio "
                                              "2.0; give mlp_ratio=4.0"):
        load_timm_model("vit_base_patch16_clip_224", tmp_path / "w.pth", img_size=32,
                        embed_dim=48, num_heads=2, depth=2, mlp_ratio=2.0)
    with pytest.raises(CheckpointError, match="cannot build timm model"):
        load_timm_model("vit_base_patch16_clip_224", tmp_path / "w.pth", no_such_argument=1)



def _one_line_error(name, path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_timm_model(name, path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_load_timm_model_weights_of_another_size_name_the_shapes(tmp_path):
    """A user's checkpoint of the named family at another depth, width or patch: the one line
    says which shapes differ and, where exactly one of timm's sizes has every shape of the
    weights (checked on the meta device, not loaded by guess), names it; otherwise it names
    the create arguments to give."""
    path = tmp_path / "w.pth"

    def save(name, **kwargs):
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, img_size=32, num_classes=3, **kwargs)
        torch.save(model.state_dict(), path)
        return model

    # vit_tiny weights loaded as vit_small: the width differs; timm's tiny fits, and does load
    reference = save("vit_tiny_patch16_224")
    message = _one_line_error("vit_small_patch16_224", path)
    assert ("the weights have embed_dim 192, vit_small_patch16_224 has embed_dim 384; pass "
            "--timm-model vit_tiny_patch16_224 (3 heads)") in message
    assert "give embed_dim=192 and its num_heads" in message
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_timm_model("vit_tiny_patch16_224", path)(images),
                                   reference.eval()(images))
    # a 2-block vit_small: no timm name has that depth, so the create argument is named
    save("vit_small_patch16_224", depth=2)
    message = _one_line_error("vit_small_patch16_224", path)
    assert "the weights have depth 2, vit_small_patch16_224 has depth 12" in message
    assert "give depth=2 in the weights' config" in message and "--timm-model" not in message
    (tmp_path / "w.json").write_text(json.dumps({"config": {"depth": 2}}))
    assert len(load_timm_model("vit_small_patch16_224", path).blocks) == 2
    (tmp_path / "w.json").unlink()
    # patch 8 instead of 16: timm's vit_small_patch8_224
    save("vit_small_patch16_224", patch_size=8)
    message = _one_line_error("vit_small_patch16_224", path)
    assert "the weights have patch_size 8, vit_small_patch16_224 has patch_size 16" in message
    assert "--timm-model vit_small_patch8_224 (6 heads)" in message
    # an EVA-02 at another size: the same for that family
    torch.manual_seed(0)
    eva = timm.create_model("eva02_tiny_patch14_224", pretrained=False, img_size=28, num_classes=3)
    torch.save(eva.state_dict(), path)
    message = _one_line_error("eva02_small_patch14_224", path)
    assert "embed_dim 192, eva02_small_patch14_224 has embed_dim 384" in message
    assert "--timm-model eva02_tiny_patch14_224 (3 heads)" in message
    # another family altogether is not taken for another size: the keys are named instead
    message = _one_line_error("vit_small_patch16_224", path)
    assert "does not fit timm model 'vit_small_patch16_224' (" in message and "--timm-model" not in message
