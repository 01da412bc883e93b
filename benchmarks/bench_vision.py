#!/usr/bin/env python3
"""Cost of a PA-LRP explanation of the vision families beyond timm's ViT (Swin, Swin V2, BEiT,
CaiT, torchvision's ViT and Swin), in time and peak memory, against the stock forward+backward
of the same model, batch and process.

    OMP_NUM_THREADS=2 python benchmarks/bench_vision.py                 # timm Swin-T and DeiT-Tiny, batch 1
    python benchmarks/bench_vision.py --models swin_t tv_swin_t tv_vit_b_16 --batches 1 4
    python benchmarks/bench_vision.py --device cuda --models swin_b --batches 32

Random weights (speed does not depend on them), explained by :func:`palrp.explain` with the
family's default rules. The baseline is ``fwd+bwd frozen``: parameters frozen, the gradient of the
summed logits to the input only (what any gradient-based explanation needs at least), run
interleaved with the explanation round by round (a busy machine slows both alike); the time
ratio is their medians'. Peak memory: the extra memory at the peak of one call over the memory
held before it (CUDA: ``max_memory_allocated``; CPU: the peak resident set size ``VmHWM`` of a
fresh process that builds the model and runs the call once, reset through
``/proc/self/clear_refs``), and the ratio.
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os

import torch

import palrp
from bench_deit import timed_interleaved

#: name -> (library, builder name, create arguments)
MODELS = {
    "deit_tiny": ("timm", "deit_tiny_patch16_224", {}),
    "swin_t": ("timm", "swin_tiny_patch4_window7_224", {}),
    "swin_b": ("timm", "swin_base_patch4_window7_224", {}),
    "swinv2_t": ("timm", "swinv2_tiny_window8_256", {}),
    "beit_b": ("timm", "beit_base_patch16_224", {}),
    "cait_xxs24": ("timm", "cait_xxs24_224", {}),
    "tv_vit_b_16": ("torchvision", "vit_b_16", {}),
    "tv_swin_t": ("torchvision", "swin_t", {}),
    "tv_swin_v2_t": ("torchvision", "swin_v2_t", {}),
}
DEFAULT_MODELS = ["swin_t", "deit_tiny"]


def build(key: str):
    """(model in eval mode, (H, W)) with random weights."""
    library, name, overrides = MODELS[key]
    torch.manual_seed(0)
    if library == "timm":
        import timm
        model = timm.create_model(name, pretrained=False, **overrides)
        side = tuple(model.patch_embed.img_size)
    else:
        import torchvision
        model = torchvision.models.get_model(name, weights=None, **overrides)
        # the input size of the architecture's released weights (no download: metadata only)
        crop = torchvision.models.get_model_weights(name).DEFAULT.transforms().crop_size[0]
        side = (crop, crop)
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval(), side


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def calls(model, images):
    """The two measured calls: ``frozen`` (the gradient of the summed logits to the input,
    parameters frozen) and ``pa`` (the PA-LRP explanation)."""
    def frozen():
        leaf = images.detach().requires_grad_(True)
        torch.autograd.grad(model(leaf).sum(), leaf)

    def pa_lrp():
        palrp.explain(model, images, method="pa_lrp")

    return {"frozen": frozen, "pa": pa_lrp}


def _child_peak(key, batch, which, threads, queue):
    """In a fresh process: build the model, then the extra resident memory at the peak of one
    call (a fresh process: no freed memory of earlier calls for the call to reuse)."""
    torch.set_num_threads(threads)
    model, side = build(key)
    images = torch.randn(batch, 3, *side)
    fn = calls(model, images)[which]
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")                       # reset the peak resident set size
    before = _status_kib("VmRSS")
    fn()
    queue.put((_status_kib("VmHWM") - before) * 1024)


def peak_extra_bytes(key, batch, which, model, images, device) -> int:
    """Bytes one call needs at its peak beyond what is held before it (CUDA: in this process;
    CPU: in a fresh spawned process)."""
    if device.type == "cuda":
        fn = calls(model, images)[which]
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child_peak,
                            args=(key, batch, which, torch.get_num_threads(), queue))
    child.start()
    extra = queue.get()
    child.join()
    return extra


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=sorted(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cpu" and not os.path.exists("/proc/self/clear_refs"):
        raise SystemExit("error: CPU peak memory is read from /proc (Linux); use --device cuda")
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print("| model | input | batch | fwd+bwd frozen s/img | pa_lrp s/img | time ratio "
          "| fwd+bwd peak MiB | pa_lrp peak MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in args.models:
        model, side = build(key)
        model = model.to(device)
        for batch in args.batches:
            images = torch.randn(batch, 3, *side, device=device)

            medians = timed_interleaved(calls(model, images), device, args.repeats,
                                        args.warmup)
            memory = {which: peak_extra_bytes(key, batch, which, model, images, device)
                      for which in ("frozen", "pa")}
            froz, pa = medians["frozen"], medians["pa"]
            mib = {name: value / 2 ** 20 for name, value in memory.items()}
            print(f"| {key} | {side[0]}x{side[1]} | {batch} | {froz / batch:.4f} | "
                  f"{pa / batch:.4f} | {pa / froz:.2f}x | {mib['frozen']:.0f} | "
                  f"{mib['pa']:.0f} | {mib['pa'] / max(mib['frozen'], 1e-9):.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
