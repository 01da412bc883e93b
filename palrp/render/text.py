"""Token heatmaps: HTML (coloured tokens, for a browser) and PNG, methods side by side.

Each map (e.g. AttnLRP, PA-LRP, PE-only; docs/method.md) is shown as the sequence of sub-word
pieces exactly as the tokenizer spells them (``convert_ids_to_tokens``: ``"▁the"``, ``"Ġthe"``,
...; only newlines and tabs are written as ``\\n`` / ``\\t`` so that they stay visible). A
piece's background is red for positive relevance and blue for negative, with an opacity of
``|value| / max |value|`` of that map (a map that is all zero stays white). The exact value is in
each token's tooltip (HTML) and the map's maximum in its heading.

In the HTML page the tokens of a map wrap inside its panel at any window width (a flex row that
wraps; a piece wider than the panel breaks inside itself), and the panels stack when the window
is too narrow for them side by side; tests/test_text_render_browser.py checks this in headless
Chromium.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from palrp.runtime.store import atomic_output, atomic_write_text

__all__ = ["peak_normalised", "render_html", "render_png", "save_heatmaps"]

_POSITIVE = (214, 39, 40)
_NEGATIVE = (31, 119, 180)


def _as_maps(tokens, maps) -> dict[str, np.ndarray]:
    if not maps:
        raise ValueError("no maps to render; give at least one name -> values entry")
    out = {}
    for name, values in maps.items():
        if hasattr(values, "detach"):
            values = values.detach().float().cpu().numpy()
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.shape[0] != len(tokens):
            raise ValueError(f"map {name!r} has {arr.shape[0]} values for {len(tokens)} tokens; "
                             "render one sample's map (shape (S,)) with its own tokens")
        out[name] = arr
    return out


def peak_normalised(values) -> np.ndarray:
    """One map divided by its max |value| (in [-1, 1]; the scale of the heatmaps and of
    explain_text.py's printed table). An all-zero map stays zero."""
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    values = np.asarray(values, dtype=np.float64)
    peak = np.abs(values).max() if values.size else 0.0
    return values / peak if peak > 0 else np.zeros_like(values)


def _display_piece(piece: str, max_chars: int | None = None) -> str:
    text = piece.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if text == "":
        text = "\u2205"  # an empty piece stays visible
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1] + "\u2026"
    return text


def _rgba(value: float) -> tuple[float, float, float, float]:
    r, g, b = _POSITIVE if value >= 0 else _NEGATIVE
    return r / 255, g / 255, b / 255, min(abs(value), 1.0) * 0.85


def render_html(tokens: list[str], maps: dict, title: str = "",
                info: list[str] | None = None) -> str:
    """A self-contained HTML page: one column per map, tokens as coloured spans."""
    maps = _as_maps(tokens, maps)
    panels = []
    for name, values in maps.items():
        norm = peak_normalised(values)
        spans = []
        for i, (piece, value, v) in enumerate(zip(tokens, values, norm)):
            r, g, b, a = _rgba(v)
            colour = f"rgba({round(r * 255)},{round(g * 255)},{round(b * 255)},{a:.3f})"
            spans.append(f'<span class="tok" style="background:{colour}" '
                         f'title="#{i} {html.escape(repr(piece))}: {value:.4g}">'
                         f'{html.escape(_display_piece(piece))}</span>')
        peak = np.abs(values).max() if values.size else 0.0
        panels.append(f'<div class="panel"><h2>{html.escape(name)}</h2>'
                      f'<div class="meta">max |relevance| = {peak:.4g}</div>'
                      f'<div class="tokens">{"".join(spans)}</div></div>')
    info_html = "".join(f"<div>{html.escape(line)}</div>" for line in (info or []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title or "token heatmap")}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
.row {{ display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }}
.panel {{ flex: 1 1 16em; min-width: 0; border: 1px solid #ddd; border-radius: 6px;
          padding: 0.8em; }}
.panel h2 {{ font-size: 1.1em; margin: 0 0 0.2em 0; }}
.meta {{ font-size: 0.8em; color: #666; margin-bottom: 0.6em; }}
.tokens {{ display: flex; flex-wrap: wrap; gap: 0.35em 0.16em; line-height: 1.5;
           font-family: monospace; font-size: 0.95em; }}
.tok {{ white-space: pre-wrap; overflow-wrap: anywhere; max-width: 100%; box-sizing: border-box;
        padding: 0.1em 0.15em; border-radius: 3px; border: 1px solid #eee; }}
.legend span {{ padding: 0.1em 0.5em; border-radius: 3px; }}
</style></head><body>
<h1>{html.escape(title or "token heatmap")}</h1>
{info_html}
<p class="legend"><span style="background:rgba({_POSITIVE[0]},{_POSITIVE[1]},{_POSITIVE[2]},0.8)">positive</span>
<span style="background:rgba({_NEGATIVE[0]},{_NEGATIVE[1]},{_NEGATIVE[2]},0.8)">negative</span>
opacity = |relevance| / max |relevance| of each map; hover a token for its value.</p>
<div class="row">{"".join(panels)}</div>
</body></html>
"""


def render_png(tokens: list[str], maps: dict, path, title: str = "",
               tokens_per_row: int = 8, dpi: int = 110) -> Path:
    """A PNG with one panel per map, side by side; tokens in rows of ``tokens_per_row``
    coloured cells (pieces longer than 12 characters are cut with an ellipsis)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    maps = _as_maps(tokens, maps)
    if tokens_per_row < 1:
        raise ValueError("tokens_per_row must be at least 1")
    cols = min(tokens_per_row, max(1, len(tokens)))
    rows = max(1, math.ceil(len(tokens) / cols))
    cell_w, cell_h = 1.05, 0.38
    bar_h = 0.75                                      # the colour bar and its label, inches
    width = len(maps) * (cols * cell_w + 0.4)
    height = rows * cell_h + 1.0 + bar_h
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title, fontsize=12)
    top = 1.0 - (0.7 / height)
    bottom = bar_h / height
    for k, (name, values) in enumerate(maps.items()):
        norm = peak_normalised(values)
        ax = fig.add_axes((k / len(maps) + 0.01, bottom, 1 / len(maps) - 0.02, top - bottom))
        ax.set_xlim(0, cols)
        ax.set_ylim(rows, 0)
        ax.axis("off")
        peak = np.abs(values).max() if values.size else 0.0
        ax.set_title(f"{name}  (max |R| = {peak:.3g})", fontsize=11)
        for i, (piece, v) in enumerate(zip(tokens, norm)):
            r, c = divmod(i, cols)
            ax.add_patch(Rectangle((c + 0.03, r + 0.06), 0.94, 0.88, facecolor=_rgba(v),
                                   edgecolor="#dddddd", linewidth=0.5))
            ax.text(c + 0.5, r + 0.5, _display_piece(piece, 12), ha="center", va="center",
                    fontsize=8.5, family="monospace")
    # colour bar: the cell colours of -1 .. 1 composited on white, as drawn above
    ramp = np.linspace(-1.0, 1.0, 257)
    colours = np.array([_rgba(v) for v in ramp])
    rgb = colours[:, :3] * colours[:, 3:] + (1.0 - colours[:, 3:])
    bar_w = min(0.5, 6.0 / width)
    bar = fig.add_axes((0.5 - bar_w / 2, 0.5 * bar_h / height, bar_w, 0.18 / height))
    bar.imshow(rgb[None], aspect="auto", extent=(-1, 1, 0, 1))
    bar.set_yticks([])
    bar.set_xticks([-1, -0.5, 0, 0.5, 1])
    bar.tick_params(labelsize=8)
    bar.set_title("relevance / max |relevance| of each map (red positive, blue negative)",
                  fontsize=9)
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def save_heatmaps(tokens: list[str], maps: dict, output_dir, stem: str = "explanation",
                  title: str = "", info: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.html`` and ``<stem>.png`` into ``output_dir`` (atomically)."""
    output_dir = Path(output_dir)
    html_path = atomic_write_text(output_dir / f"{stem}.html",
                                  render_html(tokens, maps, title=title, info=info))
    png_path = render_png(tokens, maps, output_dir / f"{stem}.png", title=title)
    return html_path, png_path
