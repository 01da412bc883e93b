"""Issue 22, images: every image file is read as a viewer shows it, or refused with one line.

The one image-opening function (palrp.data.images.open_image) and its users (load_image, the
ImageNet folder reader, EvalTransform): 16-bit, palette, transparency, CMYK, grayscale, EXIF
orientation, the decompression-bomb limit; a truncated JPEG in a perturbation run is skipped and
reported; a gtsegs mask of another size than its image is refused before work starts; fuzzed
image and gtsegs files give a correct image or the one-line error, never another exception.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

import analyze_pert_results
import analyze_seg_results
from palrp.data.gtsegs import GtSegsError, GtSegsFile, ImageNetSegDataset, write_gtsegs
from palrp.data.imagenet import CorruptImageError, ImageNetFolder, subset_indices
from palrp.data.images import ImageReadError, open_image, to_rgb
from palrp.loaders import vision_model
from palrp.perturbation.map_store import stored_indices

ROOT = Path(__file__).resolve().parents[1]


def _pixels(path) -> np.ndarray:
    image = open_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def _one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def _folder_item(path: Path, tmp_path: Path, size) -> np.ndarray:
    """``path`` read by the ImageNet folder reader (bilinear resize to its own size), 0..255."""
    folder = tmp_path / "folder" / "val" / "only"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, folder / path.name)
    x = ImageNetFolder(tmp_path / "folder", size)[0][0]
    return (x * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)


# --- modes: read as a viewer shows them ---------------------------------------------------------

def test_16_bit_png_and_tiff_are_scaled_by_their_bit_depth(tmp_path):
    ramp = np.rint(np.linspace(0, 65535, 256)).astype(np.uint16)
    values = np.tile(ramp, (4, 1))                       # (4, 256): a horizontal gradient
    expected = np.rint(values * (255 / 65535)).astype(np.uint8)
    for name in ("gradient.png", "gradient.tif"):
        path = tmp_path / name
        Image.fromarray(values).save(path)
        with Image.open(path) as raw:
            assert raw.mode.startswith("I;16")           # PIL's convert("RGB") clips it to white
        got = _pixels(path)
        assert got.shape == (4, 256, 3)
        for c in range(3):
            np.testing.assert_array_equal(got[..., c], expected)
        assert got.min() == 0 and got.max() == 255 and got[0, 128, 0] == 128
    # every reader goes through it: the folder reader and the eval transform
    np.testing.assert_array_equal(_folder_item(tmp_path / "gradient.png", tmp_path, (4, 256)),
                                  np.repeat(expected[..., None], 3, axis=2))
    transform = vision_model.EvalTransform((4, 256), 1.0, "bilinear")
    with Image.open(tmp_path / "gradient.png") as raw:
        x = transform(raw)
    np.testing.assert_array_equal((x[0] * 255).round().numpy().astype(np.uint8), expected)


def test_palette_images_through_their_palette_with_transparency_on_white(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([200, 10, 20, 30, 160, 40, 50, 60, 250] + [0] * (253 * 3))
    image.save(tmp_path / "palette.png")
    colours = np.array([[200, 10, 20], [30, 160, 40], [50, 60, 250]], dtype=np.uint8)
    np.testing.assert_array_equal(_pixels(tmp_path / "palette.png"), colours[indices])
    image.save(tmp_path / "palette_transparent.png", transparency=1)    # index 1 transparent
    expected = colours[indices].copy()
    expected[indices == 1] = 255
    np.testing.assert_array_equal(_pixels(tmp_path / "palette_transparent.png"), expected)


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.array([[[200, 0, 0, 255], [200, 0, 0, 0], [200, 0, 0, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    got = _pixels(tmp_path / "rgba.png").astype(int)
    np.testing.assert_array_equal(got[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(got[0, 1], [255, 255, 255])       # not the red stored under it
    mix = np.array([200, 0, 0]) * 128 / 255 + 255 * 127 / 255
    assert np.abs(got[0, 2] - mix).max() <= 1
    la = np.array([[[0, 255], [0, 0]]], dtype=np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(_pixels(tmp_path / "la.png"), [[[0, 0, 0], [255, 255, 255]]])


def test_cmyk_jpeg_grayscale_and_float_images(tmp_path):
    cmyk = np.zeros((16, 16, 4), dtype=np.uint8)
    cmyk[:, :8, 0] = 255            # cyan left
    cmyk[:, 8:, 2] = 255            # yellow right
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    got = _pixels(tmp_path / "cmyk.jpg").astype(int)
    assert np.abs(got[4, 2] - [0, 255, 255]).max() <= 3
    assert np.abs(got[4, 13] - [255, 255, 0]).max() <= 3
    Image.fromarray(np.full((5, 7), 77, dtype=np.uint8)).save(tmp_path / "gray.png")
    assert (_pixels(tmp_path / "gray.png") == 77).all()
    np.testing.assert_array_equal(_folder_item(tmp_path / "gray.png", tmp_path, (5, 7)),
                                  np.full((5, 7, 3), 77, dtype=np.uint8))
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    np.testing.assert_array_equal(np.asarray(to_rgb(unit))[0, :, 0], [0, 128, 255])
    bytes_range = Image.fromarray(np.array([[0.0, 77.0, 300.0]], dtype=np.float32), mode="F")
    np.testing.assert_array_equal(np.asarray(to_rgb(bytes_range))[0, :, 0], [0, 77, 255])


def test_exif_rotated_jpeg_comes_out_upright_in_every_reader(tmp_path, tiny_timm):
    stored = np.zeros((20, 40, 3), dtype=np.uint8)   # 40 wide, 20 high: red left, blue right
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6                                  # "rotate 90 degrees clockwise to view"
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100)
    got = _pixels(path).astype(int)
    assert got.shape == (40, 20, 3)                   # upright: 20 wide, 40 high
    assert np.abs(got[5, 10] - [255, 0, 0]).max() <= 4     # the left (red) half is now on top
    assert np.abs(got[35, 10] - [0, 0, 255]).max() <= 4
    item = _folder_item(path, tmp_path, (40, 20)).astype(int)
    assert np.abs(item[5, 10] - [255, 0, 0]).max() <= 4 and np.abs(item[35, 10] - [0, 0, 255]).max() <= 4
    x = vision_model.load_image(path, tiny_timm, size=(40, 20), crop_pct=1.0)
    assert x.shape == (1, 3, 40, 20)
    assert x[0, 0, 5, 10] > 0.98 and x[0, 2, 5, 10] < 0.02 and x[0, 2, 35, 10] > 0.98


# --- the decompression-bomb limit ---------------------------------------------------------------

def test_decompression_bomb_gives_one_line_with_the_limit_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.new("RGB", (12, 12)).save(tmp_path / "warned.png")    # over the limit (PIL: a warning)
    Image.new("RGB", (20, 20)).save(tmp_path / "bomb.png")      # over twice the limit (PIL: error)
    for name, pixels, size in (("warned.png", 144, "12x12 = 144 pixels"),
                               ("bomb.png", 400, "400 pixels")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")                      # and no warning is printed
            with pytest.raises(ImageReadError) as info:
                open_image(tmp_path / name)
        message = _one_line(info.value)
        assert message.startswith(f"cannot read image {tmp_path / name}: it has ")
        assert size in message and "over the decompression-bomb limit of 100 pixels" in message
        assert "resize it" in message and f"PALRP_MAX_IMAGE_PIXELS={pixels}" in message
        assert f"PIL.Image.MAX_IMAGE_PIXELS = {pixels}" in message
    monkeypatch.setenv("PALRP_MAX_IMAGE_PIXELS", "400")           # raised for a run
    assert _pixels(tmp_path / "bomb.png").shape == (20, 20, 3)
    monkeypatch.setenv("PALRP_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match=r"^PALRP_MAX_IMAGE_PIXELS='lots' is not a pixel count; "
                                         r"set it to a whole number of pixels, or 0 for no limit$"):
        open_image(tmp_path / "bomb.png")


def test_explain_image_refuses_a_bomb_with_one_line_and_writes_nothing(tmp_path):
    Image.new("RGB", (12, 12)).save(tmp_path / "bomb.png")   # 144 pixels
    out = tmp_path / "out"
    env = {**os.environ, "PALRP_MAX_IMAGE_PIXELS": "100", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "explain_image.py"), "--demo", "--image",
                           str(tmp_path / "bomb.png"), "--output-dir", str(out), "--device", "cpu"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0] == (f"error: cannot read image {tmp_path / 'bomb.png'}: it has 12x12 = 144 "
                        "pixels, over the decompression-bomb limit of 100 pixels "
                        "(PIL.Image.MAX_IMAGE_PIXELS); resize it (e.g. to 4096 px on its long "
                        "side) or, if you trust the file, raise the limit: "
                        "PALRP_MAX_IMAGE_PIXELS=144 (0 for none) in the environment, or "
                        "PIL.Image.MAX_IMAGE_PIXELS = 144 in Python")
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


# --- bad files of an image folder: found up front -----------------------------------------------

def _jpeg_bytes(seed=0, size=(24, 32)) -> bytes:
    import io
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "JPEG",
                                                                          quality=90)
    return buffer.getvalue()


def test_folder_reader_names_every_unreadable_file_before_any_item(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    a, b = tmp_path / "val" / "a", tmp_path / "val" / "b"
    a.mkdir(parents=True)
    b.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(a / "0_good.png")
    jpeg = _jpeg_bytes()
    (a / "1_truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (a / "2_text.jpg").write_text("not an image at all")
    (b / "0_empty.png").write_bytes(b"")
    Image.new("RGB", (50, 50)).save(b / "1_bomb.png")
    (b / "2_good.jpg").write_bytes(jpeg)
    dataset = ImageNetFolder(tmp_path, (8, 8))
    bad = dataset.unreadable()
    assert list(bad) == [1, 2, 3, 4]
    reasons = {Path(e.path).name: e.reason for e in bad.values()}
    assert reasons["1_truncated.jpg"].startswith("the file is truncated (image file is truncated")
    assert reasons["2_text.jpg"].startswith("not an image file PIL can read")
    assert reasons["0_empty.png"] == "the file is empty"
    assert "over the decompression-bomb limit of 1,000 pixels" in reasons["1_bomb.png"]
    for i, error in bad.items():
        assert _one_line(error).startswith(f"cannot decode image {dataset.samples[i][0]} (")
        with pytest.raises(CorruptImageError) as info:
            dataset[i]
        assert str(info.value) == str(error)
    assert dataset[0][0].shape == (3, 8, 8) and dataset[5][0].shape == (3, 8, 8)
    assert dataset.unreadable([0, 5]) == {} and dataset.unreadable(threads=1).keys() == bad.keys()
    with pytest.raises(CorruptImageError, match="1_truncated.jpg"):
        dataset.check_readable()


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    from palrp.data.demo_vision import ensure_demo_imagenet
    return ensure_demo_imagenet(tmp_path_factory.mktemp("images") / "imagenet_demo")


def _pert(root, out, capsys):
    capsys.readouterr()
    code = analyze_pert_results.main(["--demo", "--data-path", str(root), "--fract", "0.05",
                                      "--batch-size", "4", "--method", "rollout", "--output-dir",
                                      str(out), "--device", "cpu"])
    folder = out / "deit_demo"
    return (code, capsys.readouterr(),
            json.loads((folder / "zero_fract0.05" / "results.json").read_text()),
            (folder / "zero_fract0.05" / "results.md").read_text())


def test_truncated_jpeg_in_a_perturbation_run_is_skipped_and_reported(demo_folder, tmp_path,
                                                                       capsys):
    root = tmp_path / "data"
    shutil.copytree(demo_folder, root)
    dataset = ImageNetFolder(root, 32)
    selected = subset_indices(len(dataset), 0.05, 42)
    victim = selected[2]                                          # in the middle of the run
    png = Path(dataset.samples[victim][0])
    jpeg = png.with_suffix(".jpg")                                # same place in the listing
    Image.open(png).convert("RGB").save(jpeg, quality=95)
    whole = jpeg.read_bytes()
    jpeg.write_bytes(whole[: len(whole) * 2 // 3])
    png.unlink()
    out = tmp_path / "out"
    code, printed, results, table = _pert(root, out, capsys)
    assert code == 0
    name = f"{jpeg.parent.name}/{jpeg.name}"
    warning = [line for line in printed.err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "Traceback" not in printed.err
    assert warning[0].startswith(f"warning: skipping 1 of the 6 selected images that cannot be "
                                 f"read ({name}; first: the file is truncated")
    assert results["n_selected"] == 6 and results["n_images"] == 5
    [skipped] = results["skipped_images"]
    assert skipped["index"] == victim and skipped["file"] == name
    assert skipped["reason"].startswith("the file is truncated")
    assert "Skipped 1 of the 6 selected images that cannot be read" in table and name in table
    # nothing of the bad file was mapped or scored: the numbers are those of the 5 others
    good = [i for i in selected if i != victim]
    assert sorted(stored_indices(out / "deit_demo" / "explanations", "rollout")) == good
    curve = results["methods"]["rollout"]["positive"]["predicted"]["curve"]
    assert all(round(v * 5, 6) == round(v * 5) for v in curve)        # fractions of 5 images
    # replaced by a readable copy, the same command adds just that image
    Image.open(demo_folder / png.relative_to(root)).convert("RGB").save(jpeg, quality=95)
    code, printed, results, table = _pert(root, out, capsys)
    assert code == 0 and "warning" not in printed.err
    assert results["n_images"] == 6 and results["skipped_images"] == []
    assert results["this_run"]["explained_images"] == 1 and "Skipped" not in table


def test_a_run_with_no_readable_image_stops_with_one_line(tmp_path, capsys):
    folder = tmp_path / "val" / "a"
    folder.mkdir(parents=True)
    (folder / "0.jpg").write_bytes(_jpeg_bytes()[:100])
    (folder / "1.png").write_bytes(b"")
    dataset = ImageNetFolder(tmp_path, 8)
    with pytest.raises(SystemExit) as info:
        analyze_pert_results.readable_subset(dataset, [0, 1], report=True)
    assert str(info.value.code) == (
        f"error: none of the 2 selected images of {tmp_path / 'val'} can be read (first: "
        f"{dataset.unreadable([0])[0]}); replace them with readable copies")
    assert "\n" not in str(info.value.code) and capsys.readouterr().err == ""


# --- gtsegs: a mask of another size, damaged files ----------------------------------------------

def _gtsegs(path, n=3, seed=0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (6 + i, 5, 3), dtype=np.uint8) for i in range(n)]
    masks = [(rng.random((6 + i, 5)) > 0.5).astype(np.uint8) for i in range(n)]
    return write_gtsegs(path, images, masks)


def _resize_mask(path, i, shape_wh):
    """Give mask ``i`` of a gtsegs file another stored (W, H) shape."""
    with h5py.File(path, "r+") as f:
        del f[f"#refs#/gt{i}"]
        new = f.create_dataset(f"#refs#/gt{i}", data=np.ones(shape_wh, dtype=np.uint8))
        f[f"#refs#/gtcell{i}"][0, 0] = new.ref


def test_gtsegs_mask_of_another_size_is_refused_before_work(tmp_path):
    path = _gtsegs(tmp_path / "mismatch.mat")
    _resize_mask(path, 1, (5, 9))                                 # image 1 is 7 high, 5 wide
    with pytest.raises(GtSegsError) as info:
        GtSegsFile(path)
    assert _one_line(info.value) == (
        f"{path}: the mask of image 1 is 9x5 (H x W) but the image is 7x5; give image 1 a mask "
        "of its own size (or use the original file from "
        "http://calvin-vision.net/bigstuff/proj-imagenet/data/gtsegs_ijcv.mat)")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        analyze_seg_results.main(["--demo", "--imagenet-seg-path", str(path), "--method",
                                  "rollout", "--device", "cpu", "--output-dir", str(out)])
    assert str(exit_info.value.code) == f"error: {info.value}"
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


# --- fuzz: a correct image or the one-line error, never another exception -----------------------

def _fuzzed(data: bytes, rng) -> list[tuple[str, bytes]]:
    """Truncations (every 37th length and the last 12), 40 copies with 1..8 random bytes
    overwritten, and 10 random blobs (half behind the format's magic bytes)."""
    cases = [("truncated", data[:n]) for n in
             sorted(set(range(0, len(data), 37)) | set(range(len(data) - 12, len(data))))]
    for _ in range(40):
        flipped = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            flipped[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        cases.append(("flipped", bytes(flipped)))
    for k in range(10):
        blob = rng.bytes(int(rng.integers(0, 400)))
        cases.append(("random", (data[:8] + blob) if k % 2 else blob))
    return cases


def test_fuzzed_png_and_jpeg_give_a_correct_image_or_one_line(tmp_path):
    import io
    rng = np.random.default_rng(22)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(buffer, "PNG")
    originals = {"png": buffer.getvalue(), "jpg": _jpeg_bytes(1, (12, 16))}
    folder = tmp_path / "fuzz" / "val"
    outcome = {}
    for ext, data in originals.items():
        (tmp_path / f"original.{ext}").write_bytes(data)
        reference = _pixels(tmp_path / f"original.{ext}")
        for k, (kind, blob) in enumerate(_fuzzed(data, rng)):
            path = folder / ext / f"{k:04d}_{kind}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
            try:
                got = _pixels(path)
            except ImageReadError as exc:
                assert _one_line(exc).startswith(f"cannot read image {path}: ")
                outcome[str(path)] = None
                continue
            if kind != "flipped":     # a flipped pixel byte decodes to other, valid pixels
                np.testing.assert_array_equal(got, reference)
                assert kind == "truncated" and len(blob) >= len(data) - 12
            outcome[str(path)] = got
    assert sum(v is None for v in outcome.values()) > 50          # the fuzz did reach errors
    # the ImageNet folder reader: the same files found up front, the same pixels or the same line
    dataset = ImageNetFolder(tmp_path / "fuzz", (12, 16))
    bad = dataset.unreadable()
    for i, (path, _) in enumerate(dataset.samples):
        assert (i in bad) == (outcome[path] is None)
        if i in bad:
            with pytest.raises(CorruptImageError) as info:
                dataset[i]
            assert _one_line(info.value).startswith(f"cannot decode image {path} (")
        elif outcome[path].shape == (12, 16, 3):
            x = dataset[i][0]
            np.testing.assert_array_equal((x * 255).round().permute(1, 2, 0).numpy(), outcome[path])


def test_fuzzed_gtsegs_files_give_one_line(tmp_path):
    data = _gtsegs(tmp_path / "ok.mat", n=2).read_bytes()
    rng = np.random.default_rng(7)
    path = tmp_path / "fuzzed.mat"
    errors = 0
    for kind, blob in _fuzzed(data, rng):
        if kind == "truncated" and len(blob) == len(data):
            continue
        path.write_bytes(blob)
        try:
            reader = GtSegsFile(path)
            dataset = ImageNetSegDataset(path, 8, (0.5,) * 3, (0.5,) * 3)
            for i in range(len(reader)):
                reader.image(i)
                reader.mask(i)
                dataset[i]
            reader.close()
        except GtSegsError as exc:
            errors += 1
            assert _one_line(exc).startswith(str(path))
            continue
        assert kind == "flipped", f"a {kind} file of {len(blob)} bytes was read"
    assert errors > 100
