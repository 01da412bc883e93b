#!/usr/bin/env python3
"""Cost of a PA-LRP explanation against timm's forward+backward, measured in the same process.

    OMP_NUM_THREADS=2 python benchmarks/bench_deit.py            # DeiT-Tiny, DeiT-Small, DINOv2-S 518 px; batch 8
    python benchmarks/bench_deit.py --models deit_tiny --batches 1 8
    python benchmarks/bench_deit.py --device cuda --models deit_base --batches 32

Random weights (speed does not depend on them); timm's own models, explained by
:func:`palrp.modules.explain_image` with the family's default rules. Two baselines on the same model and
batch, interleaved with the explanation round by round (a busy machine slows all three alike):

- ``fwd+bwd params``: forward, then backward of the summed logits with every parameter requiring
  a gradient (training-style);
- ``fwd+bwd frozen``: parameters frozen, the gradient of the summed logits to the input only (what
  any gradient-based explanation needs at least: the fair floor).

The ratios are explanation time / baseline time. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


from palrp.modules import explain_image

#: name -> (timm model, overrides)
MODELS = {
    "deit_tiny": ("deit_tiny_patch16_224", {}),
    "deit_small": ("deit_small_patch16_224", {}),
    "deit_base": ("deit_base_patch16_224", {}),
    # DINOv2 ships without a classifier (num_classes=0): give it the ImageNet-size head
    "dinov2_s_518": ("vit_small_patch14_dinov2", {"img_size": 518, "num_classes": 1000}),
    "eva02_tiny": ("eva02_tiny_patch14_224", {}),
}
DEFAULT_MODELS = ["deit_tiny", "deit_small", "dinov2_s_518"]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_interleaved(fns: dict, device, repeats: int, warmup: int) -> dict:
    """Median seconds of each function over ``repeats`` rounds after ``warmup`` rounds; in each
    round every function runs once."""
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


def _set_requires_grad(model, flag: bool):
    for param in model.parameters():
        param.requires_grad_(flag)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=sorted(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    import timm

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    print(f"device={device} threads={torch.get_num_threads()} dtype={args.dtype} "
          f"torch={torch.__version__} timm={timm.__version__}")
    print("| model | input | batch | fwd+bwd params s/img | fwd+bwd frozen s/img | pa_lrp s/img "
          "| pa_lrp / params | pa_lrp / frozen |")
    print("|---|---|---|---|---|---|---|---|")
    for key in args.models:
        name, overrides = MODELS[key]
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, **overrides)
        model = model.to(device=device, dtype=dtype).eval()
        side = model.patch_embed.img_size
        for batch in args.batches:
            images = torch.randn(batch, 3, *side, device=device, dtype=dtype)

            def with_params():
                _set_requires_grad(model, True)
                model.zero_grad(set_to_none=True)
                model(images).sum().backward()

            def frozen():
                _set_requires_grad(model, False)
                leaf = images.detach().requires_grad_(True)
                torch.autograd.grad(model(leaf).sum(), leaf)

            def pa_lrp():
                _set_requires_grad(model, False)
                explain_image(model, images, "pa_lrp")

            medians = timed_interleaved({"params": with_params, "frozen": frozen, "pa": pa_lrp},
                                        device, args.repeats, args.warmup)
            model.zero_grad(set_to_none=True)
            params, froz, pa = medians["params"], medians["frozen"], medians["pa"]
            print(f"| {name} | {side[0]}x{side[1]} | {batch} | {params / batch:.4f} | "
                  f"{froz / batch:.4f} | {pa / batch:.4f} | {pa / params:.2f}x | "
                  f"{pa / froz:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
