#!/usr/bin/env python3
"""ImageNet-Segmentation benchmark: every explanation method against human object masks.

    python analyze_seg_results.py --check-all                          # gtsegs_ijcv.mat, DeiT-Tiny
    python analyze_seg_results.py --check-all --model-size base --batch-size 32
    python analyze_seg_results.py --check-all --demo                   # embedded default, no downloads
    python analyze_seg_results.py --check-all --timm-model vit_small_patch14_dinov2 --model w.safetensors
    torchrun --nproc_per_node 4 analyze_seg_results.py --check-all     # data-parallel

docs/protocols.md: images resized to the input size of the model's timm data config (bilinear, no
crop, as the protocol; normalised with the model's own mean/std), the map of the predicted class
min-max normalised per image, foreground = map > threshold (mean by default); pixel accuracy
and mIoU accumulated over the data set, mAP per image. Results are written per image as they
come (a rerun resumes where a crash stopped), then as one Markdown table, JSON and CSV, and a
PNG with a few example images and every method's map beside the mask.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import config
from baselines.registry import display_name, explain_batch
from metrics.segmentation import SegmentationAccumulator
from runtime import SampleStore, atomic_write_json, atomic_write_text, init_distributed
from runtime.vision_cli import (add_method_args, add_model_args, checkpoint_and_overrides,
                                input_size, load_model_or_exit, selected_methods)

THRESHOLDS = ("mean", "otsu", "mov")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_method_args(parser)
    add_model_args(parser, "the embedded procedural benchmark and its small DeiT (no downloads)")
    parser.add_argument("--imagenet-seg-path", type=Path, default=config.IMAGENET_SEG_PATH)
    parser.add_argument("--threshold-type", choices=THRESHOLDS, default="mean")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--output-dir", type=Path, default=config.OUTPUT_DIR / "seg")
    parser.add_argument("--num-examples", type=int, default=4, help="images in the example PNG")
    args = parser.parse_args(argv)
    args.methods = selected_methods(args, parser)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def resolve_inputs(args) -> tuple[Path, Path, dict]:
    """(checkpoint, .mat path, load overrides): with --demo and no --imagenet-seg-path, the
    embedded benchmark written in the gtsegs layout."""
    checkpoint, overrides = checkpoint_and_overrides(args)
    mat = args.imagenet_seg_path
    if args.demo and mat == config.IMAGENET_SEG_PATH:
        from data.demo_vision import ensure_demo_seg
        mat = ensure_demo_seg()
    return checkpoint, mat, overrides


def metrics_from_records(records: list[dict], threshold: str) -> dict:
    """Data-set metrics from per-image records, summed in index order (so any sharding of the
    work gives the same numbers)."""
    state = {"threshold": threshold, "correct": 0, "labeled": 0, "inter": [0, 0],
             "union": [0, 0], "ap_sum": 0.0, "n_images": 0}
    for r in records:
        state["correct"] += r["correct"]
        state["labeled"] += r["pixels"]
        state["inter"] = [a + b for a, b in zip(state["inter"], r["intersection"])]
        state["union"] = [a + b for a, b in zip(state["union"], r["union"])]
        state["ap_sum"] += r["ap"]
        state["n_images"] += 1
    return SegmentationAccumulator.from_state_dict(state).compute()


def format_table(results: dict[str, dict]) -> str:
    lines = ["| method | pixel accuracy (%) | mIoU | mAP | images |", "|---|---|---|---|---|"]
    for name, m in results.items():
        lines.append(f"| {display_name(name)} | {m['pixel_accuracy']:.2f} | {m['miou']:.4f} | "
                     f"{m['map']:.4f} | {m['n_images']} |")
    return "\n".join(lines)


def write_outputs(folder: Path, results: dict, meta: dict) -> None:
    atomic_write_json(folder / "results.json", {**meta, "methods": results})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "display_name", "pixel_accuracy", "miou", "map", "n_images"])
    for name, m in results.items():
        writer.writerow([name, display_name(name), f"{m['pixel_accuracy']:.4f}",
                         f"{m['miou']:.6f}", f"{m['map']:.6f}", m["n_images"]])
    atomic_write_text(folder / "results.csv", buffer.getvalue())
    atomic_write_text(folder / "results.md", format_table(results) + "\n")


def save_examples(model, dataset, methods, count: int, path: Path, device) -> None:
    from modules.vision_model import data_config
    from modules.visualize import save_map_grid
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
    ctx = init_distributed(args.device)
    try:
        checkpoint, mat_path, overrides = resolve_inputs(args)
        model = load_model_or_exit(checkpoint, overrides, ctx.device)
        from data.gtsegs import ImageNetSegDataset
        from modules.vision_model import data_config
        preprocessing = data_config(model)
        try:
            dataset = ImageNetSegDataset(mat_path, input_size(model), preprocessing["mean"],
                                         preprocessing["std"], limit=args.limit)
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise SystemExit(f"error: {exc}") from None
        if len(dataset) == 0:
            raise SystemExit(f"error: {mat_path} holds no image; pass the full gtsegs_ijcv.mat")
        folder = args.output_dir / Path(checkpoint).stem / args.threshold_type
        stores = {name: SampleStore(folder / "per_image", name, ctx.rank) for name in methods}
        done = set.intersection(*(store.done() for store in stores.values()))
        todo = [i for i in ctx.shard(range(len(dataset))) if i not in done]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, todo), batch_size=args.batch_size,
            num_workers=args.num_workers, shuffle=False)
        accumulator = SegmentationAccumulator(args.threshold_type)
        start, seen = time.perf_counter(), 0
        bar = tqdm(loader, desc=f"segmentation ({len(methods)} methods)", disable=not ctx.is_main,
                   unit="batch")
        for images, masks, indices in bar:
            maps = explain_batch(model, images.to(ctx.device), methods)
            for name, method_maps in maps.items():
                per_image = accumulator.update(method_maps.float().cpu(), masks)
                stores[name].append(
                    {"index": int(idx), "correct": per_image["correct"][k],
                     "pixels": per_image["pixels"][k], "intersection": per_image["intersection"][k],
                     "union": per_image["union"][k], "ap": per_image["ap"][k]}
                    for k, idx in enumerate(indices.tolist()))
            seen += len(images)
            bar.set_postfix(img_per_s=f"{seen / (time.perf_counter() - start):.2f}")
        elapsed = time.perf_counter() - start
        for store in stores.values():
            store.close()
        seen = int(ctx.total(seen))          # images computed by all ranks in this run
        elapsed = ctx.maximum(elapsed)       # the slowest rank's time
        if not ctx.is_main:
            return 0
        results = {name: metrics_from_records(stores[name].records(), args.threshold_type)
                   for name in methods}
        meta = {"model": str(checkpoint), "data": str(mat_path), "threshold": args.threshold_type,
                "img_size": list(input_size(model)), "mean": list(preprocessing["mean"]),
                "std": list(preprocessing["std"]), "n_images": len(dataset),
                "processes": ctx.world_size,
                "this_run": {"images": seen, "seconds": round(elapsed, 3),
                             "images_per_second": round(seen / elapsed, 4) if seen else None}}
        write_outputs(folder, results, meta)
        save_examples(model, dataset, methods, args.num_examples, folder / "examples.png", ctx.device)
        print(format_table(results))
        print(f"wrote {folder}/results.{{md,json,csv}} and examples.png")
        return 0
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
