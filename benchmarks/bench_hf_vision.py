#!/usr/bin/env python3
"""Cost of a PA-LRP explanation of a transformers Swin against its stock forward+backward.

    OMP_NUM_THREADS=1 python benchmarks/bench_hf_vision.py                 # swin-tiny layout, 224 px, batch 2
    python benchmarks/bench_hf_vision.py --sizes small --batch 1 --repeats 3
    python benchmarks/bench_hf_vision.py --device cuda --batch 16

Random weights (cost does not depend on them). ``SwinForImageClassification`` built from a
config (``tiny``: microsoft/swin-tiny-patch4-window7-224's layout; ``small``: a reduced one),
explained by :func:`palrp.explain` (every block's relative position bias a leaf). Two baselines on
the same model and batch:

- ``fwd+bwd params``: forward, backward of the summed logits, every parameter requiring a
  gradient (training-style);
- ``fwd+bwd frozen``: parameters frozen, the gradient of the summed logits to the input only.

Time: the three interleaved round by round in one process (a busy machine slows all alike),
medians. Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` around one call of each in
this process; on CPU one fresh child process per mode (PyTorch keeps no CPU peak), the growth of
the process's peak resident set (``ru_maxrss``) over what it held just before the call, after a
warm-up call of the same mode (so the model, the inputs and one-time allocations are counted in
neither), with glibc's ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave the resident
set (otherwise a freed arena is reused unseen and the growth reads too low). Prints a Markdown table of seconds per image, peak MiB and the ratios explanation /
baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch

from bench_deit import timed_interleaved

SIZES = {
    "tiny": dict(image_size=224, patch_size=4, embed_dim=96, depths=[2, 2, 6, 2],
                 num_heads=[3, 6, 12, 24], window_size=7, num_labels=1000),
    "small": dict(image_size=112, patch_size=4, embed_dim=48, depths=[2, 2, 2],
                  num_heads=[3, 6, 12], window_size=7, num_labels=100),
}
MODES = ("params", "frozen", "pa_lrp")


def build(size: str, device, batch: int):
    import transformers as tf
    torch.manual_seed(0)
    config = tf.SwinConfig(**SIZES[size])
    model = tf.SwinForImageClassification(config).to(device).eval()
    images = torch.randn(batch, 3, config.image_size, config.image_size, device=device)
    return model, images


def runner(model, images, mode: str):
    from palrp import explain

    def params():
        model.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        model(images).logits.sum().backward()

    def frozen():
        model.requires_grad_(False)
        leaf = images.detach().requires_grad_(True)
        torch.autograd.grad(model(leaf).logits.sum(), leaf)

    def pa_lrp():
        model.requires_grad_(False)
        explain(model, images, method="pa_lrp")

    return {"params": params, "frozen": frozen, "pa_lrp": pa_lrp}[mode]


def times(model, images, device, repeats: int, warmup: int) -> dict:
    """Median seconds per mode, the modes interleaved (bench_deit's timing)."""
    return timed_interleaved({mode: runner(model, images, mode) for mode in MODES}, device,
                             repeats, warmup)


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_here(size: str, batch: int, mode: str) -> float:
    """(child process) peak resident growth of one call, MiB."""
    model, images = build(size, torch.device("cpu"), batch)
    fn = runner(model, images, mode)
    fn()                                        # warm-up: one-time allocations
    model.zero_grad(set_to_none=True)
    before = _rss_mib()
    fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return max(peak - before, 0.0)


def peaks(size: str, batch: int, device) -> dict:
    if device.type == "cuda":
        model, images = build(size, device, batch)
        out = {}
        for mode in MODES:
            fn = runner(model, images, mode)
            fn()
            model.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            fn()
            torch.cuda.synchronize(device)
            out[mode] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return out
    out = {}
    for mode in MODES:
        # every buffer over 64 KiB its own mapping, returned to the system when freed, so the
        # resident set follows the live tensors instead of the allocator's cached arenas
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        child = subprocess.run([sys.executable, __file__, "--peak-child", size, str(batch), mode],
                               capture_output=True, text=True, check=True, env=env)
        out[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny"], choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--peak-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak_child:
        size, batch, mode = args.peak_child
        print(json.dumps(peak_here(size, int(batch), mode)))
        return
    import transformers
    device = torch.device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"transformers={transformers.__version__} batch={args.batch}")
    print("| model | input | fwd+bwd params s/img | fwd+bwd frozen s/img | pa_lrp s/img "
          "| time / params | time / frozen | peak MiB params | peak MiB frozen | peak MiB pa_lrp "
          "| peak / params | peak / frozen |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        model, images = build(size, device, args.batch)
        sec = times(model, images, device, args.repeats, args.warmup)
        del model, images
        mem = peaks(size, args.batch, device)
        side = SIZES[size]["image_size"]
        b = args.batch
        print(f"| swin {size} | {side}x{side} | {sec['params'] / b:.4f} | {sec['frozen'] / b:.4f} "
              f"| {sec['pa_lrp'] / b:.4f} | {sec['pa_lrp'] / sec['params']:.2f}x "
              f"| {sec['pa_lrp'] / sec['frozen']:.2f}x | {mem['params']:.0f} | {mem['frozen']:.0f} "
              f"| {mem['pa_lrp']:.0f} | {mem['pa_lrp'] / mem['params']:.2f}x "
              f"| {mem['pa_lrp'] / mem['frozen']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
