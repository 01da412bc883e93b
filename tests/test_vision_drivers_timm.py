"""The vision drivers with ``--timm-model NAME --model weights``: end to end on a tiny saved CLIP
ViT (CLIP's mean/std, not ImageNet's), preprocessing from the model's timm data config, and
one-line errors for the loader's bad inputs."""
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import analyze_pert_results as pert
import analyze_seg_results as seg
import explain_image as cli
from conftest import record_explain_batch
from palrp.data.gtsegs import ImageNetSegDataset, write_gtsegs
from palrp.loaders import vision_model as vm
from palrp.loaders.checkpoints import load_timm_model

NAME = "vit_base_patch16_clip_224"
GEOMETRY = dict(patch_size=8, embed_dim=24, num_heads=3, depth=2)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny random CLIP ViT (3 classes, 32 px) saved as safetensors (create arguments in its
    metadata; the image size comes from the position table) and as a plain .bin state dict (its
    create arguments in the sibling clip_tiny.json)."""
    folder = tmp_path_factory.mktemp("timm_weights")
    torch.manual_seed(0)
    model = timm.create_model(NAME, pretrained=False, img_size=32, num_classes=3, **GEOMETRY)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "clip_tiny.safetensors"), metadata={"config": json.dumps(GEOMETRY)})
    torch.save(state, folder / "clip_tiny.bin")
    (folder / "clip_tiny.json").write_text(json.dumps({"config": GEOMETRY}))
    return folder


@pytest.fixture(scope="module")
def seg_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = [(rng.random((40 + i, 50, 3)) * 255).astype("uint8") for i in range(3)]
    masks = [(rng.random((40 + i, 50)) > 0.6).astype("uint8") for i in range(3)]
    return write_gtsegs(tmp_path_factory.mktemp("seg") / "small.mat", images, masks)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """``val/<class>/<image>`` with 3 classes of 2 images of 48x40 pixels."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(1)
    for c in ("apple", "boat", "cat"):
        (root / "val" / c).mkdir(parents=True)
        for i in range(2):
            pixels = (rng.random((40, 48, 3)) * 255).astype("uint8")
            Image.fromarray(pixels).save(root / "val" / c / f"{i}.png")
    return root


def _unnormalise(x, mean, std):
    return x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)


def test_seg_driver_with_timm_model(weights, seg_file, tmp_path, monkeypatch, capsys):
    seen = record_explain_batch(monkeypatch, seg)
    assert seg.main(["--timm-model", NAME, "--model", str(weights / "clip_tiny.safetensors"),
                     "--method", "pa_lrp", "rollout", "transformer_attribution", "--batch-size", "3",
                     "--device", "cpu", "--num-examples", "1", "--imagenet-seg-path",
                     str(seg_file), "--output-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| Transformer Attribution |" in printed and "| PA-LRP |" in printed
    results = json.loads((tmp_path / "clip_tiny" / "mean" / "results.json").read_text())
    assert results["img_size"] == [32, 32] and results["n_images"] == 3
    assert results["mean"] == pytest.approx(CLIP_MEAN) and results["std"] == pytest.approx(CLIP_STD)
    # the images the methods saw: the file's images at the data config's 32 px, in [0, 1]
    # after undoing CLIP's normalisation (not ImageNet's)
    raw = ImageNetSegDataset(seg_file, (32, 32), (0, 0, 0), (1, 1, 1))
    expected = torch.stack([raw[i][0] for i in range(3)])
    torch.testing.assert_close(_unnormalise(seen[0], CLIP_MEAN, CLIP_STD), expected,
                               rtol=1e-5, atol=1e-5)


def test_pert_driver_with_timm_model(weights, image_folder, tmp_path, monkeypatch, capsys):
    seen = record_explain_batch(monkeypatch, pert)
    assert pert.main(["--timm-model", NAME, "--model", str(weights / "clip_tiny.bin"),
                      "--method", "rollout", "grad_x_input", "--fract", "1", "--batch-size", "4",
                      "--device", "cpu", "--data-path", str(image_folder),
                      "--output-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "clip_tiny" / "zero_fract1" / "results.json").read_text())
    assert results["img_size"] == [32, 32] and results["n_images"] == 6
    assert set(results["methods"]) == {"rollout", "grad_x_input"}
    identity = json.loads((tmp_path / "clip_tiny" / "run.json").read_text())
    assert identity["mean"] == pytest.approx(CLIP_MEAN)
    images01 = _unnormalise(torch.cat(seen), CLIP_MEAN, CLIP_STD)
    assert images01.shape[-2:] == (32, 32)
    assert images01.min() > -1e-5 and images01.max() < 1 + 1e-5


def test_explain_image_keeps_the_aspect_ratio_with_the_model_transform(weights, tmp_path):
    """explain_image.py's photo loading is the model's eval transform: short side to
    floor(32 / crop_pct) with the data config's interpolation, centre crop to 32x32."""
    model = load_timm_model(NAME, weights / "clip_tiny.safetensors")
    photo = tmp_path / "wide.png"
    pixels = np.zeros((50, 150, 3), dtype="uint8")
    pixels[:, 50:100] = (0, 0, 255)        # a blue square in the middle third, red elsewhere
    pixels[:, :50, 0] = pixels[:, 100:, 0] = 255
    Image.fromarray(pixels).save(photo)
    got = cli.load_image(photo, model)
    cfg = vm.data_config(model)
    scale = int(32 / cfg["crop_pct"])                  # CLIP: crop_pct 0.95 -> 33
    with Image.open(photo) as image:
        resized = image.resize((scale * 3, scale), Image.BICUBIC)
    # the centre crop's offset as torchvision's CenterCrop rounds it: round(67 / 2) = 34
    left, top = int(round((scale * 3 - 32) / 2)), int(round((scale - 32) / 2))
    expected = torch.from_numpy(np.asarray(resized.crop((left, top, left + 32, top + 32))).copy())
    torch.testing.assert_close(got[0], expected.permute(2, 0, 1).float() / 255)
    # and exactly timm's own eval transform of that data config
    from timm.data import create_transform
    timm_eval = create_transform(**{k: cfg[k] for k in ("input_size", "interpolation",
                                                        "crop_pct", "crop_mode")},
                                 is_training=False, normalize=False)
    with Image.open(photo) as image:
        assert torch.equal((got[0] * 255).round().to(torch.uint8), timm_eval(image.convert("RGB")))
    # the square stays a square: the centre crop is all blue, nothing squashed in from the sides
    assert got[0, 2].min() > 0.9 and got[0, 0].max() < 0.1


def test_explain_image_cli_with_timm_model(weights, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    Image.fromarray((np.random.default_rng(2).random((45, 70, 3)) * 255).astype("uint8")).save(photo)
    out = tmp_path / "fig.png"
    assert cli.main(["--timm-model", NAME, "--model", str(weights / "clip_tiny.safetensors"),
                     "--image", str(photo), "--output", str(out), "--device", "cpu",
                     "--target", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("predicted: ") and "class 1" in printed
    with Image.open(out) as fig:
        assert fig.size[0] > fig.size[1] > 100


def _error(main, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_timm_model_bad_inputs_one_line(weights, image_folder, seg_file, tmp_path):
    good = tmp_path / "ok.png"
    Image.new("RGB", (10, 10)).save(good)
    w = weights / "clip_tiny.safetensors"
    cases = [
        (["--timm-model", NAME, "--method", "rollout"], "needs its weights; pass --model"),
        (["--timm-model", "vit_nonexistent_patch8", "--model", w, "--method", "rollout"],
         "unknown timm model 'vit_nonexistent_patch8'"),
        (["--timm-model", "eva02_tiny_patch14_224", "--model", w, "--method", "rollout"],
         "does not fit timm model 'eva02_tiny_patch14_224'"),
        (["--timm-model", NAME, "--model", tmp_path / "missing.safetensors", "--method", "rollout"],
         "checkpoint not found"),
        (["--timm-model", NAME, "--model", w, "--demo", "--method", "rollout"],
         "--demo and --model-size name other models"),
    ]
    for argv, expected in cases:
        assert expected in _error(seg.main, [*argv, "--imagenet-seg-path", seg_file,
                                             "--output-dir", tmp_path / "s", "--device", "cpu"])
        assert expected in _error(pert.main, [*argv, "--data-path", image_folder,
                                              "--output-dir", tmp_path / "p", "--device", "cpu"])
    for argv, expected in cases[1:4]:
        argv = [a for a in argv if a not in ("--method", "rollout")]
        assert expected in _error(cli.main, [*argv, "--image", good, "--device", "cpu"])
