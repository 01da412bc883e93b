"""Token heatmap rendering: HTML and PNG (palrp/render/text.py)."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from palrp.render.text import render_html, render_png, save_heatmaps

TOKENS = ["<s>", "\u2581The", "\u2581movie", "\u0120was", "\n", "<b>&"]


def test_html_colours_and_spelling():
    maps = {"AttnLRP": torch.tensor([0.0, 2.0, -1.0, 0.5, 0.0, 0.0]),
            "PA-LRP": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            "PE-only": np.array([1.0, 0.0, 0.0, 0.0, 0.0, -4.0])}
    page = render_html(TOKENS, maps, title="t <x>", info=["target 'x'"])
    assert page.count('class="panel"') == 3 and "t &lt;x&gt;" in page
    for piece in ("\u2581The", "\u2581movie", "\u0120was", "\\n", "&lt;b&gt;&amp;"):
        assert piece in page  # pieces as the tokenizer spells them, escaped
    pattern = r'class="tok" style="background:rgba\(\d+,\d+,\d+,([\d.]+)\)'
    alphas = [float(a) for a in re.findall(pattern, page)]
    assert len(alphas) == 3 * len(TOKENS)
    assert alphas[1] == pytest.approx(0.85) and alphas[2] == pytest.approx(0.425)
    assert "rgba(214,39,40,0.850)" in page and "rgba(31,119,180,0.425)" in page
    assert all(a == 0 for a in alphas[6:12])  # an all-zero map stays white, no NaN
    assert ': 2">' in page  # exact value in the tooltip


def test_png_side_by_side(tmp_path):
    maps = {name: torch.linspace(-1, 1, 40) for name in ("AttnLRP", "PA-LRP", "PE-only")}
    tokens = [f"tok{i}" for i in range(40)]
    path = render_png(tokens, maps, tmp_path / "h.png", title="demo")
    with Image.open(path) as img:
        width, height = img.size
    assert width > 2 * height  # three panels side by side, 5 rows of 8 tokens
    html_path, png_path = save_heatmaps(tokens, maps, tmp_path / "out", stem="s")
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert png_path.stat().st_size > 1000


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 values for 2 tokens"):
        render_html(["a", "b"], {"m": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="no maps"):
        render_html(["a"], {})


def test_png_has_a_signed_colour_bar(tmp_path):
    path = render_png(["a", "b"], {"m": [1.0, -1.0]}, tmp_path / "bar.png")
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # a row holding the colour bar: a blue-to-white-to-red ramp (many tinted colours, blue left
    # of red), unlike a row of token cells (one flat colour per cell)
    def ramp(row):
        tinted = np.abs(row[:, 0] - row[:, 2]) > 20
        colours = {tuple(c) for c in row[tinted]}
        red = np.where(tinted & (row[:, 0] > row[:, 2]))[0]
        blue = np.where(tinted & (row[:, 2] > row[:, 0]))[0]
        return len(colours) > 60 and red.size and blue.size and blue.mean() < red.mean()
    assert any(ramp(row) for row in pixels)
