#!/usr/bin/env python3
"""Explain one image with a vision transformer: AttnLRP, PA-LRP and PE-only heatmaps side by side.

    python explain_image.py --model deit_small_patch16_224-cd65a155.pth --image cat.jpg
    python explain_image.py --timm-model vit_small_patch14_dinov2 --model w.safetensors --image cat.jpg
    python explain_image.py --timm-model vit_base_patch16_224.augreg_in21k_ft_in1k --pretrained --image cat.jpg
    python explain_image.py --model-size small --image cat.jpg
    python explain_image.py --demo --image some.png --target 3

``--pretrained`` reads timm's hub weights of ``--timm-model`` (a pretrained name or a ``timm/NAME``
hub id) from the local Hugging Face cache (``HF_HOME``), and ``--model-size`` the official DeiT
weights of config.DEIT_CHECKPOINTS, else timm's copy in that cache; nothing is downloaded unless
``--allow-download`` (refused under ``HF_HUB_OFFLINE=1``).

The photo is preprocessed as timm's eval transform for the model does (its data config): the short
side resized to ``size / crop_pct`` with the model's interpolation, centre-cropped to the model's
input size (the aspect ratio is kept), normalised with the model's mean/std.

Writes a PNG (the paper's Figure 1 layout, with colour bars; the last panel is the signed pixel
relevance before clamping, centred at 0) and prints the predicted class with its probability.
``--target`` takes a class index or a class name (the checkpoint's names, or ImageNet's for a
1000-class model).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from palrp import config
from palrp.loaders import vision_model
from palrp.modules import method_maps
from palrp.modules.positional import per_unit_seed
from palrp.render.images import class_index, class_name, save_map_grid
from palrp.runtime import resolve_device
from palrp.runtime.cli import figure_file
from palrp.runtime.cli import (Parser, add_num_heads_arg, add_timm_model_arg, check_output_dir,
                               check_output_file,
                               checkpoint_and_overrides, device_args, output_args)
from palrp.runtime.vision_run import load_model_or_exit


def load_image(path: Path, model) -> torch.Tensor:
    """Any image format PIL reads -> (1, 3, H, W) in [0, 1] at the model's input size, through
    the model's eval transform (:func:`palrp.loaders.vision_model.load_image`: aspect ratio kept,
    short side resized, centre crop). A missing or unreadable file exits with one line."""
    try:
        return vision_model.load_image(path, model)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None


def parse_args(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0],
                    parents=[device_args(), output_args(config.OUTPUT_DIR, "PNG", overwrite=False)])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path,
                        help="DeiT checkpoint (.pth or .safetensors), or the weights of --timm-model")
    source.add_argument("--demo", action="store_true", help="use the embedded demo DeiT")
    add_timm_model_arg(parser)
    add_num_heads_arg(parser)
    parser.add_argument("--image", type=Path, required=True, help="image file (any size)")
    parser.add_argument("--target", default=None,
                        help="class to explain: an index or a class name (default: predicted)")
    parser.add_argument("--model-size", choices=["tiny", "small", "base"], default=None,
                        help="with --model or --demo: check the checkpoint against a named DeiT "
                             "size; alone: the official DeiT weights of that size "
                             "(config.DEIT_CHECKPOINTS, else timm's copy in the Hugging Face "
                             "cache)")
    parser.add_argument("--output", type=figure_file, default=None,
                        help="PNG to write (default: <output-dir>/<image stem>_explanation.png)")
    args = parser.parse_args(argv)
    if not (args.model or args.demo or args.timm_model or args.model_size):
        parser.error("pass the model: --model CHECKPOINT, --demo, --model-size SIZE, or "
                     "--timm-model NAME --pretrained")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.output is not None:
        output = check_output_file(args.output)
    else:
        output = check_output_dir(args.output_dir) / f"{args.image.stem}_explanation.png"
    device = resolve_device(args.device)
    if args.demo and args.timm_model is None and not args.pretrained:
        checkpoint = config.DEMO_VISION_DIR / "deit_demo.safetensors"
        overrides = {"model_size": args.model_size} if args.model_size else {}
    else:
        checkpoint, overrides = checkpoint_and_overrides(args)
    model = load_model_or_exit(checkpoint, overrides, device)
    try:
        target = None if args.target is None else class_index(model, args.target)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    image01 = load_image(args.image, model).to(device)
    try:
        maps, result = method_maps(model, vision_model.normalize(model, image01), target)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    predicted = int(result.logits.argmax(-1))
    target = int(result.target)
    probabilities = result.logits.float().softmax(-1)[0]
    heading = (f"predicted: {predicted} ({class_name(model, predicted)}), "
               f"p={float(probabilities[predicted]):.3f}")
    print(heading)
    if target != predicted:
        explained = (f"explained: {target} ({class_name(model, target)}), "
                     f"p={float(probabilities[target]):.3f}")
        print(explained)
        heading = f"{heading}; {explained}"
    columns = dict(maps)
    # the signed pixel relevance for R(target) = 1, the paper's vision seed (keeps its sign)
    columns["pixel relevance (signed)"] = per_unit_seed(result.streams["pixel_values"].pixels,
                                                        result.explained_logit)
    save_map_grid(output, image01, columns, title=f"{args.image.name}: {heading}",
                  panel_inches=3.6)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
