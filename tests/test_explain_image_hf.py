"""explain_image.py with a transformers image classifier named by a folder or a hub id
(issue 21): a tiny Swin saved with ``save_pretrained`` (no image processor: the config's size and
ImageNet mean/std, said in a note), a tiny BEiT with its image processor, the same Swin as a hub
id from a cache laid out under a temporary ``HF_HOME`` (tests/test_hub.py's layout, offline:
the id resolves to the snapshot the command line then loads as a folder);
and one line for a hub id that is not cached, a folder of a model the engine does not explain,
and a class name the model does not have."""
import json

import numpy as np
import pytest
import transformers as tf
from PIL import Image

import explain_image as cli
from builders_hf_vision import beit, swin
from test_hub import cache_repo

REPO = "palrp-test/tiny-swin"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_vision")
    model, _, _ = swin()
    model.config.id2label = {i: f"shape_{i}" for i in range(5)}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(root / "swin")
    model, _, _ = beit(use_relative_position_bias=True)
    model.save_pretrained(root / "beit")
    (root / "beit" / "preprocessor_config.json").write_text(json.dumps({   # as ViT's writes it
        "image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32},
        "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    image = root / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype("uint8")).save(image)
    cache = root / "hf" / "hub"
    cache_repo(cache, REPO, root / "swin")
    return root


def _run(argv, capsys):
    assert cli.main([str(a) for a in argv] + ["--device", "cpu"]) == 0
    return capsys.readouterr().out


def test_a_saved_swin_folder(folders, tmp_path, capsys):
    out = tmp_path / "swin.png"
    printed = _run(["--model", folders / "swin", "--image", folders / "photo.png",
                    "--target", "SHAPE_3", "--output", out], capsys)
    assert "note: no preprocessor_config.json: resized to 32x32, ImageNet mean/std" in printed
    assert "predicted: " in printed and "(shape_" in printed
    assert "(shape_3)" in printed          # the explained class, by name
    with Image.open(out) as figure:
        assert figure.size[0] > figure.size[1] > 100


def test_a_folder_with_an_image_processor_is_preprocessed_as_it_says(folders):
    from palrp.loaders import hf_vision

    folder = hf_vision.hf_vision_folder(folders / "beit")
    model = hf_vision.load_image_classifier(folder)
    preprocessing = hf_vision.Preprocessing.of(model, folder)
    assert preprocessing.note == "" and preprocessing.size == (32, 32)
    assert preprocessing.mean == (0.5,) * 3 and preprocessing.resample == "bilinear"
    image01 = preprocessing.load_image(folders / "photo.png")
    assert image01.shape == (1, 3, 32, 32) and 0 <= float(image01.min()) <= float(image01.max()) <= 1
    assert float((preprocessing.normalize(image01) - (image01 - 0.5) / 0.5).abs().max()) == 0
    assert hf_vision.class_names(model) is None          # generic LABEL_i


def test_a_hub_id_from_the_cache(folders, monkeypatch):
    """The hub id resolves to its cached snapshot (offline) and loads as the folder does; the
    command line takes the same path as for a folder (test_a_saved_swin_folder)."""
    from palrp.loaders import hf_vision

    monkeypatch.setenv("HF_HOME", str(folders / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    folder = hf_vision.hf_vision_folder(REPO)
    assert folder.parent.parent.name == "models--palrp-test--tiny-swin"
    model = hf_vision.load_image_classifier(folder)
    assert type(model).__name__ == "SwinForImageClassification"
    assert hf_vision.class_names(model) == [f"shape_{i}" for i in range(5)]
    assert cli._transformers_folder(cli.parse_args(
        ["--model", REPO, "--image", str(folders / "photo.png")])) == folder


def _error(argv) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main([str(a) for a in argv] + ["--device", "cpu"])
    message = str(exc.value)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_bad_inputs_give_one_line(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(folders / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    image = folders / "photo.png"
    assert "palrp-test/not-cached" in _error(["--model", "palrp-test/not-cached", "--image", image])
    convnext = tmp_path / "convnext"
    tf.ConvNextForImageClassification(tf.ConvNextConfig(
        hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_labels=3)).save_pretrained(convnext)
    assert "supported families" in _error(["--model", convnext, "--image", image])
    assert "none of this model's classes" in _error(
        ["--model", folders / "swin", "--image", image, "--target", "giraffe"])
    assert "--model-size" in _error(["--model", folders / "swin", "--image", image,
                                     "--model-size", "tiny"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "swin", "depths": "x"}))
    assert "cannot load an image classifier" in _error(["--model", broken, "--image", image])
