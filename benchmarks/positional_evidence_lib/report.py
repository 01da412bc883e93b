"""The run's outputs: results.json, results.md (the tables) and one figure per task."""
from __future__ import annotations

import json

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt   # noqa: E402
import numpy as np                # noqa: E402

from . import tasks as T          # noqa: E402

#: metrics of the headline table (combined channel), in column order
HEADLINE = ("positional_share", "evidence_mass", "pointing", "win_rate_vs_attn_lrp",
            "conservation_residual", "reparam_shift")


def write_json(path, config, models, summary, extra):
    path.write_text(json.dumps({"config": config, "models": models, "summary": summary, **extra},
                               indent=1))


def _cell(row):
    if row is None or row["mean"] != row["mean"]:
        return "n/a"
    return f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def _index(summary):
    return {(r["task"], r["model"], r["method"], r["metric"], r["channel"]): r for r in summary}


def headline_rows(summary, methods, units):
    """Markdown rows: task, model, method, then the combined-channel metrics."""
    index = _index(summary)
    rows = []
    for task, models in units.items():
        for model in models:
            for method in methods:
                cells = [_cell(index.get((task, model, method, m, "combined"))) for m in HEADLINE]
                rows.append(f"| {task} | {model} | {method} | " + " | ".join(cells) + " |")
    return rows


def write_markdown(path, config, models, summary, methods, units, wall_s):
    index = _index(summary)
    lines = [f"# Positional-evidence benchmark ({'quick' if config['quick'] else 'default'} run)",
             "", f"Seeds {config['seeds']}, {config['explain_samples']} held-out samples per "
             f"task x model x seed, 95% bootstrap intervals over samples and seeds "
             f"({config['bootstrap_resamples']} resamples); {wall_s:.0f} s wall.", "",
             "## Models (held-out accuracy)", "",
             "| task | model | seed | held-out accuracy | below 99% |", "|---|---|---|---|---|"]
    for m in models:
        lines.append(f"| {m['task']} | {m['model']} | {m['seed']} | {m['heldout_accuracy']:.4f} "
                     f"| {'yes' if m['below_target'] else ''} |")
    lines += ["", "## All metrics (combined channel: |token| + |positional| per position)", "",
              "| task | model | method | " + " | ".join(HEADLINE) + " |",
              "|---" * (3 + len(HEADLINE)) + "|", *headline_rows(summary, methods, units), "",
              "## Evidence mass per channel", "",
              "| task | model | method | token | positional | combined |", "|---|---|---|---|---|---|"]
    for task, ms in units.items():
        for model in ms:
            for method in methods:
                cells = [_cell(index.get((task, model, method, "evidence_mass", c)))
                         for c in ("token", "positional", "combined")]
                lines.append(f"| {task} | {model} | {method} | " + " | ".join(cells) + " |")
    lines += ["", "## Reparametrisation shift of the positional channel", "",
              "| task | model | method | reparam_shift (positional) |", "|---|---|---|---|"]
    for task, ms in units.items():
        for model in ms:
            for method in ("pa_lrp", "occlusion"):
                lines.append(f"| {task} | {model} | {method} | "
                             f"{_cell(index.get((task, model, method, 'reparam_shift', 'positional')))} |")
    lines += ["", "## Occlusion: relative logit drop when all content positions are shuffled", "",
              "| task | model | shuffle_logit_drop |", "|---|---|---|"]
    for task, ms in units.items():
        for model in ms:
            lines.append(f"| {task} | {model} | "
                         f"{_cell(index.get((task, model, 'occlusion', 'shuffle_logit_drop', 'combined')))} |")
    path.write_text("\n".join(lines) + "\n")


def _normalised(values):
    v = np.asarray(values, dtype=float)
    top = np.abs(v).max()
    return v / top if top > 0 else v


def write_figure(path, task_name, examples_by_model):
    """Rows: samples; columns: models. Bars: PA-LRP token and positional relevance, AttnLRP token
    relevance and the occlusion reference per position (each normalised by its max |.|);
    evidence positions shaded."""
    models = [m for m, ex in examples_by_model.items() if ex]
    if not models:
        return
    k = len(examples_by_model[models[0]]["labels"])
    fig, axes = plt.subplots(k, len(models), figsize=(5.2 * len(models), 2.1 * k), squeeze=False)
    first = 1 if T.TASKS[task_name].kind == "text" else 0
    for col, model in enumerate(models):
        ex = examples_by_model[model]
        for row in range(k):
            ax = axes[row][col]
            evidence = np.asarray(ex["evidence"][row])
            x = np.arange(first, first + len(evidence))
            for i in np.flatnonzero(evidence):
                ax.axvspan(x[i] - 0.5, x[i] + 0.5, color="gold", alpha=0.35, lw=0)
            series = [("PA-LRP token", ex["maps"]["pa_lrp"]["token"], "tab:blue"),
                      ("PA-LRP positional", ex["maps"]["pa_lrp"]["positional"], "tab:red"),
                      ("AttnLRP token", ex["maps"]["attn_lrp"]["token"], "tab:gray"),
                      ("occlusion token", ex["maps"]["occlusion"]["token"], "tab:green"),
                      ("occlusion positional", ex["maps"]["occlusion"]["positional"], "tab:purple")]
            width = 0.16
            for j, (name, values, colour) in enumerate(series):
                if values is None:
                    continue
                ax.bar(x + (j - 2) * width, _normalised(values[row]), width, color=colour,
                       label=name)
            ax.axhline(0, color="black", lw=0.5)
            ax.set_xticks(x)
            ax.tick_params(labelsize=6)
            ax.set_title(f"{model}, sample {row}, label {ex['labels'][row]}", fontsize=8)
    axes[0][0].legend(fontsize=6, loc="upper left", ncol=2)
    fig.suptitle(f"{task_name}: relevance per {'position' if first else 'cell'} "
                 "(each series / its max |.|; evidence shaded)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
