"""Explain a vision-language model's next token over the image patches and the prompt's tokens together, with PA-LRP.

    python explain_vlm.py MODEL_DIR --image cat.jpg --prompt "What is in this picture?"
    python explain_vlm.py Qwen/Qwen2-VL-2B-Instruct --image cat.jpg --prompt "Describe it." --bf16

MODEL_DIR is a folder written by ``save_pretrained`` holding a vision-language model of a family
the engine explains (LLaVA, Qwen2-VL, Qwen2.5-VL, Gemma 3, PaliGemma, Idefics3, SmolVLM:
docs/vision_families.md) and its
processor, or the hub id ``org/name[@revision]`` of one in the local Hugging Face cache (nothing
is downloaded unless ``--allow-download``). The prompt goes through the processor's chat
template when it has one (the image first, then the prompt, then the generation prompt), else
it is the processor's image token followed by the prompt. The explained target is the next
token (default: the predicted one; ``--target`` takes a token id or one piece of the
tokenizer).

Writes ``<stem>_image.png``: the image, the PA-LRP map of the pixels (the paper's vision map:
pixels plus the vision tower's positional relevance, clamped), the signed pixel relevance, the
vision tower's positional relevance (per rotary section where it has sections; sub-images side
by side for Idefics3 and SmolVLM), and the
language model's positional relevance at the image's tokens laid on the image (per M-RoPE
section for Qwen2-VL: temporal, height, width); ``<stem>.html`` and ``<stem>.png``: the token
heatmaps (PA-LRP, token relevance, positional relevance and its sections); ``<stem>.json``:
every map. A missing or unreadable image, an unreadable model folder or an output folder that
cannot be written ends the program with one line before anything is loaded.
"""
from __future__ import annotations

import sys
from pathlib import Path

from palrp import config
from palrp.runtime.cli import (Parser, check_allow_download, check_output_dir, device_args,
                               dtype_from_flags, file_stem, hub_args, model_folder_or_exit,
                               output_args, precision_args, quiet_loading)


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0],
               parents=[device_args(), output_args(config.OUTPUT_DIR / "explain_vlm",
                                                   "PNG, HTML and JSON", overwrite=False),
                        precision_args(), hub_args()])
    p.add_argument("model_dir", help="folder written by save_pretrained (model + processor), "
                                     "or a hub id org/name[@revision] in the Hugging Face cache")
    p.add_argument("--image", type=Path, required=True, help="the image (any format PIL reads)")
    p.add_argument("--prompt", required=True, help="the text after the image")
    p.add_argument("--target", help="the next token to explain: a token id or one piece of the "
                                    "tokenizer (default: the prediction)")
    p.add_argument("--stem", type=file_stem, default="explanation",
                   help="output file name stem (default: 'explanation')")
    return p.parse_args(argv)


def read_image(path: Path):
    """The image as RGB, or one line saying why not."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise SystemExit(f"error: image {path} not found; give an existing --image file")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise SystemExit(f"error: {path} is not an image PIL can read ({exc}); give a PNG or "
                         "JPEG file") from None


def check_folder(model_dir: Path) -> None:
    from palrp.loaders.text_models import ModelFolderError, check_model_folder

    try:
        check_model_folder(model_dir)
    except ModelFolderError as exc:
        raise SystemExit(f"error: {exc}") from None


def load(model_dir: Path, dtype, device):
    """The model (a registered vision-language composite) and its processor, or one line."""
    import torch
    import transformers as tf

    from palrp.loaders.text_models import exception_line, resolve_dtype
    from palrp.modules.family import UnsupportedModelError, family_of, supported_line

    try:
        processor = tf.AutoProcessor.from_pretrained(model_dir)
        model = tf.AutoModelForImageTextToText.from_pretrained(
            model_dir, dtype=resolve_dtype(dtype, device))
    except Exception as exc:  # noqa: BLE001 -- any loading failure is one line
        raise SystemExit(f"error: cannot load a vision-language model and its processor from "
                         f"{model_dir} ({exception_line(exc)})") from None
    try:
        family, task = family_of(model)
    except UnsupportedModelError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not family.composite or task != "causal_lm":
        composites = "; ".join(part for part in supported_line("causal_lm").split("; ")
                               if "Conditional" in part)
        raise SystemExit(f"error: {type(model).__name__} is no vision-language model; "
                         f"supported: {composites}")
    return model.to(torch.device(device)).eval(), processor


def prompt_text(processor, prompt: str) -> str:
    """The processor's chat template around one image and the prompt, else its image marker
    (``boi_token`` where the processor expands that, else ``image_token``) and the prompt."""
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True,
                                             tokenize=False)
    marker = getattr(processor, "boi_token", None) or getattr(processor, "image_token", None)
    if marker is None:
        raise SystemExit("error: the processor has neither a chat template nor an image token; "
                         "save the model's own processor with it")
    return f"{marker} {prompt}"


def image_token_id(config) -> int:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise SystemExit("error: the model's config names no image token id")


def display_image(inputs, record, model, processor):
    """The processed image in [0, 1] (1, 3, H, W), as the model saw it (mean and std undone)."""
    import torch

    from palrp.modules.adapters.packed_patches import layout, rows_to_images

    pixels = inputs["pixel_values"].detach().float().cpu()
    if pixels.dim() == 2:                       # packed patch rows (Qwen2-VL)
        vision = model.config.vision_config
        grid = inputs["image_grid_thw"].cpu()
        frames = int(grid[0, 0]) * layout(vision)["frames"]
        image = rows_to_images(pixels, grid, vision)[:1] / frames
    elif pixels.dim() == 5:                     # sub-images (Idefics3): side by side
        image = pixels[0].permute(1, 2, 0, 3).reshape(1, pixels.shape[2], pixels.shape[3], -1)
    else:
        image = pixels[:1]
    image = image[:, :, :record.pixels.shape[-2], :record.pixels.shape[-1]]
    source = getattr(processor, "image_processor", processor)
    mean = torch.tensor(getattr(source, "image_mean", None) or [0.0] * 3)[None, :, None, None]
    std = torch.tensor(getattr(source, "image_std", None) or [1.0] * 3)[None, :, None, None]
    return (image * std + mean).clamp(0, 1)


def tokens_on_image(values, slots, record, tiles: int = 1):
    """(S,) values of the language model's tokens -> (H, W): the image's tokens laid on the
    image, when each of the ``tiles`` sub-images (side by side in the stream) has its tokens in
    row-major order on a grid of equal cells (a merge of r x r patches per token: r = 1 for
    LLaVA, 2 for Qwen2-VL and Idefics3, 4 for Gemma 3); None otherwise."""
    import math

    from palrp.modules.positional import spread_patch_grid

    gh, gw = record.grid
    gw //= tiles
    count = int(slots.sum())
    if count == 0 or count % tiles or (gh * gw) % (count // tiles):
        return None
    merge = math.isqrt((gh * gw) // (count // tiles))
    if merge * merge * (count // tiles) != gh * gw or gh % merge or gw % merge:
        return None
    grid = values[slots].reshape(tiles, gh // merge, gw // merge).permute(1, 0, 2)
    grid = grid.reshape(1, gh // merge, tiles * (gw // merge))
    ph, pw = record.patch_size
    return spread_patch_grid(grid, (ph * merge, pw * merge), tuple(record.pixels.shape[-2:]))[0]


def parse_target(spec, model, tokenizer):
    from explain_text import _token_piece
    from palrp.modules.targets import index_from_spec

    if spec is None:
        return None
    size = model.get_output_embeddings().weight.shape[0]
    try:
        if spec.strip().lstrip("+-").isdigit():
            return index_from_spec(spec, size, None, "vocabulary entries")
        return _token_piece(spec, tokenizer, size)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def main(argv=None):
    args = parse_args(argv)
    model_dir = model_folder_or_exit(args.model_dir, check_allow_download(args))
    check_folder(model_dir)
    image = read_image(args.image)
    check_output_dir(args.output_dir)
    if not args.prompt.strip():
        raise SystemExit("error: the prompt is empty; give --prompt with at least one word")
    import torch

    from palrp.modules.engine import explain
    from palrp.render.images import save_map_grid
    from palrp.render.text import save_heatmaps
    from palrp.runtime import atomic_write_json, resolve_device

    device = resolve_device(args.device)
    with quiet_loading():
        model, processor = load(model_dir, dtype_from_flags(args), device)
    tokenizer = processor.tokenizer
    target = parse_target(args.target, model, tokenizer)
    inputs = processor(images=[image], text=[prompt_text(processor, args.prompt)],
                       return_tensors="pt")
    inputs = {k: v.to(device) for k, v in inputs.items() if torch.is_tensor(v)}
    try:
        result = explain(model, inputs, target)
    except FloatingPointError as exc:
        raise SystemExit(f"error: {exc}; run with --fp32") from None
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None

    ids = inputs["input_ids"][0].cpu()
    pieces = tokenizer.convert_ids_to_tokens(ids.tolist())
    t = int(result.target[0])
    label = f"next token {tokenizer.convert_ids_to_tokens([t])[0]!r} (id {t})"
    logit = float(result.explained_logit[0])
    print(f"explained: {label}, logit {logit:.4f}, over {len(pieces)} tokens and the image")

    text = result.streams["input_ids"]
    token_maps = {"PA-LRP": result.combined("input_ids")[0], "tokens": text.relevance[0]}
    if text.positional is not None:
        token_maps["PE (LM)"] = text.positional[0]
        token_maps.update({f"PE (LM) {name}": v[0] for name, v in text.sections.items()})
    token_maps = {k: v.detach().cpu() for k, v in token_maps.items()}

    record = result.streams["pixel_values"]
    image_maps = {"PA-LRP": result.combined("pixel_values")[:1], "pixels": record.pixels[:1]}
    if record.sinks is not None:
        image_maps["PE (vision)"] = record.positional_pixels()[:1]
        from palrp.modules.positional import spread_patch_grid
        gh, gw = record.grid
        for name, values in record.sections.items():
            image_maps[f"PE vision {name}"] = spread_patch_grid(
                values[:1].reshape(1, gh, gw), record.patch_size, tuple(record.pixels.shape[-2:]))
    slots = ids == image_token_id(model.config)
    for name, values in token_maps.items():
        if name.startswith("PE"):
            tiles = inputs["pixel_values"].shape[1] if inputs["pixel_values"].dim() == 5 else 1
            laid = tokens_on_image(values, slots, record, tiles)
            if laid is not None:
                image_maps[f"{name} on image tokens"] = laid[None]
    image_maps = {k: v.detach().float().cpu() for k, v in image_maps.items()}

    shown = display_image(inputs, record, model, processor)
    title = f"{type(model).__name__}: {label}"
    image_path = save_map_grid(args.output_dir / f"{args.stem}_image.png", shown, image_maps,
                               title=title)
    info = [f"model: {args.model_dir}", f"explained: {label}, logit {logit:.4f}",
            "PA-LRP: tokens + |PE| of every layer and section, max-normalised; PE: the "
            "language model's positional relevance (per M-RoPE section where it has them)"]
    try:
        html_path, png_path = save_heatmaps(pieces, token_maps, args.output_dir,
                                            stem=args.stem, title=title, info=info)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    json_path = atomic_write_json(args.output_dir / f"{args.stem}.json", {
        "tokens": pieces, "target": t, "logit": logit, "families": list(result.families),
        "token_maps": {k: v.tolist() for k, v in token_maps.items()},
        "image_grid": list(record.grid), "image_maps": list(image_maps),
        "image_patch_maps": {"pixels": record.relevance[0].tolist(),
                             **({"PE (vision)": record.positional[0].tolist()}
                                if record.sinks is not None else {}),
                             **{f"PE vision {k}": v[0].tolist()
                                for k, v in record.sections.items()}}})
    print(f"wrote {image_path}\nwrote {html_path}\nwrote {png_path}\nwrote {json_path}")


if __name__ == "__main__":
    sys.exit(main())
