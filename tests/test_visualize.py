"""Vision figures (palrp/render/images.py): signed maps centred at 0, colour bars, class names."""
import numpy as np
import pytest
import torch
from PIL import Image

from palrp.render.images import (class_index, class_name, display_style, is_signed,
                               save_map_grid, scaled_for_display)


def test_signed_maps_are_centred_at_zero():
    signed = torch.tensor([[[-2.0, 0.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    values, is_div = scaled_for_display(signed)
    assert is_div and is_signed(signed)
    np.testing.assert_allclose(values[0], [[-0.5, 0.0], [0.25, 1.0]])  # / max |value|, 0 stays 0
    np.testing.assert_array_equal(values[1], 0.0)                       # all-zero map: no NaN
    style = display_style(True)
    assert (style["vmin"], style["vmax"]) == (-1.0, 1.0) and style["cmap"] == "RdBu_r"


def test_non_negative_maps_are_min_max_normalised():
    maps = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])
    values, is_div = scaled_for_display(maps)
    assert not is_div
    np.testing.assert_allclose(values[0], [[0.0, 0.25], [0.5, 1.0]])
    assert (display_style(False)["vmin"], display_style(False)["vmax"]) == (0.0, 1.0)


def test_grid_has_a_colour_bar_row_and_grows_with_panels(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 16, 16, generator=g)
    columns = {"clamped": torch.rand(2, 16, 16, generator=g),
               "signed": torch.randn(2, 16, 16, generator=g)}
    small = save_map_grid(tmp_path / "s.png", images, columns, extra={"mask": torch.ones(2, 16, 16)})
    large = save_map_grid(tmp_path / "l.png", images, columns, title="a title", panel_inches=3.6)
    with Image.open(small) as a, Image.open(large) as b:
        assert b.size[0] > 1.4 * a.size[0] * 3 / 4 and b.size[1] > a.size[1] / 2
        pixels = np.asarray(a.convert("RGB"))
    # the colour bar under the signed column: its middle is white (0), its ends blue and red
    row = pixels[int(pixels.shape[0] * 0.93)]
    reds = np.where((row[:, 0] > 150) & (row[:, 2] < 100))[0]
    blues = np.where((row[:, 2] > 120) & (row[:, 0] < 80))[0]
    assert reds.size and blues.size


class _Model:
    def __init__(self, num_classes, names=None):
        self.num_classes = num_classes
        self.cfg = type("Cfg", (), {"class_names": names})()


def test_class_index_from_index_or_name():
    model = _Model(3, ["cat", "Dog", "hot dog"])
    assert class_index(model, "2") == 2 and class_index(model, 1) == 1
    assert class_index(model, "dog") == 1 and class_index(model, " Hot Dog ") == 2
    with pytest.raises(ValueError, match=r"outside the model's 3 classes \(0..2\)"):
        class_index(model, "3")
    with pytest.raises(ValueError, match="did you mean 'Dog', 'hot dog'"):
        class_index(model, "do")
    with pytest.raises(ValueError, match="no names for its classes"):
        class_index(_Model(5), "cat")
    assert class_name(_Model(5), 4) == "class 4"
    imagenet = _Model(1000)
    assert class_index(imagenet, "tabby") == 281 and class_name(imagenet, 281) == "tabby"
    with pytest.raises(ValueError, match="names 2 classes"):
        class_index(imagenet, "cardigan")   # the dog breed and the sweater
