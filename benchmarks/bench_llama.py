"""Cost of a text explanation against the stock model's forward + backward (issue 12).

In one process, for each family (default: Llama at TinyLlama-1.1B's width, and Qwen3 at the
same width; also Mixtral, a mixture of experts at a quarter of that width, and BLOOM, ALiBi, at
half of it, eager), on one random causal LM with few layers, for each sequence length:

- ``stock``: the unpatched model on the benchmark's attention kernel (default ``sdpa``),
  forward with the input embeddings as the leaf and the logits of the last position only
  (``logits_to_keep`` where the head has it), backward of the argmax logit to the embeddings
  (``torch.autograd.grad``: no weight gradients);
- ``attnlrp`` / ``pa-lrp``: :func:`palrp.modules.explain_text` with ``pe=False`` / ``pe=True`` on the
  same model and kernel (the engine wraps the stock kernel).

Times are the best of ``--repeats`` runs after one warm-up round; the methods are interleaved
and their order rotates every round, so a busy machine slows them alike. Peak memory is
measured on every timed call and the smallest is kept: on CUDA ``torch.cuda.max_memory_allocated``
above the allocation before the call; on CPU the peak resident set size above the resident
size before the call (Linux ``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs``
after ``malloc_trim`` hands freed heap back; "n/a" where the kernel offers no reset). This
counts every page the call touches (tensors, allocator slack, temporary buffers of the
kernels), for the stock run and the explanation alike. Prints one Markdown table per family
with the ratios to ``stock`` and writes the rows as JSON.

    OMP_NUM_THREADS=1 python benchmarks/bench_llama.py                  # CPU, 512/2048/4096
    python benchmarks/bench_llama.py --device cuda --dtype bfloat16 --seq-lens 2048 8192
    python benchmarks/bench_llama.py --families qwen3 --seq-lens 2048 --profile pa-lrp

``--profile METHOD`` also prints torch.profiler's operator table (self CPU/CUDA time and
memory) of one call of METHOD at the first length, to see where the time and memory go.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import time
from pathlib import Path


import torch
from transformers import (BloomConfig, BloomForCausalLM, LlamaConfig, LlamaForCausalLM,
                          MixtralConfig, MixtralForCausalLM, Qwen3Config, Qwen3ForCausalLM)

from palrp import config
from palrp.runtime.cli import random_seed
from palrp.modules import explain_text
from palrp.runtime.store import atomic_write_json

METHODS = ("stock", "attnlrp", "pa-lrp")

#: TinyLlama-1.1B's width (its config.json); Qwen3 at the same width (head_dim 64, q/k norms).
WIDTH = dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=32,
             num_key_value_heads=4, rms_norm_eps=1e-5, pad_token_id=0,
             tie_word_embeddings=False)
#: A mixture of experts at a quarter of that width (8 experts, 2 per token: the experts'
#: weights of a full-width layer would not fit a small CPU machine), and BLOOM (ALiBi; its
#: config's names for the width, a 4 x hidden MLP).
SMALL_MOE = dict(hidden_size=512, intermediate_size=1408, num_attention_heads=8,
                 num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2,
                 rms_norm_eps=1e-5, pad_token_id=0, tie_word_embeddings=False)
BLOOM_WIDTH = dict(hidden_size=1024, n_head=16, pad_token_id=0, tie_word_embeddings=False)
#: family -> (config class, model class, config kwargs, the kernel it runs: None = --attn)
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, WIDTH, None),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {**WIDTH, "head_dim": 64}, None),
    "mixtral": (MixtralConfig, MixtralForCausalLM, SMALL_MOE, None),
    "bloom": (BloomConfig, BloomForCausalLM, BLOOM_WIDTH, "eager"),   # transformers: eager only
}


def build_model(family: str, layers: int, vocab: int, max_len: int, attn: str, device, dtype):
    cfg_cls, model_cls, width, kernel = FAMILIES[family]
    cfg = cfg_cls(vocab_size=vocab, num_hidden_layers=layers,
                  max_position_embeddings=max(max_len, 2048), **width)
    cfg._attn_implementation = kernel or attn
    model = model_cls(cfg).to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # no weight gradients anywhere (explanations need none)
    return model


def stock_step(model, ids):
    """Stock forward + backward of the argmax logit at the last position to the embeddings."""
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    from palrp.modules.adapters.transformers import logits_to_keep_kwargs
    last = torch.tensor([ids.shape[1] - 1], device=ids.device)
    logits = model(inputs_embeds=embeds, use_cache=False,
                   **logits_to_keep_kwargs(model, last)).logits[:, -1]
    score = logits.max(dim=-1).values.sum()
    (grad,) = torch.autograd.grad(score, embeds)
    return grad


def run(method: str, model, ids, checkpointing: bool):
    if method == "stock":
        return stock_step(model, ids)
    return explain_text(model, ids, pe=(method == "pa-lrp"),
                        gradient_checkpointing=checkpointing)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of one call above the memory in use before it, in MiB (None: unknown)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu_reset = device.type == "cpu" and self._can_reset_rss()
        self._libc = None
        if self.cpu_reset:
            try:
                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self._libc = None

    @staticmethod
    def _can_reset_rss() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return "VmHWM" in open("/proc/self/status").read()
        except OSError:
            return False

    @staticmethod
    def _status_kib(key: str) -> int:
        text = open("/proc/self/status").read()
        return int(re.search(rf"{key}:\s+(\d+)", text).group(1))

    def note(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated above the allocation before the call"
        if self.cpu_reset:
            return "peak RSS (VmHWM) above the RSS before the call, after malloc_trim"
        return "n/a: this kernel cannot reset the peak RSS"

    def timed(self, fn) -> tuple[float, float | None]:
        """(seconds, peak MiB) of one call; the memory bookkeeping is outside the timing."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.cpu_reset:
            if self._libc is not None:
                self._libc.malloc_trim(0)
            before = self._status_kib("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        start = time.perf_counter()
        fn()
        synchronize(self.device)
        seconds = time.perf_counter() - start
        if self.device.type == "cuda":
            return seconds, (torch.cuda.max_memory_allocated(self.device) - before) / 2 ** 20
        if self.cpu_reset:
            return seconds, (self._status_kib("VmHWM") - before) / 1024
        return seconds, None


def measure(model, ids, repeats: int, checkpointing: bool, memory: PeakMemory) -> dict:
    """Best-of-``repeats`` time and peak per method, interleaved with a rotating order."""
    best = {m: [float("inf"), None] for m in METHODS}
    for round_ in range(repeats + 1):  # round 0 is the warm-up
        shift = round_ % len(METHODS)
        for method in METHODS[shift:] + METHODS[:shift]:
            seconds, peak = memory.timed(lambda m=method: run(m, model, ids, checkpointing))
            if round_ == 0:
                continue
            best[method][0] = min(best[method][0], seconds)
            if peak is not None:
                best[method][1] = peak if best[method][1] is None else min(best[method][1], peak)
    return best


def profile(model, ids, method: str, checkpointing: bool, device) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    run(method, model, ids, checkpointing)  # warm-up
    with torch_profile(activities=activities, profile_memory=True, record_shapes=True) as prof:
        run(method, model, ids, checkpointing)
        synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\nprofile of {method} at {ids.shape[1]} tokens, by {key}:")
    print(prof.key_averages().table(sort_by=key, row_limit=20))
    print(f"profile of {method}, by self CPU memory:")
    print(prof.key_averages().table(sort_by="self_cpu_memory_usage", row_limit=12))


def _mib(value) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def load_line() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average n/a"
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def check_common_args(args, positive: tuple[str, ...]) -> None:
    """The checks every text benchmark's arguments share: ``args.device`` made a usable
    ``torch.device``, the ``positive`` integer options and ``--seq-lens`` at least 1; a bad one
    exits with one line."""
    try:
        args.device = torch.device(args.device)
    except RuntimeError as exc:
        raise SystemExit(f"error: unknown device {args.device!r} ({exc}); use cpu or cuda")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but no CUDA device is visible; "
                         "use --device cpu")
    for name in positive:
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1")
    if min(args.seq_lens) < 1:
        raise SystemExit("error: --seq-lens must be positive")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=["llama", "qwen3"])
    p.add_argument("--attn", default="sdpa",
                   help="attention kernel of both the stock run and the engine: sdpa, eager, "
                        "flash_attention_2 (when installed) [sdpa]")
    p.add_argument("--layers", type=int, default=2, help="decoder layers [2]")
    p.add_argument("--seq-lens", type=int, nargs="+", default=[512, 2048, 4096])
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--vocab-size", type=int, default=32000, help="TinyLlama's is 32000")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (best of) [3]")
    p.add_argument("--checkpointing", action="store_true",
                   help="explanations with gradient checkpointing (the stock run without)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's; OMP_NUM_THREADS=1 for one)")
    p.add_argument("--profile", choices=METHODS, default=None,
                   help="also print torch.profiler's table for one call of this method")
    p.add_argument("--output", type=Path, default=config.OUTPUT_DIR / "bench_llama.json")
    p.add_argument("--seed", type=random_seed, default=config.SEED)
    args = p.parse_args(argv)
    check_common_args(args, ("layers", "batch_size", "repeats", "vocab_size"))
    if args.threads is not None and args.threads < 1:
        raise SystemExit("error: --threads must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    memory = PeakMemory(args.device)
    device_name = (torch.cuda.get_device_name(args.device) if args.device.type == "cuda"
                   else f"CPU, {torch.get_num_threads()} torch thread(s)")
    load_before = load_line()
    rows = []
    for family in args.families:
        torch.manual_seed(args.seed)
        model = build_model(family, args.layers, args.vocab_size, max(args.seq_lens), args.attn,
                            args.device, dtype)
        for seq_len in args.seq_lens:
            ids = torch.randint(1, args.vocab_size, (args.batch_size, seq_len),
                                device=args.device)
            best = measure(model, ids, args.repeats, args.checkpointing, memory)
            base_t, base_m = best["stock"]
            for method in METHODS:
                t, peak = best[method]
                rows.append(dict(family=family, seq_len=seq_len, method=method, time_s=t,
                                 time_ratio=t / base_t, peak_mib=peak,
                                 mem_ratio=(peak / base_m) if peak is not None and base_m
                                 else None))
            print(f"{family} {seq_len}: " + ", ".join(
                f"{r['method']} {r['time_s']:.3f} s ({r['time_ratio']:.2f}x), "
                f"{_mib(r['peak_mib'])} MiB" for r in rows[-len(METHODS):]), flush=True)
            if args.profile and seq_len == args.seq_lens[0]:
                profile(model, ids, args.profile, args.checkpointing, args.device)
        del model
    load_after = load_line()
    widths = "; ".join(f"{f}: " + ", ".join(f"{k} {v}" for k, v in FAMILIES[f][2].items()
                                             if k not in ("pad_token_id", "tie_word_embeddings"))
                       + (f", {FAMILIES[f][3]} kernel" if FAMILIES[f][3] else "")
                       for f in args.families)
    header = (f"{args.layers} layers ({widths}), batch {args.batch_size}, {args.dtype}, "
              f"{args.attn}, "
              f"{device_name}{', explanations with checkpointing' if args.checkpointing else ''};"
              f" best of {args.repeats}; peak memory: {memory.note()}; {load_before} before, "
              f"{load_after} after")
    print(f"\n{header}")
    for family in args.families:
        print(f"\n{family}\n")
        print("| seq len | method | time (s) | x stock | peak (MiB) | x stock |")
        print("|---:|:---|---:|---:|---:|---:|")
        for r in (r for r in rows if r["family"] == family):
            peak = _mib(r["peak_mib"])
            ratio = "n/a" if r["mem_ratio"] is None else f"{r['mem_ratio']:.2f}"
            print(f"| {r['seq_len']} | {r['method']} | {r['time_s']:.3f} | "
                  f"{r['time_ratio']:.2f} | {peak} | {ratio} |")
    atomic_write_json(args.output, dict(setup=header, rows=rows))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
