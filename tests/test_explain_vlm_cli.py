"""explain_vlm.py end to end on a tiny Qwen2-VL and a tiny LLaVA with their processors saved here
(no downloads), and its one-line refusals before any model is loaded."""
import json

import numpy as np
import pytest
from PIL import Image

import explain_vlm as cli
from builders_vlm import save_tiny_llava, save_tiny_qwen2_vl


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    save_tiny_qwen2_vl(root / "qwen2_vl")
    save_tiny_llava(root / "llava")
    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "image.png")
    return root


def test_qwen2_vl_end_to_end(folder, tmp_path, capsys):
    cli.main([str(folder / "qwen2_vl"), "--image", str(folder / "image.png"), "--prompt",
              "what is this picture", "--target", "cat", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "explained: next token 'cat' (id 5)" in out
    for name in ("explanation_image.png", "explanation.png", "explanation.html",
                 "explanation.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    data = json.loads((tmp_path / "explanation.json").read_text())
    assert data["families"] == ["qwen2_vl", "qwen2_vl_vision", "qwen2_vl_text"]
    assert data["tokens"][:1] == ["<|image_pad|>"] and data["tokens"][-2:] == ["this", "picture"]
    maps = data["token_maps"]
    assert {"PA-LRP", "tokens", "PE (LM)", "PE (LM) temporal", "PE (LM) height",
            "PE (LM) width"} <= set(maps)
    sections = np.sum([maps[f"PE (LM) {s}"] for s in ("temporal", "height", "width")], axis=0)
    np.testing.assert_allclose(sections, maps["PE (LM)"], rtol=1e-5, atol=1e-7)
    gh, gw = data["image_grid"]
    patches = data["image_patch_maps"]
    assert len(patches["pixels"]) == gh * gw
    np.testing.assert_allclose(np.add(patches["PE vision height"], patches["PE vision width"]),
                               patches["PE (vision)"], rtol=1e-5, atol=1e-7)
    assert "PE (LM) height on image tokens" in data["image_maps"]


def test_llava_end_to_end(folder, tmp_path, capsys):
    cli.main([str(folder / "llava"), "--image", str(folder / "image.png"), "--prompt",
              "what is this picture", "--output-dir", str(tmp_path), "--stem", "llava"])
    assert "explained: next token" in capsys.readouterr().out
    data = json.loads((tmp_path / "llava.json").read_text())
    assert data["families"] == ["llava", "clip_vision", "llama"]
    assert data["image_grid"] == [4, 4]
    assert data["tokens"].count("<image>") == 16
    assert data["image_maps"] == ["PA-LRP", "pixels", "PE (vision)",
                                  "PE (LM) on image tokens"]
    assert (tmp_path / "llava_image.png").stat().st_size > 0


@pytest.mark.parametrize("case, message", [
    ("no_image", "image .* not found"),
    ("bad_image", "not an image PIL can read"),
    ("no_model", "model folder not found"),
    ("bad_output", "is a file, not a folder"),
])
def test_bad_input_is_one_line_before_loading(folder, tmp_path, case, message):
    model, image, output = folder / "qwen2_vl", folder / "image.png", tmp_path / "out"
    if case == "no_image":
        image = tmp_path / "missing.png"
    elif case == "bad_image":
        image = tmp_path / "text.png"
        image.write_text("not an image")
    elif case == "no_model":
        model = tmp_path / "nowhere"
    else:
        output = tmp_path / "file"
        output.write_text("")
    with pytest.raises(SystemExit, match=message) as info:
        cli.main([str(model), "--image", str(image), "--prompt", "what", "--output-dir",
                  str(output)])
    assert "\n" not in str(info.value)


def test_image_tokens_are_laid_on_their_sub_images():
    """Two sub-images side by side (a 4 x 8 patch strip, patch 2), 4 tokens each (2 x 2
    merge): token k of sub-image n covers its 2 x 2 patch block, row-major in that sub-image."""
    import torch

    from palrp.modules.explanation import Stream
    from palrp.modules.positional import VISION_PAPER

    record = Stream.image(channels=torch.zeros(1, 3, 8, 16), sinks=None, labels=(), prefix=0,
                          grid=(4, 8), patch_size=(2, 2), combination=VISION_PAPER,
                          family="idefics3_vision")
    slots = torch.tensor([False] + [True] * 8 + [False])
    values = torch.zeros(10)
    values[1:9] = torch.arange(1.0, 9.0)
    laid = cli.tokens_on_image(values, slots, record, tiles=2)
    cells = laid.reshape(2, 4, 4, 4).sum(dim=(1, 3))        # (block rows, block columns)
    assert cells.tolist() == [[1, 2, 5, 6], [3, 4, 7, 8]]
    seven = slots.clone()
    seven[8] = False                                  # 7 tokens fit no grid of 2 sub-images
    assert cli.tokens_on_image(values, seven, record, tiles=2) is None
