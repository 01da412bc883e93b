"""The HTML token heatmap in a real browser: every token box lies inside its panel.

Renders pages of ``palrp.render.text.render_html`` in headless Chromium (Debian's
``chromium-headless-shell`` or ``chromium``; ``.ci/run`` installs it) at 800 and 1600 px wide.
A script appended to the page writes each token's box and its panel's box into the DOM, which
``--dump-dom`` returns. Skips with a message where no browser is installed.
"""
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from palrp.render.text import render_html

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")

# Writes, for every .tok, its box relative to its panel's padding box (the panel's inside).
GEOMETRY_JS = """
<script>
(function () {
  const panels = Array.from(document.querySelectorAll('.panel'));
  const out = {width: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
               panels: [], boxes: []};
  panels.forEach(function (panel, p) {
    const r = panel.getBoundingClientRect();
    const inner = {left: r.left + panel.clientLeft, top: r.top + panel.clientTop};
    inner.right = inner.left + panel.clientWidth;
    inner.bottom = inner.top + panel.clientHeight;
    out.panels.push([r.left, r.top, r.right, r.bottom]);
    panel.querySelectorAll('.tok').forEach(function (tok, i) {
      const b = tok.getBoundingClientRect();
      out.boxes.push([p, i, b.left - inner.left, inner.right - b.right,
                      b.top - inner.top, inner.bottom - b.bottom, b.width, b.height]);
    });
  });
  const pre = document.createElement('pre');
  pre.id = 'geometry';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def _browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium found (install Debian's chromium-headless-shell or "
                "chromium; .ci/run does): the browser layout test is skipped")


def _geometry(browser, page: str, width: int, tmp_path):
    path = tmp_path / f"page_{width}.html"
    path.write_text(page.replace("</body>", GEOMETRY_JS + "</body>"), encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={width},900", "--dump-dom", path.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="geometry">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"the browser returned no geometry (rc {proc.returncode}): {proc.stderr[-500:]}"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def _pages():
    short = ["<s>", "The", "herring", "is", "a", "fish", ".", "Most", "of", "the", "time", "the",
             "herring", "stays", "near", "the", "ocean", ".", "The", "herring", "lives", "in", "the"]
    rng = np.random.default_rng(0)
    words = ["\u2581the", "\u2581movie", "\u0120was", "\u2581absolutely", "\u2581wonderful", ",",
             "\n", "\u2581and", "\u2581I", "\u2581would", "\u2581watch", "\u2581it", "\u2581again",
             "two words", "<br />", "&amp;"]
    long_review = [words[i] for i in rng.integers(0, len(words), 600)]
    long_review[17] = "x" * 150            # one piece wider than a narrow panel
    long_review[300] = "supercalifragilistic" * 4
    pages = {}
    for name, tokens in (("short", short), ("long review", long_review)):
        maps = {m: rng.normal(size=len(tokens)) * scale
                for m, scale in (("AttnLRP", 2.8), ("PA-LRP", 1.0), ("PE-only", 1.0))}
        pages[name] = (tokens, render_html(tokens, maps, title=name, info=["info line"]))
    return pages


@pytest.mark.parametrize("width", [800, 1600])
def test_tokens_wrap_inside_their_panel(width, tmp_path):
    browser = _browser()
    for name, (tokens, page) in _pages().items():
        geo = _geometry(browser, page, width, tmp_path)
        assert geo["width"] == width
        assert geo["scrollWidth"] <= width, f"{name}: the page scrolls sideways at {width} px"
        boxes = np.array(geo["boxes"], dtype=float)
        assert boxes.shape[0] == 3 * len(tokens), name
        assert (boxes[:, 6] > 0).all() and (boxes[:, 7] > 0).all(), name  # every token drawn
        slack = -0.5  # sub-pixel rounding of the boxes
        outside = boxes[(boxes[:, 2:6] < slack).any(axis=1)]
        assert outside.size == 0, (f"{name} at {width} px: {len(outside)} token boxes leave "
                                   f"their panel, e.g. panel/token/margins {outside[:3].tolist()}")
        panels = np.array(geo["panels"])
        for a in range(len(panels)):       # panels side by side or stacked, never overlapping
            for b in range(a + 1, len(panels)):
                (l1, t1, r1, b1), (l2, t2, r2, b2) = panels[a], panels[b]
                assert r1 <= l2 + 0.5 or r2 <= l1 + 0.5 or b1 <= t2 + 0.5 or b2 <= t1 + 0.5
        if name == "long review":          # many rows, not one line
            rows = np.unique(np.round(boxes[boxes[:, 0] == 0, 4]))
            assert len(rows) > 5
