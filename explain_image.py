#!/usr/bin/env python3
"""Explain one image with a vision transformer: AttnLRP, PA-LRP and PE-only heatmaps side by side.

    python explain_image.py --model deit_small_patch16_224-cd65a155.pth --image cat.jpg
    python explain_image.py --timm-model vit_small_patch14_dinov2 --model w.safetensors --image cat.jpg
    python explain_image.py --timm-model vit_base_patch16_224.augreg_in21k_ft_in1k --pretrained --image cat.jpg
    python explain_image.py --model-size small --image cat.jpg
    python explain_image.py --demo --image some.png --target 3
    python explain_image.py --torchvision-model swin_t --model swin_t-704ceda3.pth --image cat.jpg
    python explain_image.py --torchvision-model vit_b_16 --pretrained --image cat.jpg   # torch hub cache
    python explain_image.py --model ./my-swin-folder --image cat.jpg          # a transformers classifier
    python explain_image.py --model microsoft/swin-tiny-patch4-window7-224 --image cat.jpg   # hub id, from the cache

``--pretrained`` reads timm's hub weights of ``--timm-model`` (a pretrained name or a ``timm/NAME``
hub id) from the local Hugging Face cache (``HF_HOME``), and ``--model-size`` the official DeiT
weights of config.DEIT_CHECKPOINTS, else timm's copy in that cache; nothing is downloaded unless
``--allow-download`` (refused under ``HF_HUB_OFFLINE=1``).

``--model`` also takes a transformers image classifier of a registered family (ViT, DeiT, DINOv2,
BEiT, Swin, CLIP, SigLIP classifiers, ...) as a ``save_pretrained`` folder or a hub id
``org/name[@revision]`` read from the same cache; it is preprocessed as its
``preprocessor_config.json`` says (resize to its size, its mean/std; without one, the config's
image size and the ImageNet mean/std, with a note).

``--torchvision-model`` takes a torchvision ViT or Swin (``vit_b_16``, ..., ``swin_t``, ...,
``swin_v2_b``) whose state dict ``--model`` gives, or with ``--pretrained`` torchvision's released
weights from the torch hub cache (``TORCH_HOME``); it is preprocessed as those weights' transform
says (short side resized, centre crop, ImageNet mean/std).

The photo of a timm model is preprocessed as timm's eval transform for the model does (its data config): the short
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
                        help="DeiT checkpoint (.pth or .safetensors), the weights of --timm-model, "
                             "or a transformers image classifier: a save_pretrained folder or a "
                             "hub id org/name (from the Hugging Face cache)")
    source.add_argument("--demo", action="store_true", help="use the embedded demo DeiT")
    add_timm_model_arg(parser)
    parser.add_argument("--torchvision-model", default=None, metavar="NAME",
                        help="torchvision ViT or Swin (vit_b_16, ..., swin_t, ..., swin_v2_b) "
                             "whose state dict --model gives; with --pretrained torchvision's "
                             "released weights from the torch hub cache")
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
    if not (args.model or args.demo or args.timm_model or args.model_size
            or args.torchvision_model):
        parser.error("pass the model: --model CHECKPOINT, --demo, --model-size SIZE, "
                     "--timm-model NAME --pretrained, or --torchvision-model NAME --pretrained")
    if args.torchvision_model and (args.timm_model or args.demo or args.model_size
                                   or args.num_heads):
        parser.error("--torchvision-model names the architecture itself: leave out "
                     "--timm-model, --demo, --model-size and --num-heads")
    if args.torchvision_model and bool(args.model) == bool(args.pretrained):
        parser.error("--torchvision-model needs its weights: --model FILE or --pretrained")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.output is not None:
        output = check_output_file(args.output)
    else:
        output = check_output_dir(args.output_dir) / f"{args.image.stem}_explanation.png"
    device = resolve_device(args.device)
    folder = _transformers_folder(args)
    if args.torchvision_model:
        model, image01, inputs, name_of, target = _load_torchvision(args, device)
    elif folder is not None:
        model, image01, inputs, name_of, target = _load_transformers(args, folder, device)
    else:
        model, image01, inputs, name_of, target = _load_timm(args, device)
    try:
        maps, result = method_maps(model, inputs, target)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    predicted = int(result.logits.argmax(-1))
    target = int(result.target)
    probabilities = result.logits.float().softmax(-1)[0]
    heading = (f"predicted: {predicted} ({name_of(predicted)}), "
               f"p={float(probabilities[predicted]):.3f}")
    print(heading)
    if target != predicted:
        explained = (f"explained: {target} ({name_of(target)}), "
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


def _transformers_folder(args):
    """The folder of ``--model`` when it names a transformers model (a folder or a cached hub
    id), else None; a hub id missing from the cache exits with one line."""
    if args.model is None or args.timm_model or args.demo or args.torchvision_model:
        return None
    from palrp.loaders.hf_vision import hf_vision_folder
    from palrp.loaders.text_models import ModelFolderError
    try:
        folder = hf_vision_folder(args.model, allow_download=args.allow_download)
    except ModelFolderError as exc:
        raise SystemExit(f"error: {exc}") from None
    if folder is not None and (args.model_size or args.num_heads):
        raise SystemExit("error: --model-size and --num-heads describe a DeiT checkpoint; a "
                         "transformers folder or hub id carries its own config")
    return folder


def _load_transformers(args, folder, device):
    """A transformers image classifier: the model, the [0, 1] image, the model's input, the
    class namer and the target index."""
    from palrp.loaders import hf_vision
    from palrp.loaders.text_models import ModelFolderError
    from palrp.modules.targets import index_from_spec
    try:
        model = hf_vision.load_image_classifier(folder, device)
        preprocessing = hf_vision.Preprocessing.of(model, folder)
    except ModelFolderError as exc:
        raise SystemExit(f"error: {exc}") from None
    if preprocessing.note:
        print(f"note: {preprocessing.note}")
    names = hf_vision.class_names(model)
    try:
        target = None if args.target is None else index_from_spec(
            args.target, int(model.config.num_labels), names)
        image01 = preprocessing.load_image(args.image).to(device)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None

    def name_of(index):
        return names[index] if names else f"class {index}"
    return model, image01, preprocessing.normalize(image01), name_of, target


def _load_torchvision(args, device):
    """A torchvision ViT or Swin (:mod:`palrp.loaders.torchvision_models`): as above."""
    from palrp.loaders import torchvision_models as tv
    from palrp.modules.targets import index_from_spec
    try:
        weights = args.model or tv.cached_weights(args.torchvision_model, args.allow_download)
        model = tv.load_torchvision_model(args.torchvision_model, weights).to(device)
        preprocessing = tv.Preprocessing(model, args.torchvision_model)
        names = preprocessing.class_names
        target = None if args.target is None else index_from_spec(
            args.target, preprocessing.num_classes, names)
        image01 = preprocessing.load_image(args.image).to(device)
    except (FileNotFoundError, ValueError) as exc:     # CheckpointError is a ValueError
        raise SystemExit(f"error: {exc}") from None

    def name_of(index):
        return names[index] if names else f"class {index}"
    return model, image01, preprocessing.normalize(image01), name_of, target


def _load_timm(args, device):
    """A timm model (a DeiT checkpoint, --timm-model, --demo, --model-size): as above."""
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
        inputs = vision_model.normalize(model, image01)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    return model, image01, inputs, lambda index: class_name(model, index), target

if __name__ == "__main__":
    sys.exit(main())
