"""Cost of a vision-language explanation against the stock model's forward + backward (issue 21).

In one process, on one random Qwen2-VL (a packed vision tower with 2-D RoPE and a 2 x 2 patch
merger, an M-RoPE language model; sizes below), for each image side:

- ``stock``: the unpatched model (sdpa), forward of one image and a prompt, with the pixel rows
  and the token embeddings as leaves and the logits of the last position only
  (``logits_to_keep=1``), backward of the argmax logit to both (``torch.autograd.grad``: no
  weight gradients);
- ``attnlrp`` / ``pa-lrp``: :func:`palrp.explain` with ``method="attn_lrp"`` / ``"pa_lrp"`` on
  the same model and inputs (PA-LRP: the tower's 2-D RoPE per section, the LM's M-RoPE per
  layer and section, as positional leaves).

Times are the best of ``--repeats`` runs after one warm-up round, the methods interleaved with a
rotating order; peak memory is measured as benchmarks/bench_llama.py does (CPU: peak RSS above
the RSS before the call, after malloc_trim; CUDA: max_memory_allocated above the allocation
before). Prints a Markdown table with the ratios to ``stock`` and writes the rows as JSON.

    OMP_NUM_THREADS=1 python benchmarks/bench_vlm.py                  # CPU, 224 and 448 px
    python benchmarks/bench_vlm.py --device cuda --sides 448 896
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers as tf

from bench_llama import PeakMemory, _mib, load_line
from palrp import config
from palrp.modules.engine import explain
from palrp.runtime.store import atomic_write_json

METHODS = ("stock", "attnlrp", "pa-lrp")
PATCH, MERGE, IMAGE_TOKEN = 14, 2, 4095


def build_model(args, device):
    vision = dict(depth=args.vision_layers, embed_dim=args.vision_width, hidden_size=args.width,
                  num_heads=args.vision_width // 64, mlp_ratio=4, patch_size=PATCH,
                  temporal_patch_size=2, spatial_merge_size=MERGE)
    head = 64
    half = head // 2
    text = dict(vocab_size=4096, hidden_size=args.width, intermediate_size=4 * args.width,
                num_hidden_layers=args.layers, num_attention_heads=args.width // head,
                num_key_value_heads=max(1, args.width // head // 4), max_position_embeddings=8192,
                pad_token_id=0, eos_token_id=2, bos_token_id=1,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                 "mrope_section": [half // 4, 3 * half // 8, 3 * half // 8]})
    cfg = tf.Qwen2VLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN,
                           video_token_id=4094, vision_start_token_id=4093)
    cfg._attn_implementation = "sdpa"
    model = tf.Qwen2VLForConditionalGeneration(cfg).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_inputs(side: int, text_len: int, device, seed: int):
    g = torch.Generator().manual_seed(seed)
    cells = side // PATCH
    tokens = (cells // MERGE) ** 2
    ids = torch.randint(3, 4000, (1, text_len + tokens), generator=g)
    ids[0, 4:4 + tokens] = IMAGE_TOKEN
    rows = torch.randn(cells * cells, 3 * 2 * PATCH * PATCH, generator=g)
    return {"input_ids": ids.to(device), "pixel_values": rows.to(device),
            "image_grid_thw": torch.tensor([[1, cells, cells]], device=device),
            "mm_token_type_ids": (ids == IMAGE_TOKEN).int().to(device)}


def stock_step(model, inputs):
    """Stock forward + backward of the argmax logit at the last position to the pixel rows and
    the token embeddings (the same leaves as the explanation's, without its positional ones)."""
    kept = {}

    def leaf(module, args, output):
        kept["embeds"] = output.detach().requires_grad_(True)
        return kept["embeds"]

    handle = model.get_input_embeddings().register_forward_hook(leaf)
    try:
        pixels = inputs["pixel_values"].detach().requires_grad_(True)
        logits = model(**{**inputs, "pixel_values": pixels}, use_cache=False,
                       logits_to_keep=1).logits[:, -1]
    finally:
        handle.remove()
    score = logits.max(dim=-1).values.sum()
    return torch.autograd.grad(score, (pixels, kept["embeds"]))


def run(method: str, model, inputs):
    if method == "stock":
        return stock_step(model, inputs)
    return explain(model, inputs, method="pa_lrp" if method == "pa-lrp" else "attn_lrp")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--sides", type=int, nargs="+", default=[224, 448],
                   help="image sides in px (multiples of 28) [224 448]")
    p.add_argument("--text-len", type=int, default=64, help="prompt tokens besides the image")
    p.add_argument("--width", type=int, default=512, help="language model width [512]")
    p.add_argument("--layers", type=int, default=4, help="language model layers [4]")
    p.add_argument("--vision-width", type=int, default=256, help="vision tower width [256]")
    p.add_argument("--vision-layers", type=int, default=4, help="vision tower blocks [4]")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (best of) [3]")
    p.add_argument("--output", type=Path, default=config.OUTPUT_DIR / "bench_vlm.json")
    p.add_argument("--seed", type=int, default=config.SEED)
    args = p.parse_args(argv)
    if any(s < 1 or s % (PATCH * MERGE) for s in args.sides):
        raise SystemExit(f"error: --sides must be positive multiples of {PATCH * MERGE}")
    if args.width % 64 or args.vision_width % 64:
        raise SystemExit("error: --width and --vision-width must be multiples of 64")
    args.device = torch.device(args.device)
    return args


def main(argv=None):
    args = parse_args(argv)
    memory = PeakMemory(args.device)
    torch.manual_seed(args.seed)
    model = build_model(args, args.device)
    device_name = (torch.cuda.get_device_name(args.device) if args.device.type == "cuda"
                   else f"CPU, {torch.get_num_threads()} torch thread(s)")
    load_before = load_line()
    rows = []
    for side in args.sides:
        inputs = make_inputs(side, args.text_len, args.device, args.seed)
        best = {m: [float("inf"), None] for m in METHODS}
        for round_ in range(args.repeats + 1):          # round 0 is the warm-up
            shift = round_ % len(METHODS)
            for method in METHODS[shift:] + METHODS[:shift]:
                seconds, peak = memory.timed(lambda m=method: run(m, model, inputs))
                if round_ == 0:
                    continue
                best[method][0] = min(best[method][0], seconds)
                if peak is not None:
                    best[method][1] = peak if best[method][1] is None else min(best[method][1],
                                                                               peak)
        base_t, base_m = best["stock"]
        tokens = int(inputs["input_ids"].shape[1])
        for method in METHODS:
            t, peak = best[method]
            rows.append(dict(side=side, patches=int(inputs["pixel_values"].shape[0]),
                             tokens=tokens, method=method, time_s=t, time_ratio=t / base_t,
                             peak_mib=peak, mem_ratio=(peak / base_m) if peak is not None
                             and base_m else None))
        print(f"{side} px: " + ", ".join(
            f"{r['method']} {r['time_s']:.3f} s ({r['time_ratio']:.2f}x), "
            f"{_mib(r['peak_mib'])} MiB" for r in rows[-len(METHODS):]), flush=True)
    header = (f"Qwen2-VL, random weights: vision tower {args.vision_layers} blocks x "
              f"{args.vision_width} (patch {PATCH}, merge {MERGE}), language model "
              f"{args.layers} layers x {args.width}, prompt {args.text_len} tokens + the "
              f"image's; float32, sdpa, {device_name}; best of {args.repeats}; peak memory: "
              f"{memory.note()}; {load_before} before, {load_line()} after")
    print(f"\n{header}\n")
    print("| image (px) | patches | tokens | method | time (s) | x stock | peak (MiB) | x stock |")
    print("|---:|---:|---:|:---|---:|---:|---:|---:|")
    for r in rows:
        ratio = "n/a" if r["mem_ratio"] is None else f"{r['mem_ratio']:.2f}"
        print(f"| {r['side']} | {r['patches']} | {r['tokens']} | {r['method']} | "
              f"{r['time_s']:.3f} | {r['time_ratio']:.2f} | {_mib(r['peak_mib'])} | {ratio} |")
    atomic_write_json(args.output, dict(setup=header, rows=rows))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
