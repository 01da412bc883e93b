#!/usr/bin/env python3
"""ImageNet perturbation tests: remove pixels by relevance and watch the classifier's accuracy.

    python analyze_pert_results.py --check-all --fract 0.1 --model deit_tiny_patch16_224-a1311bcf.pth --batch-size 64
    python analyze_pert_results.py --method pa_lrp attnlrp --perturbation blur --model-size base
    python analyze_pert_results.py --check-all --demo --fract 0.25     # embedded default, no downloads
    python analyze_pert_results.py --method rollout --timm-model deit3_small_patch16_224 --model w.safetensors
    python analyze_pert_results.py --method pa_lrp --timm-model deit3_small_patch16_224.fb_in1k --pretrained
    torchrun --nproc_per_node 4 analyze_pert_results.py --check-all --fract 0.1   # data-parallel

docs/protocols.md: a seeded random ``--fract`` of ImageNet val (``<data-path>/val/<class>/<image>``,
labels in torchvision ``ImageFolder`` order), images resized to the input size of the model's timm
data config in [0, 1] (bilinear, no crop, as the protocol; ``--preprocess model``: the model's timm
eval transform, aspect ratio kept and centre crop) and normalised with the model's own mean/std
just before the model.
Positive test (most relevant pixels removed first) and negative test (least relevant first), for the
explanation of the predicted class (accuracy against the prediction) and of the label (accuracy
against the label), 10%..90% removed, pixels set to 0 (or ``blur`` / ``mean``); AUCs in the
original's convention (x = 0.1..0.9) and in Chefer et al.'s (with the clean 0% point, x100).

Before the first map every selected image is decoded: a file that cannot be read (truncated, not
an image, empty, over PIL's decompression-bomb limit) is skipped, named on stderr, and listed with
its reason in ``results.json`` (``skipped_images``, ``n_selected``) and ``results.md``; the numbers
are those of the readable images (``n_images``).

Two resumable stages, each rank working on its own shard and its own files:
1. every method's maps for the predicted class and the label, into HDF5 under
   ``<output-dir>/<model>/explanations/`` (:mod:`palrp.perturbation.map_store`); shared by every
   ``--perturbation`` and every ``--fract`` (the subsets of larger fractions contain the smaller);
2. scoring from the stored maps, all 9 steps of a batch in forward passes of ``batch-size x 9``
   images (:mod:`palrp.perturbation.protocol`), per image into ``scores/<perturbation>/`` stores.
Rank 0 then merges in index order (the numbers do not depend on the number of processes) and
writes ``<perturbation>_fract<F>/results.{json,md}`` and ``curves.png``. Nothing outside the
output directory is written or deleted.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from palrp import config
from palrp.baselines.registry import display_name, explain_batch
from palrp.data.imagenet import CorruptImageError, ImageNetFolder, subset_indices
from palrp.loaders import vision_model
from palrp.perturbation.map_store import MapReader, MapStoreError, MapWriter, stored_indices
from palrp.perturbation.protocol import (MODES, PROTOCOL_VERSION, REPLACEMENTS, STEPS, TESTS,
                                   blur_parameters, predict_perturbed, summarize)
from palrp.runtime import (SampleStore, atomic_output, atomic_write_json, atomic_write_text,
                           check_run, fingerprint)
from palrp.runtime.store import ListOf
from palrp.runtime.cli import (Parser, add_method_args, add_model_args, check_output_dir,
                               checkpoint_and_overrides, device_args, error_line, loader_args,
                               output_args, preprocess_args, selected_methods)
from palrp.runtime.tables import markdown_table
from palrp.runtime.vision_run import (benchmark_run, image_transform, input_size, model_label,
                                      preprocessing_details, preprocessing_record)

#: The four (test, mode) combinations scored per image: (test, explained/scored class).
COMBOS = tuple((test, mode) for test in TESTS for mode in MODES)


def parse_args(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0],
                    parents=[loader_args(16), device_args(), preprocess_args(),
                             output_args(config.OUTPUT_DIR / "pert", "maps, scores and tables")])
    add_method_args(parser)
    parser.add_argument("--fract", type=float, default=0.1,
                        help=f"random fraction of val/ to use (seed config.SEED={config.SEED})")
    add_model_args(parser, "the embedded procedural image folders and their small DeiT "
                           "(no downloads)")
    parser.add_argument("--data-path", type=Path, default=None,
                        help=f"ImageNet root holding val/<class>/<image> (default {config.IMAGENET_PATH})")
    parser.add_argument("--perturbation", choices=REPLACEMENTS, default="zero",
                        help="value of removed pixels: 0, a Gaussian-blurred copy, the image's channel mean")
    args = parser.parse_args(argv)
    args.methods = selected_methods(args, parser)
    if not 0 < args.fract <= 1:
        parser.error(f"--fract must be in (0, 1], not {args.fract:g}")
    return args


def resolve_inputs(args) -> tuple[Path, Path, dict]:
    """(checkpoint, ImageNet root, load overrides); with --demo and no --data-path, the embedded
    procedural images written in the ImageNet folder layout."""
    checkpoint, overrides = checkpoint_and_overrides(args)
    root = args.data_path
    if root is None:
        if args.demo:
            from palrp.data.demo_vision import ensure_demo_imagenet
            root = ensure_demo_imagenet()
        else:
            root = config.IMAGENET_PATH
    return checkpoint, root, overrides


def check_classes(model, dataset: ImageNetFolder, checkpoint: Path) -> None:
    """The model's head must have one output per class folder, in the folders' sorted order."""
    if model.num_classes != dataset.num_classes:
        raise SystemExit(f"error: {checkpoint} has a {model.num_classes}-class head but "
                         f"{dataset.root}/val has {dataset.num_classes} class folders; pass a checkpoint "
                         f"trained on these classes or the --data-path of its data set")
    names = vision_model.class_names(model)
    if names and list(names) != list(dataset.classes):
        raise SystemExit(f"error: the class names of {checkpoint} ({', '.join(names[:3])}, ...) are "
                         f"not the sorted class folders of {dataset.root}/val "
                         f"({', '.join(dataset.classes[:3])}, ...); pass the matching --data-path")


def readable_subset(dataset: ImageNetFolder, selected: list[int],
                    report: bool) -> tuple[list[int], list[dict]]:
    """(the images of ``selected`` that can be read, the skipped ones) before the first map.

    Every selected file is decoded up front (:meth:`ImageNetFolder.unreadable`); a file that
    cannot be read (truncated, not an image, empty, over the decompression-bomb limit) is left
    out of the run and reported -- one line on stderr here (``report``), and by index, file
    (relative to ``val/``) and reason in ``results.json`` / ``results.md`` -- so one bad file
    neither stops a benchmark run nor enters its numbers. Nothing readable: exits with one line.
    """
    try:
        bad = dataset.unreadable(selected)
    except ValueError as exc:               # e.g. a malformed PALRP_MAX_IMAGE_PIXELS
        raise SystemExit(f"error: {exc}") from None
    folder = dataset.root / "val"
    skipped = [{"index": i, "file": os.path.relpath(error.path, folder), "reason": error.reason}
               for i, error in bad.items()]
    readable = [i for i in selected if i not in bad]
    if not readable:
        raise SystemExit(f"error: none of the {len(selected)} selected images of {folder} can be "
                         f"read (first: {next(iter(bad.values()))}); replace them with readable "
                         f"copies")
    if skipped and report:
        names = ", ".join(entry["file"] for entry in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        print(f"warning: skipping {len(skipped)} of the {len(selected)} selected images that "
              f"cannot be read ({names}{more}; first: {skipped[0]['reason']}); they are listed "
              f"in results.json and results.md; replace them with readable copies and rerun to "
              f"include them", file=sys.stderr)
    return readable, skipped


def make_loader(root: Path, model, indices: list[int], args) -> torch.utils.data.DataLoader:
    """The images of ``indices`` at the model's input size, preprocessed as ``--preprocess``
    says."""
    dataset = ImageNetFolder(root, input_size(model), indices=indices,
                             transform=image_transform(model, args.preprocess))
    return torch.utils.data.DataLoader(dataset,
                                       batch_size=args.batch_size, num_workers=args.num_workers,
                                       shuffle=False)


@torch.no_grad()
def _predict(model, normalised: torch.Tensor) -> torch.Tensor:
    return model(normalised).argmax(dim=-1)


def compute_explanations(model, root: Path, indices: list[int], methods: list[str], folder: Path,
                         args, ctx) -> int:
    """Stage 1: maps of the predicted class and of the label for this rank's missing images.

    Where the label is the prediction, the label's map is the predicted class's map (copied, not
    recomputed). Returns the number of images processed.
    """
    done = {name: stored_indices(folder, name) for name in methods}
    ctx.barrier()     # every rank has read every file before any rank opens its own for writing
    todo = [i for i in indices if any(i not in done[name] for name in methods)]
    if not todo:
        return 0
    writers = {name: MapWriter(folder, name, ctx.rank, input_size(model)) for name in methods
               if any(i not in done[name] for i in todo)}
    try:
        bar = tqdm(make_loader(root, model, todo, args), disable=not ctx.is_main,
                   desc=f"stage 1: explanations ({len(writers)} methods)", unit="batch")
        for images, labels, batch_indices in bar:
            batch_indices = batch_indices.tolist()
            x = vision_model.normalize(model, images.to(ctx.device))
            labels = labels.to(ctx.device)
            pred = _predict(model, x)
            names = [n for n in writers if any(i not in done[n] for i in batch_indices)]
            maps_pred = explain_batch(model, x, names, target=pred)
            maps_target = {name: m.clone() for name, m in maps_pred.items()}
            differ = (labels != pred).nonzero().flatten()
            if len(differ):
                for name, m in explain_batch(model, x[differ], names, target=labels[differ]).items():
                    maps_target[name][differ] = m
            for name in names:
                rows = [k for k, i in enumerate(batch_indices) if i not in done[name]]
                writers[name].append(
                    [batch_indices[k] for k in rows], labels[rows].cpu().numpy(),
                    pred[rows].cpu().numpy(),
                    {"predicted": maps_pred[name][rows].float().cpu().numpy(),
                     "target": maps_target[name][rows].float().cpu().numpy()})
    finally:
        for writer in writers.values():
            writer.close()
    return len(todo)


def _predict_combos(model, images01: torch.Tensor, maps: dict, differ: torch.Tensor, kind: str,
                    chunk: int) -> torch.Tensor:
    """(len(COMBOS), steps, B) predictions of the perturbed images of every (test, mode).

    Where the label equals the prediction, stage 1 stored the predicted-class map as the target
    map too, so the target combinations are those of the predicted ones: they are scored only
    for the images whose label differs."""
    predicted = [c for c, (_, mode) in enumerate(COMBOS) if mode == "predicted"]
    preds = torch.empty(len(COMBOS), len(STEPS), len(images01), dtype=torch.long)
    preds[predicted] = predict_perturbed(
        model, images01, [maps["predicted"]] * len(predicted),
        [COMBOS[c][0] == "positive" for c in predicted], kind, chunk)
    for c, (test, mode) in enumerate(COMBOS):
        if mode != "predicted":
            preds[c] = preds[COMBOS.index((test, "predicted"))]
    rows = differ.nonzero().flatten()
    if len(rows):
        others = [c for c, (_, mode) in enumerate(COMBOS) if mode != "predicted"]
        index = rows.to(images01.device)
        scored = predict_perturbed(
            model, images01[index], [maps[COMBOS[c][1]][index] for c in others],
            [COMBOS[c][0] == "positive" for c in others], kind, chunk)
        for k, c in enumerate(others):
            preds[c][:, rows] = scored[k]
    return preds


def score_perturbations(model, root: Path, indices: list[int], methods: list[str], maps_dir: Path,
                        stores: dict[str, SampleStore], args, ctx) -> int:
    """Stage 2: the predicted class of every perturbed image, per image and method, into ``stores``.
    Returns the number of images processed."""
    done = {name: stores[name].done() for name in methods}
    todo = [i for i in indices if any(i not in done[name] for name in methods)]
    if not todo:
        return 0
    readers = {name: MapReader(maps_dir, name) for name in methods}
    chunk = args.batch_size * len(STEPS)
    try:
        bar = tqdm(make_loader(root, model, todo, args), disable=not ctx.is_main,
                   desc=f"stage 2: {args.perturbation} perturbation ({len(methods)} methods)",
                   unit="batch")
        for images, _, batch_indices in bar:
            batch_indices = batch_indices.tolist()
            for name in methods:
                rows = [k for k, i in enumerate(batch_indices) if i not in done[name]]
                if not rows:
                    continue
                wanted = [batch_indices[k] for k in rows]
                missing = [i for i in wanted if i not in readers[name]]
                if missing:
                    raise SystemExit(f"error: no stored {name} map for image {missing[0]} in "
                                     f"{maps_dir}; rerun the same command to compute it")
                stored = readers[name].read(wanted)
                maps = {mode: torch.from_numpy(stored[mode]).to(ctx.device) for mode in MODES}
                preds = _predict_combos(model, images[rows].to(ctx.device), maps,
                                        torch.from_numpy(stored["label"] != stored["pred"]),
                                        args.perturbation, chunk)
                records = []
                for k, index in enumerate(wanted):
                    record = {"index": index, "label": int(stored["label"][k]),
                              "pred": int(stored["pred"][k])}
                    for c, (test, mode) in enumerate(COMBOS):
                        record.setdefault(test, {})[mode] = preds[c, :, k].tolist()
                    records.append(record)
                stores[name].append(records)
    finally:
        for reader in readers.values():
            reader.close()
        for store in stores.values():
            store.close()
    return len(todo)


def _describe_preprocessing(record: dict) -> str:
    details = preprocessing_details(record)
    if record["preprocess"] == "protocol":
        return f"preprocessing `protocol` ({details})"
    return f"preprocessing `model` (timm eval transform: {details})"


def _model_name(model: str) -> str:
    """The model in captions: the weights file's name, or the hub repo of weights in the
    Hugging Face cache."""
    from palrp.loaders.hub import cached_repo_id
    return cached_repo_id(model) or Path(model).name


def format_tables(results: dict, meta: dict) -> str:
    header = ["method"] + [f"{test}, {mode}" for test, mode in COMBOS]
    blocks = [f"Perturbation test `{meta['perturbation']}`, {meta['n_images']} images "
              f"(--fract {meta['fract']:g} of {meta['n_total']}), model {_model_name(meta['model'])}, "
              f"top-1 on these images {100 * meta['clean_accuracy']:.1f}%, "
              f"{_describe_preprocessing(meta['preprocessing'])}. "
              "Positive: lower is better; negative: higher is better."]
    skipped = meta.get("skipped_images") or []
    if skipped:
        blocks.append(f"Skipped {len(skipped)} of the {meta['n_selected']} selected images that "
                      "cannot be read (not in the numbers above):\n\n"
                      + markdown_table(["index", "file", "reason"],
                                       [[str(e["index"]), e["file"], e["reason"]] for e in skipped]))
    for key, title in (("auc", "AUC over 10%..90% removed (the original's convention)"),
                       ("auc_with_clean", "AUC x100 with the clean 0% point (Chefer et al.)")):
        rows = [[display_name(name)] + [f"{r[test][mode][key]:.{4 if key == 'auc' else 2}f}"
                                        for test, mode in COMBOS]
                for name, r in results.items()]
        blocks.append(f"{title}:\n\n" + markdown_table(header, rows))
    return "\n\n".join(blocks)


def save_curves(path: Path, results: dict, meta: dict) -> None:
    from palrp.render.images import pyplot
    plt = pyplot()
    x = [0.0, *(100 * s for s in STEPS)]
    fig, axes = plt.subplots(2, 2, figsize=(10, 8.5), sharex=True, sharey=True)
    for (test, mode), ax in zip(COMBOS, axes.flat):
        for name, r in results.items():
            ax.plot(x, [100 * v for v in r[test][mode]["curve_with_clean"]], marker="o",
                    markersize=3, label=display_name(name))
        ax.set_title(f"{test} test, {mode} class")
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("pixels removed (%)")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8)
    fig.suptitle(f"{meta['perturbation']} perturbation, {meta['n_images']} images, "
                 f"{_model_name(meta['model'])} (AUCs in results.md)")
    fig.tight_layout(rect=(0, 0.04 + 0.025 * ((len(labels) - 1) // 5), 1, 1))
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    methods = args.methods
    check_output_dir(args.output_dir)
    with benchmark_run(args.device, lambda: resolve_inputs(args)) as (ctx, checkpoint, root, model):
        try:
            dataset = ImageNetFolder(root, input_size(model))
            subset = subset_indices(len(dataset), args.fract, config.SEED)
        except (FileNotFoundError, ValueError) as exc:
            raise SystemExit(f"error: {exc}") from None
        check_classes(model, dataset, checkpoint)
        selected = subset
        subset, skipped = readable_subset(dataset, selected, ctx.is_main)
        folder = args.output_dir / model_label(checkpoint)
        # maps and scores are reused only for the same model file, image set and protocol
        preprocessing = vision_model.data_config(model)
        identity = {"protocol_version": PROTOCOL_VERSION, "model": fingerprint(checkpoint),
                    "timm_model": getattr(args, "timm_model", None),
                    "data": str(Path(root).resolve()), "n_total": len(dataset),
                    "img_size": list(input_size(model)), "mean": list(preprocessing["mean"]),
                    "std": list(preprocessing["std"]),
                    "classes_sha1": hashlib.sha1("\n".join(dataset.classes).encode()).hexdigest(),
                    "files_sha1": dataset.listing_sha1(), "preprocess": args.preprocess}
        resumed = check_run(folder, identity, args.overwrite, ctx=ctx,
                            owned=("explanations/*.h5", "scores/*/*.rank*.jsonl",
                                   "*_fract*/results.*", "*_fract*/curves.png"),
                            defaults={"preprocess": "protocol"})
        mine = ctx.shard(subset)
        if resumed and ctx.is_main:
            scored = SampleStore(folder / "scores" / args.perturbation, args.methods[0]).done()
            print(f"resuming {folder}: {len(scored & set(subset))} of {len(subset)} images "
                  f"already scored ({args.methods[0]}, {args.perturbation})")

        start = time.perf_counter()
        try:
            n_explained = compute_explanations(model, root, mine, methods,
                                               folder / "explanations", args, ctx)
            stage1 = time.perf_counter() - start
            ctx.barrier()
            record = {"label": int, "pred": int,       # else recomputed
                      **{test: {mode: ListOf(int, len(STEPS)) for mode in MODES} for test in TESTS}}
            stores = {name: SampleStore(folder / "scores" / args.perturbation, name, ctx.rank,
                                        schema=record) for name in methods}
            start = time.perf_counter()
            n_scored = score_perturbations(model, root, mine, methods, folder / "explanations",
                                           stores, args, ctx)
        except (CorruptImageError, MapStoreError) as exc:
            raise SystemExit(error_line(exc)) from None
        stage2 = time.perf_counter() - start
        ctx.barrier()
        if not ctx.is_main:
            return 0

        wanted = set(subset)
        results = {}
        for name in methods:
            records = [r for r in stores[name].records() if r["index"] in wanted]
            if len(records) != len(subset):
                raise SystemExit(f"error: only {len(records)} of {len(subset)} images of {name} "
                                 f"were scored; rerun the same command to finish")
            results[name] = {"display_name": display_name(name), **summarize(records)}
        first = next(iter(results.values()))
        sigma, kernel = blur_parameters(*input_size(model))
        meta = {"model": str(checkpoint), "data": str(root), "perturbation": args.perturbation,
                **({"blur_sigma": sigma, "blur_kernel": kernel} if args.perturbation == "blur" else {}),
                "fract": args.fract, "seed": config.SEED, "n_total": len(dataset),
                "n_selected": len(selected), "n_images": len(subset),
                "skipped_images": skipped, "clean_accuracy": first["clean_accuracy"],
                "img_size": list(input_size(model)),
                "preprocessing": preprocessing_record(model, args.preprocess),
                "steps": list(STEPS), "processes": ctx.world_size,
                "this_run": {"explained_images": n_explained, "explain_seconds": round(stage1, 3),
                             "scored_images": n_scored, "score_seconds": round(stage2, 3)}}
        out = folder / f"{args.perturbation}_fract{args.fract:g}"
        atomic_write_json(out / "results.json", {**meta, "methods": results})
        table = format_tables(results, meta)
        atomic_write_text(out / "results.md", table + "\n")
        save_curves(out / "curves.png", results, meta)
        print(table)
        print(f"wrote {out}/results.{{md,json}} and curves.png")
        return 0


if __name__ == "__main__":
    sys.exit(main())
