"""Positional-evidence benchmark: does an attribution's positional channel find the evidence
when the label depends on position? (docs/positional_evidence.md)

Trains tiny models (BERT-like with learned positions, Llama-like with RoPE, a ViT with learned
positions, and no-position controls) on tasks with known evidence per sample, explains held-out
samples with PA-LRP, AttnLRP, PE-only, rollout, Transformer Attribution, gradient x input,
integrated gradients and an occlusion reference, and scores every map against the ground truth.

    python benchmarks/positional_evidence.py --quick --seeds 0 1 2 --output-dir DIR
    python benchmarks/positional_evidence.py --output-dir DIR          # the default run

Writes DIR/results.json, DIR/results.md and DIR/figures/<task>.png; trained models are cached
in DIR/models (reused by any run with the same training config), per-unit scores in
DIR/units/<config hash> (reused only by a run of the same config).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

DEFAULT_OUTPUT = pathlib.Path("results") / "positional_evidence"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="CI-sized run: 32 samples per unit, 200 bootstrap resamples")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="model seeds (default: 0 1 2 3 4; --quick: 0 1 2)")
    p.add_argument("--output-dir", type=pathlib.Path, default=DEFAULT_OUTPUT)
    p.add_argument("--tasks", nargs="+", default=None, help="a subset of the tasks")
    p.add_argument("--models", nargs="+", default=None, help="a subset of the models")
    p.add_argument("--explain-samples", type=int, default=None,
                   help="held-out samples explained per task x model x seed")
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--max-epochs", type=int, default=None)
    return p.parse_args(argv)


def check_writable(directory: pathlib.Path) -> str | None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        return f"error: cannot write to --output-dir {directory}: {error.strerror or error}"
    return None


def main(argv=None) -> int:
    args = parse(argv)
    problem = check_writable(args.output_dir)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    import torch
    from dataclasses import replace

    from positional_evidence_lib import report
    from positional_evidence_lib import run as R
    from positional_evidence_lib import tasks as T
    from positional_evidence_lib.methods import METHODS, NOT_APPLICABLE, Settings
    from positional_evidence_lib.models import TrainConfig

    torch.set_num_threads(1)
    units = {t: list(ms) for t, ms in R.UNITS.items()}
    for name, chosen, known in (("task", args.tasks, set(T.TASKS)),
                                ("model", args.models, {m for ms in R.UNITS.values() for m in ms})):
        unknown = sorted(set(chosen or ()) - known)
        if unknown:
            print(f"error: unknown {name}(s) {', '.join(unknown)}; choose from "
                  f"{', '.join(sorted(known))}", file=sys.stderr)
            return 2
    if args.tasks:
        units = {t: ms for t, ms in units.items() if t in args.tasks}
    if args.models:
        units = {t: [m for m in ms if m in args.models] for t, ms in units.items()}
        units = {t: ms for t, ms in units.items() if ms}
    if not units:
        print("error: no task x model pair left after --tasks / --models", file=sys.stderr)
        return 2
    train = TrainConfig()
    if args.train_samples:
        train = replace(train, train_samples=args.train_samples)
    if args.max_epochs:
        train = replace(train, max_epochs=args.max_epochs)
    seeds = args.seeds or ([0, 1, 2] if args.quick else [0, 1, 2, 3, 4])
    config = R.RunConfig(seeds=seeds, quick=args.quick,
                         explain_samples=args.explain_samples or (32 if args.quick else 200),
                         bootstrap=200 if args.quick else 1000,
                         settings=Settings(), train=train, units=units)
    out = args.output_dir
    results = out / "results.json"
    if results.exists():
        import json
        try:
            old = json.loads(results.read_text()).get("config", {}).get("config_hash")
        except ValueError:
            old = None
        if old != config.digest():
            print(f"{results} is from another config ({old}); it will be replaced, not merged")
    print(f"positional-evidence benchmark: config {config.digest()}, seeds {seeds}, "
          f"{sum(map(len, units.values()))} task x model pairs, output {out}")
    start = time.time()
    done, _ = R.run(config, out)
    summary = R.summarise(done, config)
    models = [{k: unit["record"][k] for k in ("task", "model", "seed", "heldout_accuracy",
                                               "heldout_samples", "epochs", "attempts",
                                               "below_target")}
              for _, _, _, unit in done]
    reparam = {f"{t.name}/{m}": unit["reparametrisation"] for t, m, s, unit in done}
    wall = time.time() - start
    config_dict = {**config.to_dict(), "config_hash": config.digest()}
    na = {"positional_share": "methods with a token and a positional channel only (pa_lrp, "
          "occlusion); 0 by construction for token-only methods, 1 for pe_only",
          "conservation_residual": "methods whose relevance is meant to sum to the logit "
          "(pa_lrp, attn_lrp, grad_x_input, integrated_gradients); rollout, Transformer "
          "Attribution and occlusion are not sums of the logit, pe_only is a part of pa_lrp",
          "methods": {f"{model}/{method}": why for (model, method), why in NOT_APPLICABLE.items()
                      if any(model in ms for ms in units.values())}}
    report.write_json(results, config_dict, models, summary,
                      {"reparametrisations": reparam, "not_applicable": na,
                       "wall_seconds": wall})
    report.write_markdown(out / "results.md", config_dict, models, summary, METHODS, units, wall)
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    for task_name, ms in units.items():
        examples = {m: unit["examples"] for t, m, s, unit in done
                    if t.name == task_name and s == seeds[0]}
        report.write_figure(figures / f"{task_name}.png", task_name, examples)
    below = [m for m in models if m["below_target"]]
    print(f"done in {wall:.0f} s: {results}, {out / 'results.md'}, {figures}/"
          + (f"; {len(below)} model(s) under 99% held-out accuracy (marked)" if below else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
