"""One benchmark run: train (or reuse) every task x model x seed, explain held-out samples with
every method on the model and on its function-preserving reparametrisation, score the maps
against the evidence, and summarise with bootstrap intervals.

Resume: trained models live in ``OUTPUT/models/`` keyed by their training config; the scores of
each task x model x seed in ``OUTPUT/units/<config hash>/``, keyed by the whole run's config,
so a rerun of the same config reuses both and a run of another config never mixes with them.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace

import torch
from tqdm import tqdm

from . import metrics as MX
from . import tasks as T
from .methods import CONSERVING, METHODS, Settings, all_maps
from .models import TrainConfig, data_seeds, reparametrised, trained

#: task -> the models trained on it (the no-position models only where the task allows it)
UNITS = {"marker_slot": ("bert", "llama"), "rule_switch": ("bert", "llama"),
         "copy_kth": ("bert", "llama"), "marker_type": ("bert", "llama", "bert_nope"),
         "object_cell": ("vit", "eva_rope"), "object_shape": ("vit", "eva_rope", "vit_nope")}
EXAMPLES = 3          # samples of seed 0 kept for the figures
VERSION = 2


@dataclass
class RunConfig:
    seeds: list
    quick: bool
    explain_samples: int
    bootstrap: int
    settings: Settings = field(default_factory=Settings)
    train: TrainConfig = field(default_factory=TrainConfig)
    units: dict = field(default_factory=lambda: {k: list(v) for k, v in UNITS.items()})

    def to_dict(self):
        return {"seeds": list(self.seeds), "quick": self.quick,
                "explain_samples": self.explain_samples, "bootstrap_resamples": self.bootstrap,
                "ig_steps": self.settings.ig_steps,
                "occlusion_draws": self.settings.occlusion_draws, "train": asdict(self.train),
                "units": self.units, "methods": list(METHODS), "version": VERSION}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _list(t):
    return [None if v != v else float(v) for v in t.tolist()]


def score(maps, logits, maps_after, evidence):
    """{method: {"metric/channel": per-sample list}}."""
    reference = MX.evidence_mass(MX.combined(maps["attn_lrp"].token, None), evidence)
    out = {}
    for name, m in maps.items():
        s = {}
        comb = MX.combined(m.token, m.positional)
        if m.token is not None and m.positional is not None:
            s["positional_share/combined"] = MX.positional_share(m.token, m.positional)
        s["evidence_mass/combined"] = MX.evidence_mass(comb, evidence)
        if m.token is not None:
            s["evidence_mass/token"] = MX.evidence_mass(m.token, evidence)
        if m.positional is not None:
            s["evidence_mass/positional"] = MX.evidence_mass(m.positional, evidence)
        s["pointing/combined"] = MX.pointing(comb, evidence)
        s["win_rate_vs_attn_lrp/combined"] = MX.win_rate(s["evidence_mass/combined"], reference)
        if name in CONSERVING:
            s["conservation_residual/combined"] = MX.conservation_residual(m.total, logits)
        after = maps_after[name]
        parts = [(m.token, after.token), (m.positional, after.positional)]
        parts = [(a, b) for a, b in parts if a is not None]
        s["reparam_shift/combined"] = MX.shift(torch.cat([a for a, _ in parts], 1),
                                               torch.cat([b for _, b in parts], 1))
        if m.positional is not None:
            s["reparam_shift/positional"] = MX.shift(m.positional, after.positional)
        if m.shuffle is not None:
            s["shuffle_logit_drop/combined"] = m.shuffle
        out[name] = {k: _list(v) for k, v in s.items()}
    return out


def _content(maps):
    """Maps without the [CLS] position 0 (totals, for conservation, keep it)."""
    def cut(x):
        return None if x is None else x[:, 1:]
    return {name: replace(m, token=cut(m.token), positional=cut(m.positional))
            for name, m in maps.items()}


def _examples(batch, maps, k):
    def cut(x):
        return None if x is None else x[:k].tolist()
    return {"inputs": batch.inputs[:k].tolist() if batch.inputs.dim() == 2 else None,
            "labels": batch.labels[:k].tolist(), "evidence": batch.evidence[:k].int().tolist(),
            "maps": {name: {"token": cut(maps[name].token), "positional": cut(maps[name].positional)}
                     for name in ("pa_lrp", "attn_lrp", "occlusion")}}


def run_unit(task, model_name, seed, config: RunConfig, dirs, log):
    """The scores of one task x model x seed (from the unit cache when this config has them)."""
    path = dirs["units"] / f"{task.name}_{model_name}_s{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    model, record, cached = trained(task, model_name, seed, config.train, dirs["models"], log)
    test = T.sample(task, config.train.test_samples, data_seeds(seed)[2])
    n = config.explain_samples
    batch = T.Batch(test.inputs[:n], test.labels[:n], test.evidence[:n])
    changed, how = reparametrised(model, model_name, seed)
    maps, logits = all_maps(model, model_name, batch.inputs, batch.labels, config.settings)
    maps_after, _ = all_maps(changed, model_name, batch.inputs, batch.labels, config.settings)
    if task.kind == "text":         # position 0 is the constant [CLS]: scored positions are 1..
        maps, maps_after = _content(maps), _content(maps_after)
        batch = T.Batch(batch.inputs[:, 1:], batch.labels, batch.evidence[:, 1:])
    unit = {"record": {**record, "model_cached": cached}, "reparametrisation": how,
            "scores": score(maps, logits, maps_after, batch.evidence),
            "examples": _examples(batch, maps, EXAMPLES) if seed == config.seeds[0] else None}
    path.write_text(json.dumps(unit))
    return unit


def run(config: RunConfig, output_dir, log=print):
    dirs = {"models": output_dir / "models", "units": output_dir / "units" / config.digest()}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    jobs = [(T.TASKS[t], m, s) for s in config.seeds for t, ms in config.units.items() for m in ms]
    done = sum((dirs["units"] / f"{t.name}_{m}_s{s}.json").exists() for t, m, s in jobs)
    if done:
        log(f"{output_dir} holds {done} of {len(jobs)} results of this config "
            f"({config.digest()}): reusing them")
    stale = [p.name for p in (output_dir / "units").iterdir() if p.name != config.digest()]
    if stale:
        log(f"(results of other configs in {output_dir / 'units'} are ignored: {', '.join(stale)})")
    units = []
    start = time.time()
    for task, model_name, seed in tqdm(jobs, desc="task x model x seed", dynamic_ncols=True):
        unit = run_unit(task, model_name, seed, config, dirs, log)
        units.append((task, model_name, seed, unit))
    return units, time.time() - start


def summarise(units, config: RunConfig):
    grouped = {}
    for task, model_name, seed, unit in units:
        for method, scores in unit["scores"].items():
            for key, values in scores.items():
                grouped.setdefault((task.name, model_name, method, key), []).append(
                    [float("nan") if v is None else v for v in values])
    rows = []
    for (task_name, model_name, method, key), per_seed in grouped.items():
        metric, channel = key.split("/")
        mean, low, high, n_seeds, n_samples = MX.bootstrap_ci(per_seed, config.bootstrap)
        rows.append({"task": task_name,
                     "position_is_evidence": T.TASKS[task_name].position_is_evidence,
                     "model": model_name, "method": method, "metric": metric,
                     "channel": channel, "mean": mean, "ci_low": low, "ci_high": high,
                     "n_seeds": n_seeds, "n_samples": n_samples})
    return rows
