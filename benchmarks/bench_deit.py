#!/usr/bin/env python3
"""Cost of a PA-LRP / AttnLRP explanation against timm's forward+backward, same process.

    python benchmarks/bench_deit.py                 # DeiT-Tiny and -Small geometry, batch 1 and 8
    python benchmarks/bench_deit.py --device cuda --sizes base --batches 32

Random weights (speed does not depend on them). The baseline is timm's VisionTransformer
forward plus backward of the summed logits with every parameter requiring grad; the ratio is
explanation time / baseline time on the same batch. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules import explain_image, load_deit  # noqa: E402
from modules.deit import NAMED_SIZES  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_interleaved(fns: dict, device, repeats: int, warmup: int) -> dict:
    """Median seconds of each function over ``repeats`` rounds after ``warmup`` rounds; in each
    round every function runs once, so a busy machine slows them alike."""
    times = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=sorted(NAMED_SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    import timm

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    print(f"device={device} threads={torch.get_num_threads()} dtype={args.dtype} "
          f"torch={torch.__version__}")
    print("| model | batch | fwd+bwd s/img | pa_lrp s/img | ratio | attnlrp s/img | ratio |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        geometry = NAMED_SIZES[size]
        reference = timm.create_model(
            f"deit_{size}_patch16_224", pretrained=False, img_size=args.img_size,
            patch_size=args.patch_size).to(device=device, dtype=dtype)
        model = load_deit(reference.state_dict(), num_heads=geometry["num_heads"]).to(device, dtype)
        reference.eval()
        for batch in args.batches:
            images = torch.randn(batch, 3, args.img_size, args.img_size, device=device, dtype=dtype)

            def forward_backward():
                reference.zero_grad(set_to_none=True)
                reference(images).sum().backward()

            medians = timed_interleaved({
                "base": forward_backward,
                "pa": lambda: explain_image(model, images, "pa_lrp"),
                "attn": lambda: explain_image(model, images, "attnlrp"),
            }, device, args.repeats, args.warmup)
            base, pa, attn = medians["base"], medians["pa"], medians["attn"]
            print(f"| DeiT-{size.capitalize()} | {batch} | {base / batch:.4f} | {pa / batch:.4f} | "
                  f"{pa / base:.2f}x | {attn / batch:.4f} | {attn / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
