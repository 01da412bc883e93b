#!/usr/bin/env python3
"""ImageNet-Segmentation benchmark: every explanation method against human object masks.

    python analyze_seg_results.py --check-all                          # gtsegs_ijcv.mat, DeiT-Tiny
    python analyze_seg_results.py --check-all --model-size base --batch-size 32
    python analyze_seg_results.py --check-all --demo                   # embedded default, no downloads
    python analyze_seg_results.py --check-all --timm-model vit_small_patch14_dinov2 --model w.safetensors
    python analyze_seg_results.py --check-all --timm-model vit_base_patch16_224.augreg_in21k_ft_in1k --pretrained
    torchrun --nproc_per_node 4 analyze_seg_results.py --check-all     # data-parallel

docs/protocols.md: images resized to the input size of the model's timm data config (bilinear, no
crop, as the protocol; normalised with the model's own mean/std; ``--preprocess model``: the
model's timm eval transform instead, the mask resized and cropped alike), the map of the predicted class
min-max normalised per image, foreground = map > threshold (mean by default); pixel accuracy
and mIoU accumulated over the data set, mAP per image. An image whose mask holds one class only
(empty, or all foreground) has no defined mAP or IoU: it is left out of every metric, and the
count and indices are reported (a line under the table, results.json). Results are written per image as they
come (a rerun resumes where a crash stopped), then as one Markdown table, JSON and CSV, and a
PNG with a few example images and every method's map beside the mask. The output folder records
the run (run.json: model and data files, threshold, preprocessing, protocol version); a rerun with other inputs
is refused (pass another --output-dir, or --overwrite).
"""
from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from palrp import config
from palrp.baselines.registry import display_name, explain_batch
from palrp.metrics.segmentation import PROTOCOL_VERSION, THRESHOLDS, SegmentationAccumulator
from palrp.runtime import SampleStore, atomic_write_json, atomic_write_text, check_run, fingerprint
from palrp.runtime.store import ListOf
from palrp.runtime.tables import markdown_table
from palrp.runtime.cli import (Parser, add_method_args, add_model_args, check_output_dir,
                               checkpoint_and_overrides, device_args, error_line, loader_args,
                               nonnegative_int, output_args, positive_int, preprocess_args,
                               selected_methods)
from palrp.runtime.vision_run import (benchmark_run, image_transform, input_size, model_label,
                                      preprocessing_details, preprocessing_record)


def parse_args(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0],
                    parents=[loader_args(8), device_args(), preprocess_args(),
                             output_args(config.OUTPUT_DIR / "seg", "per-image results and tables")])
    add_method_args(parser)
    add_model_args(parser, "the embedded procedural benchmark and its small DeiT (no downloads)")
    parser.add_argument("--imagenet-seg-path", type=Path, default=config.IMAGENET_SEG_PATH)
    parser.add_argument("--threshold-type", choices=THRESHOLDS, default="mean")
    parser.add_argument("--limit", type=positive_int, default=None, help="only the first N images")
    parser.add_argument("--num-examples", type=nonnegative_int, default=4,
                        help="images in the example PNG (0: no PNG)")
    args = parser.parse_args(argv)
    args.methods = selected_methods(args, parser)
    return args


def resolve_inputs(args) -> tuple[Path, Path, dict]:
    """(checkpoint, .mat path, load overrides): with --demo and no --imagenet-seg-path, the
    embedded benchmark written in the gtsegs layout."""
    checkpoint, overrides = checkpoint_and_overrides(args)
    mat = args.imagenet_seg_path
    if args.demo and mat == config.IMAGENET_SEG_PATH:
        from palrp.data.demo_vision import ensure_demo_seg
        mat = ensure_demo_seg()
    return checkpoint, mat, overrides


def metrics_from_records(records: list[dict], threshold: str) -> dict:
    """Data-set metrics from per-image records, summed in index order (so any sharding of the
    work gives the same numbers). Records of images with a degenerate (single-class) mask are
    counted in ``n_degenerate`` and left out of every sum."""
    state = {"threshold": threshold, "correct": 0, "labeled": 0, "inter": [0, 0],
             "union": [0, 0], "ap_sum": 0.0, "n_images": 0, "n_degenerate": 0}
    for r in records:
        if r["degenerate"] is not None:
            state["n_degenerate"] += 1
            continue
        state["correct"] += r["correct"]
        state["labeled"] += r["pixels"]
        state["inter"] = [a + b for a, b in zip(state["inter"], r["intersection"])]
        state["union"] = [a + b for a, b in zip(state["union"], r["union"])]
        state["ap_sum"] += r["ap"]
        state["n_images"] += 1
    return SegmentationAccumulator.from_state_dict(state).compute()


def degenerate_report(records: list[dict]) -> dict:
    """The images whose mask holds one class only, from one method's per-image records (the
    masks are the same for every method): their count and indices, all and by kind."""
    kinds = {"empty": [], "full": []}
    for r in records:
        if r["degenerate"] is not None:
            kinds[r["degenerate"]].append(int(r["index"]))
    indices = sorted(kinds["empty"] + kinds["full"])
    return {"count": len(indices), "indices": indices, "empty": kinds["empty"],
            "all_foreground": kinds["full"]}


def degenerate_line(report: dict) -> str:
    """The line under the table saying how many images were left out and why."""
    n = report["count"]
    line = (f"{n} image{'' if n == 1 else 's'} with degenerate masks excluded (a mask without "
            "foreground or without background has no defined mAP or IoU)")
    if n:
        line += (f": {len(report['empty'])} empty, {len(report['all_foreground'])} all "
                 "foreground; indices in results.json")
    return line + "."


def describe_preprocessing(record: dict) -> str:
    """One line saying how the images were preprocessed (above the table)."""
    details = preprocessing_details(record)
    if record["preprocess"] == "protocol":
        return f"Preprocessing `protocol`: {details} (the paper's protocol)."
    return (f"Preprocessing `model`: the model's timm eval transform ({details}); masks "
            "resized and cropped alike.")


def format_table(results: dict[str, dict], preprocessing: dict | None = None,
                 degenerate: dict | None = None) -> str:
    caption = describe_preprocessing(preprocessing) + "\n\n" if preprocessing else ""
    table = caption + markdown_table(
        ["method", "pixel accuracy (%)", "mIoU", "mAP", "images"],
        [[display_name(name), f"{m['pixel_accuracy']:.2f}", f"{m['miou']:.4f}", f"{m['map']:.4f}",
          str(m["n_images"])] for name, m in results.items()])
    return table + ("\n\n" + degenerate_line(degenerate) if degenerate is not None else "")


def write_outputs(folder: Path, results: dict, meta: dict) -> None:
    atomic_write_json(folder / "results.json", {**meta, "methods": results})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "display_name", "pixel_accuracy", "miou", "map", "n_images",
                     "n_degenerate_excluded"])
    for name, m in results.items():
        writer.writerow([name, display_name(name), f"{m['pixel_accuracy']:.4f}",
                         f"{m['miou']:.6f}", f"{m['map']:.6f}", m["n_images"], m["n_degenerate"]])
    atomic_write_text(folder / "results.csv", buffer.getvalue())
    atomic_write_text(folder / "results.md", format_table(
        results, meta.get("preprocessing"), meta.get("degenerate_masks")) + "\n")


def save_examples(model, dataset, methods, count: int, path: Path, device) -> None:
    from palrp.loaders.vision_model import data_config
    from palrp.render.images import save_map_grid
    count = min(count, len(dataset))
    if count < 1:
        return
    items = [dataset[i] for i in range(count)]
    images = torch.stack([x for x, _, _ in items]).to(device)
    masks = torch.stack([m for _, m, _ in items])
    maps = explain_batch(model, images, methods)
    preprocessing = data_config(model)
    mean = torch.tensor(preprocessing["mean"], device=device).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing["std"], device=device).view(1, -1, 1, 1)
    save_map_grid(path, images * std + mean, {display_name(k): v for k, v in maps.items()},
                  extra={"mask": masks})


def main(argv=None) -> int:
    args = parse_args(argv)
    methods = args.methods
    check_output_dir(args.output_dir)
    with benchmark_run(args.device, lambda: resolve_inputs(args)) as (ctx, checkpoint, mat_path,
                                                                      model):
        from palrp.data.gtsegs import GtSegsError, ImageNetSegDataset
        from palrp.loaders.vision_model import data_config
        preprocessing = data_config(model)
        try:
            dataset = ImageNetSegDataset(mat_path, input_size(model), preprocessing["mean"],
                                         preprocessing["std"], limit=args.limit,
                                         transform=image_transform(model, args.preprocess))
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise SystemExit(f"error: {exc}") from None
        if len(dataset) == 0:
            raise SystemExit(f"error: {mat_path} holds no image; pass the full gtsegs_ijcv.mat")
        folder = args.output_dir / model_label(checkpoint) / args.threshold_type
        identity = {"protocol_version": PROTOCOL_VERSION, "model": fingerprint(checkpoint),
                    "timm_model": getattr(args, "timm_model", None),
                    "data": fingerprint(mat_path), "threshold": args.threshold_type,
                    "img_size": list(input_size(model)), "mean": list(preprocessing["mean"]),
                    "std": list(preprocessing["std"]), "preprocess": args.preprocess}
        resumed = check_run(folder, identity, args.overwrite, ctx=ctx,
                            owned=("per_image/*.rank*.jsonl", "results.*", "examples.png"),
                            defaults={"preprocess": "protocol"})
        record = {"correct": float, "pixels": float, "intersection": ListOf(float, 2),
                  "union": ListOf(float, 2), "ap": (float, None),
                  "degenerate": (str, None)}                          # else recomputed
        stores = {name: SampleStore(folder / "per_image", name, ctx.rank, schema=record)
                  for name in methods}
        wanted = range(len(dataset))
        done = set.intersection(*(store.done() for store in stores.values())) & set(wanted)
        if resumed and ctx.is_main:
            print(f"resuming {folder}: {len(done)} of {len(dataset)} images already done")
        todo = [i for i in ctx.shard(wanted) if i not in done]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, todo), batch_size=args.batch_size,
            num_workers=args.num_workers, shuffle=False)
        accumulator = SegmentationAccumulator(args.threshold_type)
        start, seen = time.perf_counter(), 0
        bar = tqdm(loader, desc=f"segmentation ({len(methods)} methods)", disable=not ctx.is_main,
                   unit="batch")
        try:
            for images, masks, indices in bar:
                maps = explain_batch(model, images.to(ctx.device), methods)
                for name, method_maps in maps.items():
                    per_image = accumulator.update(method_maps.float().cpu(), masks)
                    stores[name].append(
                        {"index": int(idx), "correct": per_image["correct"][k],
                         "pixels": per_image["pixels"][k],
                         "intersection": per_image["intersection"][k],
                         "union": per_image["union"][k], "ap": per_image["ap"][k],
                         "degenerate": per_image["degenerate"][k]}
                        for k, idx in enumerate(indices.tolist()))
                seen += len(images)
                bar.set_postfix(img_per_s=f"{seen / (time.perf_counter() - start):.2f}")
        except GtSegsError as exc:
            raise SystemExit(error_line(exc)) from None
        elapsed = time.perf_counter() - start
        for store in stores.values():
            store.close()
        seen = int(ctx.total(seen))          # images computed by all ranks in this run
        elapsed = ctx.maximum(elapsed)       # the slowest rank's time
        if not ctx.is_main:
            return 0
        records = {name: [r for r in stores[name].records() if r["index"] < len(dataset)]
                   for name in methods}
        results = {name: metrics_from_records(records[name], args.threshold_type)
                   for name in methods}
        degenerate = degenerate_report(records[methods[0]])
        if degenerate["count"] == len(dataset):
            raise SystemExit(f"error: every one of the {len(dataset)} images of {mat_path} has a "
                             "degenerate mask (no foreground or no background), so no metric is "
                             "defined; check the ground-truth masks of that file")
        meta = {"model": str(checkpoint), "data": str(mat_path), "threshold": args.threshold_type,
                "img_size": list(input_size(model)), "mean": list(preprocessing["mean"]),
                "std": list(preprocessing["std"]),
                "preprocessing": preprocessing_record(model, args.preprocess),
                "n_images": len(dataset),
                "degenerate_masks": degenerate,
                "processes": ctx.world_size,
                "this_run": {"images": seen, "seconds": round(elapsed, 3),
                             "images_per_second": round(seen / elapsed, 4) if seen else None}}
        write_outputs(folder, results, meta)
        wrote = f"{folder}/results.{{md,json,csv}}"
        if args.num_examples:
            save_examples(model, dataset, methods, args.num_examples, folder / "examples.png",
                          ctx.device)
            wrote += " and examples.png"
        print(format_table(results, meta["preprocessing"], degenerate))
        print(f"wrote {wrote}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
