"""Layout of the token heatmap PNG (palrp/render/text.py, build_png_figure / render_png): at 50,
1,000 and 4,000 tokens the title, headings, captions and colour bar never overlap a token grid
and nothing leaves the figure (matplotlib's own window extents after a draw); every token
appears once; token texts stay inside their cells (pixels)."""
import re

import numpy as np
import pytest
from PIL import Image

from palrp.render.text import build_png_figure, render_png

MAPS = ("AttnLRP", "PA-LRP", "PE-only")
WORDS = ["<s>", "\u2581The", "\u2581movie", "\u0120was", "\n", ",", "\u2581extraordinarily",
         "W" * 30, "", "\t"]


def _tokens(n):
    return [WORDS[i % len(WORDS)] for i in range(n)]


def _maps(n, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=n) for name in MAPS}


def _overlap(a, b, tol=0.5):
    """Whether two display boxes share an area (touching within ``tol`` pixels is not)."""
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > tol) and (min(a.y1, b.y1) - max(a.y0, b.y0) > tol)


def _inside(box, outer, tol=0.5):
    return (box.x0 >= outer.x0 - tol and box.y0 >= outer.y0 - tol
            and box.x1 <= outer.x1 + tol and box.y1 <= outer.y1 + tol)


def _parts(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    grids = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_gid() == "grid"]
    texts = {gid: [t for t in fig.texts if t.get_gid() == gid]
             for gid in ("title", "heading", "caption")}
    (bar,) = [ax for ax in fig.axes if ax.get_gid() == "colourbar"]
    return renderer, grids, texts, bar.get_tightbbox(renderer)


@pytest.mark.parametrize("n, columns", [(50, 1), (1000, 2), (4000, 3)])
def test_no_part_overlaps_the_grid_at_any_length(n, columns):
    fig = build_png_figure(_tokens(n), _maps(n), title="LlamaForCausalLM: next token "
                           "'\u2581good' (id 1781), a long title " + "x" * 120)
    renderer, grids, texts, bar = _parts(fig)
    assert len(grids) == columns * len(MAPS) and len(texts["title"]) == 1
    assert len(texts["heading"]) == columns * len(MAPS)
    title = texts["title"][0]
    title_box = title.get_window_extent(renderer)
    assert ("wrapped into" in title.get_text()) == (columns > 1)
    others = [title_box, bar] + [t.get_window_extent(renderer)
                                 for t in texts["heading"] + texts["caption"]]
    figure = fig.bbox
    for grid in grids:
        assert title_box.y0 >= grid.y1 and bar.y1 <= grid.y0   # title above, bar below
        assert not any(_overlap(grid, box) for box in others)
        assert not any(_overlap(grid, g) for g in grids if g is not grid)
        assert grid.height > 0 and _inside(grid, figure)
    for i, box in enumerate(others):
        assert _inside(box, figure), (i, box, figure)
        assert not any(_overlap(box, other) for other in others[i + 1:])
    # the figure is no taller than max(max_height, its width); the columns' captions cover
    # every token once, in order
    width, height = fig.get_size_inches()
    assert height <= max(30.0, width)
    if columns > 1:
        ranges = [tuple(map(int, re.fullmatch(r"tokens (\d+)\u2013(\d+)", t.get_text()).groups()))
                  for t in texts["caption"]]
        assert ranges[0][0] == 0 and ranges[-1][1] == n - 1
        assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:]))


def test_short_inputs_and_a_long_heading_stay_inside():
    fig = build_png_figure(["a"], {"a map with a rather long name for one token": [1.0]},
                           title="t " * 200)
    renderer, grids, texts, bar = _parts(fig)
    boxes = [bar] + [t.get_window_extent(renderer) for t in texts["title"] + texts["heading"]]
    assert all(_inside(box, fig.bbox) for box in boxes + grids)
    assert not any(_overlap(grids[0], box) for box in boxes)
    assert "\n" in texts["title"][0].get_text()   # wrapped to the figure's width


def test_token_texts_stay_inside_their_cells(tmp_path):
    """Pixels: each grid's gutters between cells hold no text (a piece wider than its cell is
    cut), every cell with a token has text and the cells after the last token have none."""
    n = 50                                        # 6 full rows of 8 and 2 tokens in the 7th
    tokens = _tokens(n)
    fig = build_png_figure(tokens, {"m": np.zeros(n)}, tokens_per_row=8)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    dark = (pixels < 110).all(axis=2)
    (ax,) = [a for a in fig.axes if a.get_gid() == "grid"]
    box = ax.get_window_extent()
    top = pixels.shape[0] - box.y1                # buffer rows run from the top
    cw, ch = box.width / 8, box.height / 7
    for c in range(1, 8):                         # the gutters between columns
        x = int(round(box.x0 + c * cw))
        assert not dark[int(top):int(top + box.height), x - 1:x + 2].any(), c
    for i in range(7 * 8):
        r, c = divmod(i, 8)
        cell = dark[int(top + (r + 0.1) * ch):int(top + (r + 0.9) * ch),
                    int(box.x0 + (c + 0.05) * cw):int(box.x0 + (c + 0.95) * cw)]
        assert cell.any() == (i < n), (i, tokens[i] if i < n else None)
    # and the saved PNG is that image
    path = render_png(tokens, {"m": np.zeros(n)}, tmp_path / "t.png")
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.size == (pixels.shape[1], pixels.shape[0])
        assert (np.asarray(img).astype(int) == pixels).all()


def test_too_large_an_image_is_a_clear_error():
    with pytest.raises(ValueError, match="render a slice of the tokens"):
        build_png_figure(["a"] * 30000, {name: np.ones(30000) for name in MAPS})
    with pytest.raises(ValueError, match="max_height"):
        build_png_figure(["a"], {"m": [1.0]}, max_height=0)
