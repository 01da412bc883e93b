"""ImageNet perturbation tests (docs/protocols.md, section 2): the protocol on hand-made maps and curves, the
stage-1 map store, and ``analyze_pert_results.py`` end to end on the embedded demo folders."""
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

import analyze_pert_results as script
from conftest import make_timm_vit
from palrp.data.imagenet import ImageNetFolder
from palrp.loaders import vision_model
from palrp.perturbation.map_store import MapReader, MapWriter, stored_indices
from palrp.perturbation.protocol import (STEPS, auc_steps, auc_with_clean, blur_parameters,
                                   gaussian_blur, perturb, predict_perturbed, removal_counts,
                                   removal_masks, summarize)

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["pa_lrp", "attnlrp", "rollout"]


# --- the protocol on hand-made inputs -------------------------------------------------------

def test_removes_exactly_k_pixels_in_all_channels_most_relevant_first():
    height, width = 4, 5
    relevance = torch.randperm(height * width, generator=torch.Generator().manual_seed(0)).float()
    maps = (3.0 * relevance - 7.0).view(1, height, width)        # min-max normalisation keeps the order
    images = torch.rand(1, 3, height, width) * 0.8 + 0.1          # no pixel is 0 before removal
    counts = removal_counts(height * width)
    assert counts == [2, 4, 6, 8, 10, 12, 14, 16, 18]
    for positive in (True, False):
        out = perturb(images, maps, positive)
        assert out.shape == (len(STEPS), 1, 3, height, width)
        order = torch.argsort(relevance, descending=positive)
        for step, k in enumerate(counts):
            removed = (out[step, 0] == 0)
            assert removed.all(0).eq(removed.any(0)).all()        # every channel, or none
            expected = torch.zeros(height * width, dtype=torch.bool)
            expected[order[:k]] = True
            assert torch.equal(removed[0].flatten(), expected)
            kept = ~expected.view(height, width)
            assert torch.equal(out[step, 0][:, kept], images[0][:, kept])   # from the clean image


def test_removal_counts_are_the_originals_truncation():
    """The original: int(base_size * step) in float64 (base_size was 224 * 224)."""
    assert removal_counts(224 * 224) == [int(224 * 224 * s) for s in
                                         [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]]
    assert removal_counts(224 * 224)[:3] == [5017, 10035, 15052]
    assert removal_counts(90)[6] == 62                  # 0.7 * 90 == 62.99999999999999
    assert removal_counts(150 * 150)[6] == 15749        # 0.7 * 22500 == 15749.999999999998


def test_ties_go_in_raster_order_and_constant_maps_do_not_fail():
    maps = torch.zeros(2, 2, 5)
    maps[0, 1, 4] = 1.0
    masks = removal_masks(maps, positive=True, steps=(0.3,))      # k = 3 of 10
    assert masks[0, 0].flatten().nonzero().flatten().tolist() == [0, 1, 9]
    assert masks[0, 1].flatten().nonzero().flatten().tolist() == [0, 1, 2]
    negative = removal_masks(maps, positive=False, steps=(0.3,))
    assert negative[0, 0].flatten().nonzero().flatten().tolist() == [0, 1, 2]


def test_mean_replacement_is_the_images_channel_mean():
    images = torch.rand(2, 3, 6, 6)
    maps = torch.rand(2, 6, 6)
    out = perturb(images, maps, True, kind="mean")
    removed = removal_masks(maps, True)
    mean = images.mean(dim=(2, 3))
    for step in (0, 4, 8):
        for b in range(2):
            for c in range(3):
                values = out[step, b, c][removed[step, b]]
                assert torch.allclose(values, mean[b, c].expand_as(values))
                assert torch.equal(out[step, b, c][~removed[step, b]], images[b, c][~removed[step, b]])


def test_blur_replacement_is_a_gaussian_blur_of_the_clean_image():
    sigma, kernel = blur_parameters(64, 64)
    assert sigma == 2.0 and kernel == 13
    assert blur_parameters(224, 224) == (7.0, 43)
    images = torch.rand(2, 3, 20, 24, dtype=torch.float64)
    blurred = gaussian_blur(images, sigma=1.5, kernel_size=9)
    reference = np.stack([[gaussian_filter(images[b, c].numpy(), 1.5, mode="mirror", radius=4)
                           for c in range(3)] for b in range(2)])
    np.testing.assert_allclose(blurred.numpy(), reference, atol=1e-12)
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat), flat)
    maps = torch.rand(2, 20, 24)
    out = perturb(images, maps, False, kind="blur")
    removed = removal_masks(maps, False)[:, :, None].expand_as(out)
    default_blur = gaussian_blur(images)[None].expand_as(out)
    assert torch.equal(out[removed], default_blur[removed])


def test_chunked_scoring_equals_the_materialised_perturbation(tiny_deit):
    images = torch.rand(3, 3, 32, 32)
    maps = [torch.rand(3, 32, 32), torch.rand(3, 32, 32)]
    preds = predict_perturbed(tiny_deit, images, maps, [True, False], "zero", chunk=5)
    for c, positive in enumerate((True, False)):
        stack = perturb(images, maps[c], positive).flatten(0, 1)
        with torch.no_grad():
            expected = tiny_deit(vision_model.normalize(tiny_deit, stack)).argmax(-1).view(len(STEPS), 3)
        assert torch.equal(preds[c], expected)


def test_aucs_of_hand_made_curves():
    assert auc_steps([1.0] * 9) == pytest.approx(0.8)
    assert auc_with_clean(1.0, [1.0] * 9) == pytest.approx(90.0)
    falling = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    assert auc_steps(falling) == pytest.approx(0.4)               # (0.9 + 0.1) / 2 * 0.8
    assert auc_with_clean(1.0, falling) == pytest.approx(100 * (0.4 + 0.095))
    assert auc_steps([0, 1, 0, 0, 0, 0, 0, 0, 0]) == pytest.approx(0.1)
    records = [{"index": 0, "label": 2, "pred": 2,
                "positive": {"predicted": [2, 2, 0, 0, 0, 0, 0, 0, 0], "target": [2] * 9},
                "negative": {"predicted": [2] * 9, "target": [1] * 9}},
               {"index": 1, "label": 1, "pred": 0,
                "positive": {"predicted": [0] * 9, "target": [0] * 9},
                "negative": {"predicted": [1] * 9, "target": [1] * 9}}]
    out = summarize(records)
    assert out["clean_accuracy"] == 0.5 and out["n_images"] == 2
    assert out["positive"]["predicted"]["curve"] == [1.0, 1.0] + [0.5] * 7
    assert out["positive"]["predicted"]["auc"] == pytest.approx(0.1 * 1.0 + 0.1 * 0.75 + 0.6 * 0.5)
    assert out["positive"]["predicted"]["curve_with_clean"][0] == 1.0
    assert out["positive"]["target"]["curve_with_clean"] == [0.5] + [0.5] * 9
    assert out["positive"]["target"]["auc_with_clean"] == pytest.approx(45.0)
    assert out["negative"]["predicted"]["curve"] == [0.5] * 9
    assert out["negative"]["target"]["curve"] == [0.5] * 9


def test_label_order_matches_torchvision_imagefolder(tmp_path):
    from torchvision.datasets import ImageFolder
    for name in ("n02", "B_upper", "a10", "a2", "n01"):
        folder = tmp_path / "val" / name
        folder.mkdir(parents=True)
        for j in (3, 1):
            Image.new("RGB", (5, 7), (j * 40, 0, 0)).save(folder / f"img{j}.png")
    ours = ImageNetFolder(tmp_path, 8)
    theirs = ImageFolder(str(tmp_path / "val"))
    assert ours.classes == theirs.classes
    assert [(Path(p).name, y) for p, y in ours.samples] == [(Path(p).name, y) for p, y in theirs.samples]
    image, label, index = ours[4]
    assert image.shape == (3, 8, 8) and label == theirs.targets[4] and index == 4


def test_map_store_cuts_a_torn_append_and_merges_ranks(tmp_path):
    maps = {"predicted": np.ones((2, 3, 4)), "target": np.zeros((2, 3, 4))}
    writer = MapWriter(tmp_path, "m", 0, (3, 4))
    writer.append([5, 7], [1, 2], [1, 0], maps)
    writer.close()
    with h5py.File(tmp_path / "m.rank0.h5", "a") as handle:    # a crash after the maps, before index
        handle["predicted"].resize(3, axis=0)
        handle["label"].resize(3, axis=0)
    writer = MapWriter(tmp_path, "m", 0, (3, 4))
    assert len(writer) == 2 and writer.file["predicted"].shape == (2, 3, 4)
    writer.close()
    other = MapWriter(tmp_path, "m", 1, (3, 4))
    other.append([2], [0], [0], {"predicted": np.full((1, 3, 4), 2.0), "target": np.ones((1, 3, 4))})
    other.close()
    assert stored_indices(tmp_path, "m") == {2, 5, 7}
    reader = MapReader(tmp_path, "m")
    got = reader.read([7, 2])
    reader.close()
    assert got["label"].tolist() == [2, 0] and got["pred"].tolist() == [0, 0]
    assert got["predicted"][1].max() == 2.0 and got["target"][0].max() == 0.0
    with pytest.raises(ValueError, match="another --output-dir"):
        MapWriter(tmp_path, "m", 0, (5, 5))


# --- the script end to end on the embedded demo -------------------------------------------------

@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    from palrp.data.demo_vision import ensure_demo_imagenet
    return ensure_demo_imagenet(tmp_path_factory.mktemp("pert") / "imagenet_demo")


def _argv(root, out, *extra):
    return ["--demo", "--data-path", str(root), "--fract", "0.05", "--batch-size", "4",
            "--method", *METHODS, "--output-dir", str(out), "--device", "cpu", *extra]


def _results(out) -> dict:
    data = json.loads((out / "deit_demo" / "zero_fract0.05" / "results.json").read_text())
    data.pop("this_run")
    return data


@pytest.fixture(scope="module")
def full_run(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("pert_full")
    assert script.main(_argv(demo_root, out)) == 0
    return out


def test_demo_end_to_end(full_run, demo_root):
    data = _results(full_run)
    assert data["n_images"] == 6 and data["n_total"] == 128 and data["steps"] == list(STEPS)
    folder = full_run / "deit_demo" / "zero_fract0.05"
    assert (folder / "curves.png").stat().st_size > 0
    table = (folder / "results.md").read_text()
    assert "| PA-LRP |" in table and "| Rollout |" in table
    for name in METHODS:
        entry = data["methods"][name]
        for test in ("positive", "negative"):
            for mode in ("predicted", "target"):
                curve = entry[test][mode]["curve"]
                assert len(curve) == 9 and all(0 <= v <= 1 for v in curve)
                assert entry[test][mode]["auc"] == pytest.approx(auc_steps(curve))
        assert entry["positive"]["predicted"]["curve_with_clean"][0] == 1.0
    # the stored maps are the registry's maps, and the scores follow from them
    from palrp.baselines.registry import explain_batch
    from palrp.data.imagenet import subset_indices
    from palrp.data.demo_vision import demo_model_path
    from palrp.loaders.checkpoints import load_deit
    model = load_deit(demo_model_path())
    subset = subset_indices(128, 0.05, 42)
    reader = MapReader(full_run / "deit_demo" / "explanations", "rollout")
    stored = reader.read(subset)
    reader.close()
    dataset = ImageNetFolder(demo_root, vision_model.image_size(model), indices=subset)
    images = torch.stack([dataset[k][0] for k in range(len(subset))])
    labels = torch.tensor([dataset[k][1] for k in range(len(subset))])
    assert stored["label"].tolist() == labels.tolist()
    expected = explain_batch(model, vision_model.normalize(model, images), ["rollout"],
                             target=labels)["rollout"]
    np.testing.assert_allclose(stored["target"], expected.numpy(), rtol=1e-4, atol=1e-6)
    preds = predict_perturbed(model, images, [torch.from_numpy(stored["predicted"])], [False],
                              "zero", chunk=64)
    curve = (preds[0] == torch.from_numpy(stored["pred"])).float().mean(1).tolist()
    assert curve == pytest.approx(data["methods"]["rollout"]["negative"]["predicted"]["curve"])


def test_interrupted_run_resumes_to_the_same_result(full_run, demo_root, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = MapWriter.append

    def crash_on_fifth_append(self, *args, **kwargs):
        calls["n"] += 1          # batch 1: pa_lrp, attnlrp, rollout; batch 2: pa_lrp, then a crash
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MapWriter, "append", crash_on_fifth_append)
    with pytest.raises(KeyboardInterrupt):
        script.main(_argv(demo_root, tmp_path))
    monkeypatch.setattr(MapWriter, "append", real)
    maps_dir = tmp_path / "deit_demo" / "explanations"
    assert [len(stored_indices(maps_dir, name)) for name in METHODS] == [6, 4, 4]
    assert script.main(_argv(demo_root, tmp_path)) == 0
    assert _results(tmp_path) == _results(full_run)
    # now a crash during scoring: a lost record and a torn last line in the per-image stores
    for store in (tmp_path / "deit_demo" / "scores" / "zero").glob("*.jsonl"):
        lines = store.read_text().splitlines(keepends=True)
        store.write_text("".join(lines[:3]) + lines[3][:20])
    assert script.main(_argv(demo_root, tmp_path)) == 0
    summary = json.loads((tmp_path / "deit_demo" / "zero_fract0.05" / "results.json").read_text())
    assert summary["this_run"]["explained_images"] == 0 and summary["this_run"]["scored_images"] == 3
    assert _results(tmp_path) == _results(full_run)


# --- bad input: one clear line, non-zero exit --------------------------------------------------

def _error_line(argv) -> str:
    with pytest.raises(SystemExit) as info:
        script.main(argv)
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_data_path_without_val_folders_exits_with_one_line(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    proc = subprocess.run([sys.executable, str(ROOT / "analyze_pert_results.py"), "--demo",
                           "--method", "rollout", "--data-path", str(tmp_path / "data"),
                           "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "val/" in lines[0]
    (tmp_path / "data" / "val").mkdir()
    assert "no class folders" in _error_line(["--demo", "--method", "rollout", "--data-path",
                                              str(tmp_path / "data"), "--output-dir", str(tmp_path)])


def test_fract_selecting_no_image_exits(demo_root, tmp_path):
    message = _error_line(["--demo", "--method", "rollout", "--data-path", str(demo_root),
                           "--fract", "0.001", "--output-dir", str(tmp_path)])
    assert "selects no image of 128" in message


def test_class_count_mismatch_exits(demo_root, tmp_path):
    checkpoint = tmp_path / "five_classes.pth"
    torch.save({"model": make_timm_vit(num_classes=5).state_dict()}, checkpoint)
    checkpoint.with_suffix(".json").write_text('{"config": {"num_heads": 3}}')
    message = _error_line(["--model", str(checkpoint), "--method", "rollout", "--data-path",
                           str(demo_root), "--output-dir", str(tmp_path)])
    assert "5-class head" in message and "8 class folders" in message


def test_target_combinations_are_reused_only_where_label_equals_prediction():
    """Scoring the target maps only for images whose label differs from the prediction gives
    exactly what scoring every (test, mode) combination does. The demo DeiT on procedural
    images, with object masks as the differing target maps, predicts many classes here."""
    import analyze_pert_results as driver
    from palrp.data.demo_vision import demo_model_path
    from palrp.data.procedural_vision import generate
    from palrp.loaders.checkpoints import load_deit
    from palrp.perturbation.protocol import predict_perturbed

    model = load_deit(demo_model_path())
    pixels, masks, _ = generate(5, range(4), size=64)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    torch.manual_seed(0)
    predicted = torch.rand(4, 64, 64)
    target = predicted.clone()
    differ = torch.tensor([False, True, False, True])
    target[differ] = torch.from_numpy(masks).float()[differ]
    maps = {"predicted": predicted, "target": target}
    got = driver._predict_combos(model, images, maps, differ, "zero", chunk=7)
    expected = predict_perturbed(model, images, [maps[mode] for _, mode in driver.COMBOS],
                                 [test == "positive" for test, _ in driver.COMBOS], "zero", 7)
    assert len(expected.unique()) > 3                       # the predictions do vary
    assert not torch.equal(expected[1][:, differ], expected[0][:, differ])
    assert torch.equal(got, expected)
