"""``--preprocess {protocol,model}`` of the segmentation and perturbation drivers.

``model``: the model's timm eval transform (vision_model.EvalTransform) for the images, and for
the segmentation masks the same resize and centre crop with nearest neighbour; ``protocol``
(the default, the paper's numbers): the bilinear resize without crop, unchanged. The choice is
part of the run's identity: a resume with the other one is refused with one line.

The model is a tiny random DeiT (32 px, patch 8) whose timm data config has crop_pct 0.9 and
bicubic interpolation, so ``model`` differs from ``protocol`` in every step.
"""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

import analyze_pert_results as pert
import analyze_seg_results as seg
from conftest import make_timm_vit, record_explain_batch
from palrp.data.gtsegs import ImageNetSegDataset, write_gtsegs
from palrp.data.imagenet import ImageNetFolder
from palrp.loaders.checkpoints import load_deit
from palrp.loaders import vision_model as vm

#: Source images of the segmentation file: 70 x 140 (H x W). With the model's crop_pct 0.9 the
#: short side goes to floor(32 / 0.9) = 35, i.e. exactly half size (140 -> 70), and the 32 x 32
#: centre crop starts at row round((35 - 32) / 2) = 2 and column round((70 - 32) / 2) = 19.
HEIGHT, WIDTH, TOP, LEFT = 70, 140, 2, 19


def _block_mask(seed: int) -> np.ndarray:
    """A (35, 70) {0, 1} pattern of 2 x 2 source blocks: a rectangle at block rows 5..9 and
    columns 25..34, a strip over block columns 0..18 (left of the crop) and the last block row
    (below it), plus a few random blocks."""
    rng = np.random.default_rng(seed)
    blocks = (rng.random((HEIGHT // 2, WIDTH // 2)) > 0.93).astype(np.uint8)
    blocks[5:10, 25:35] = 1
    blocks[:, :LEFT] = 1
    blocks[-1, :] = 1
    return blocks


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny DeiT checkpoint (5 classes), a gtsegs file of two 70 x 140 images whose masks
    are 2 x 2 block patterns, and an ImageNet folder of 5 classes of non-square images."""
    root = tmp_path_factory.mktemp("preprocess")
    torch.save({"model": make_timm_vit(img_size=32, patch_size=8).state_dict()}, root / "tiny.pth")
    (root / "tiny.json").write_text('{"config": {"num_heads": 3}}')
    rng = np.random.default_rng(0)
    images = [(rng.random((HEIGHT, WIDTH, 3)) * 255).astype("uint8") for _ in range(2)]
    blocks = [_block_mask(seed) for seed in range(2)]
    masks = [np.kron(b, np.ones((2, 2), dtype=np.uint8)) for b in blocks]
    write_gtsegs(root / "seg.mat", images, masks)
    for c in range(5):
        folder = root / "imagenet" / "val" / f"class{c}"
        folder.mkdir(parents=True)
        h, w = (45, 71) if c % 2 else (80, 37)
        Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8")).save(folder / "0.png")
    return {"root": root, "images": images, "blocks": blocks,
            "model": load_deit(root / "tiny.pth")}


def test_the_model_preprocessing_differs_from_the_protocol(data):
    cfg = vm.data_config(data["model"])
    assert cfg["crop_pct"] == pytest.approx(0.9) and cfg["interpolation"] == "bicubic"
    assert cfg["input_size"] == (3, 32, 32)


@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
def test_eval_transform_is_timms_eval_transform(crop_mode):
    """EvalTransform gives exactly the pixels of timm's create_transform(is_training=False),
    for square and non-square targets, odd offsets (torchvision rounds them) and every crop
    mode."""
    rng = np.random.default_rng(3)
    for size in ((32, 32), (32, 48)):
        for pct, interpolation in ((0.9, "bicubic"), (0.875, "bilinear"), (1.0, "bicubic")):
            ours = vm.EvalTransform(size, pct, interpolation, crop_mode, fill=(124, 116, 104))
            theirs = create_transform(input_size=(3, *size), interpolation=interpolation,
                                      crop_pct=pct, crop_mode=crop_mode, is_training=False,
                                      mean=(0.485, 0.456, 0.406), normalize=False)
            for h, w in ((70, 140), (45, 71), (80, 37), (20, 90), (33, 33)):
                image = Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8"))
                got = ours(image)
                assert got.shape == (3, *size)
                assert torch.equal((got * 255).round().to(torch.uint8), theirs(image)), (size, pct, h, w)


def test_the_mask_gets_the_images_resize_and_crop(data):
    """A hand-made block mask lands where the geometry says: model pixel (i, j) is source
    block (i + 2, j + 19), so the rectangle of block rows 5..9, columns 25..34 covers rows
    3..7, columns 6..15, and the strips left of and below the crop are gone."""
    transform = vm.eval_transform(data["model"])
    pixels, mask = transform(Image.fromarray(data["images"][0]),
                             np.kron(data["blocks"][0], np.ones((2, 2), dtype=np.uint8)))
    assert mask.dtype == torch.int64 and mask.shape == (32, 32)
    expected = torch.from_numpy(data["blocks"][0][TOP:TOP + 32, LEFT:LEFT + 32].astype(np.int64))
    assert torch.equal(mask, expected)
    rectangle = torch.zeros(32, 32, dtype=torch.bool)
    rectangle[3:8, 6:16] = True
    assert bool(mask[rectangle].all())
    # the image went through the very same geometry (and is what transform(image) alone gives)
    assert torch.equal(pixels, transform(Image.fromarray(data["images"][0])))
    # a mask of another size than its image is refused with one line
    with pytest.raises(ValueError, match="give a mask of the image's size"):
        transform(Image.fromarray(data["images"][0]), np.zeros((10, 10), dtype=np.uint8))


def _seg_args(data, out, *extra):
    return ["--method", "attnlrp", "rollout", "--device", "cpu", "--num-examples", "0",
            "--batch-size", "2", "--model", str(data["root"] / "tiny.pth"),
            "--imagenet-seg-path", str(data["root"] / "seg.mat"), "--output-dir", str(out),
            *extra]


def _normalised(model, pixels01: torch.Tensor) -> torch.Tensor:
    cfg = vm.data_config(model)
    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(-1, 1, 1)
    return (pixels01 - mean) / std


def test_seg_driver_feeds_the_eval_transform_and_scores_the_cropped_mask(data, tmp_path,
                                                                         monkeypatch):
    seen = record_explain_batch(monkeypatch, seg)
    masks_seen = []

    class Recording(seg.SegmentationAccumulator):
        def update(self, maps, masks):
            masks_seen.append(masks.clone())
            return super().update(maps, masks)

    monkeypatch.setattr(seg, "SegmentationAccumulator", Recording)
    assert seg.main(_seg_args(data, tmp_path, "--preprocess", "model")) == 0
    model, transform = data["model"], vm.eval_transform(data["model"])
    expected = torch.stack([_normalised(model, transform(Image.fromarray(im)))
                            for im in data["images"]])
    assert torch.equal(seen[0], expected)
    blocks = torch.stack([torch.from_numpy(b[TOP:TOP + 32, LEFT:LEFT + 32].astype(np.int64))
                          for b in data["blocks"]])
    assert torch.equal(masks_seen[0], blocks)
    folder = tmp_path / "tiny" / "mean"
    results = json.loads((folder / "results.json").read_text())
    assert results["preprocessing"] == {"preprocess": "model", "input_size": [32, 32],
                                        "interpolation": "bicubic", "crop_pct": 0.9,
                                        "crop_mode": "center"}
    assert json.loads((folder / "run.json").read_text())["preprocess"] == "model"
    assert (folder / "results.md").read_text().startswith(
        "Preprocessing `model`: the model's timm eval transform (bicubic, crop_pct 0.9")


def _protocol_item(image: np.ndarray, mask: np.ndarray, model):
    """The protocol's preprocessing as the code before --preprocess wrote it: bilinear resize
    of the whole image to 32 x 32, nearest for the mask, then mean/std."""
    img = Image.fromarray(image).resize((32, 32), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div_(255.0)
    m = Image.fromarray(mask).resize((32, 32), Image.NEAREST)
    return _normalised(model, x), torch.from_numpy(np.asarray(m).astype(np.int64))


def test_protocol_is_unchanged_bit_for_bit(data, tmp_path, monkeypatch):
    """``--preprocess protocol`` (and no flag) feeds exactly the bilinear, uncropped images of
    before and scores the squashed masks; both give the same results and the same run.json."""
    model = data["model"]
    cfg = vm.data_config(model)
    dataset = ImageNetSegDataset(data["root"] / "seg.mat", 32, cfg["mean"], cfg["std"])
    for i, (image, blocks) in enumerate(zip(data["images"], data["blocks"])):
        x, mask, index = dataset[i]
        ex, emask = _protocol_item(image, np.kron(blocks, np.ones((2, 2), dtype=np.uint8)), model)
        assert index == i and torch.equal(x, ex) and torch.equal(mask, emask)
    folder = ImageNetFolder(data["root"] / "imagenet", 32)
    for k in range(len(folder)):
        with Image.open(folder.samples[k][0]) as im:
            im = im.convert("RGB").resize((32, 32), Image.BILINEAR)
            expected = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div_(255.0)
        assert torch.equal(folder[k][0], expected)

    seen = record_explain_batch(monkeypatch, seg)
    assert seg.main(_seg_args(data, tmp_path / "default")) == 0
    assert torch.equal(seen[0], torch.stack([dataset[i][0] for i in range(2)]))
    assert seg.main(_seg_args(data, tmp_path / "explicit", "--preprocess", "protocol")) == 0
    read = lambda name, file: json.loads((tmp_path / name / "tiny" / "mean" / file).read_text())  # noqa
    assert read("default", "results.json")["methods"] == read("explicit", "results.json")["methods"]
    assert read("default", "run.json") == read("explicit", "run.json")
    assert read("default", "run.json")["preprocess"] == "protocol"
    assert read("default", "results.json")["preprocessing"]["preprocess"] == "protocol"


def _one_line_refusal(main, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_seg_resume_with_the_other_choice_is_refused(data, tmp_path, capsys):
    out = tmp_path / "runs"
    assert seg.main(_seg_args(data, out)) == 0
    message = _one_line_refusal(seg.main, _seg_args(data, out, "--preprocess", "model"))
    assert "preprocess differ: preprocess model here, protocol there" in message
    assert "--overwrite" in message
    # a folder written before --preprocess existed (no key in run.json) resumes as protocol
    # and refuses model
    record = out / "tiny" / "mean" / "run.json"
    legacy = json.loads(record.read_text())
    del legacy["preprocess"]
    record.write_text(json.dumps(legacy))
    capsys.readouterr()
    assert seg.main(_seg_args(data, out, "--preprocess", "protocol")) == 0
    assert "2 of 2 images already done" in capsys.readouterr().out
    assert "preprocess differ" in _one_line_refusal(seg.main,
                                                    _seg_args(data, out, "--preprocess", "model"))
    # and the other way round: a model run refuses a protocol resume
    assert seg.main(_seg_args(data, tmp_path / "m", "--preprocess", "model")) == 0
    message = _one_line_refusal(seg.main, _seg_args(data, tmp_path / "m"))
    assert "preprocess differ: preprocess protocol here, model there" in message


def _pert_args(data, out, *extra):
    return ["--method", "rollout", "--device", "cpu", "--fract", "1", "--batch-size", "8",
            "--model", str(data["root"] / "tiny.pth"), "--data-path",
            str(data["root"] / "imagenet"), "--output-dir", str(out), *extra]


def test_pert_driver_feeds_the_eval_transform_and_refuses_the_other_choice(data, tmp_path,
                                                                           monkeypatch):
    seen = record_explain_batch(monkeypatch, pert)
    out = tmp_path / "runs"
    assert pert.main(_pert_args(data, out, "--preprocess", "model")) == 0
    model, transform = data["model"], vm.eval_transform(data["model"])
    folder = ImageNetFolder(data["root"] / "imagenet", 32)
    expected = []
    for path, _ in folder.samples:
        with Image.open(path) as im:
            expected.append(transform(im))
    # stage 1 explains the normalised eval-transform pixels of every image, in index order
    torch.testing.assert_close(seen[0], vm.normalize(model, torch.stack(expected)),
                               rtol=0, atol=0)
    results = json.loads((out / "tiny" / "zero_fract1" / "results.json").read_text())
    assert results["preprocessing"]["preprocess"] == "model"
    assert results["preprocessing"]["crop_pct"] == pytest.approx(0.9)
    assert "preprocessing `model` (timm eval transform: bicubic, crop_pct 0.9" in (
        out / "tiny" / "zero_fract1" / "results.md").read_text()
    message = _one_line_refusal(pert.main, _pert_args(data, out))
    assert "preprocess differ: preprocess protocol here, model there" in message
