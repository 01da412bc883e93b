"""The one table writer of the project: Markdown (results.md, printed tables) and LaTeX
(``--latex``), from a header and rows of already formatted cells."""
from __future__ import annotations

from typing import Sequence

__all__ = ["markdown_table", "latex_table", "latex_escape"]

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def _check(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells, the header {len(header)}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                   note: str | None = None) -> str:
    """A GitHub-Markdown table (``|`` in a cell is escaped); ``note`` follows it, one blank
    line below."""
    _check(header, rows)
    cell = lambda text: str(text).replace("|", r"\|")  # noqa: E731
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines) + (f"\n\n{note}" if note else "")


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(header: Sequence[str], rows: Sequence[Sequence[str]], note: str | None = None,
                text_columns: int = 2) -> str:
    """A booktabs ``tabular``: the first ``text_columns`` columns left-aligned, the others
    right-aligned; every cell escaped; ``note`` as a LaTeX comment line below."""
    _check(header, rows)
    align = "l" * min(text_columns, len(header)) + "r" * max(0, len(header) - text_columns)
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(map(latex_escape, header)) + r" \\", r"\midrule"]
    lines += [" & ".join(map(latex_escape, row)) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if note:
        lines.append("% " + note)
    return "\n".join(lines)
