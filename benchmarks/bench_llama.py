"""Cost of a Llama explanation vs. the stock model's forward + backward (issue 3, SPEC section 3).

In one process, on one random ``LlamaForCausalLM`` of TinyLlama's width (hidden 2048,
intermediate 5632, 32 heads, 4 KV heads, vocabulary 32000) with few layers, for each sequence
length, with and without gradient checkpointing:

- ``stock``: the unpatched model (its default attention, ``sdpa``), forward with the input
  embeddings as the leaf, the logits at the last position only, backward of the argmax logit to
  the embeddings (``torch.autograd.grad``: no weight gradients); with checkpointing it is
  transformers' own (non-reentrant) activation checkpointing;
- ``stock-eager``: the same with the eager attention path (the one the explanation uses);
- ``attnlrp`` / ``pa-lrp``: :func:`modules.explain_text` with ``pe=False`` / ``pe=True``.

Times are the best of ``--repeats`` runs after one warm-up (the minimum is the estimate least
disturbed by other work on a shared machine), the methods interleaved so that a busy machine
slows them alike. Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above
what was allocated before the run; on CPU the peak resident set size above the resident size
before the run (Linux ``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs``;
"n/a" where the kernel offers no reset). Prints a Markdown table with the ratios to ``stock``
and writes the rows as JSON.

    python benchmarks/bench_llama.py --device cpu --layers 2 --seq-lens 128 512
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import config  # noqa: E402
from modules import explain_text  # noqa: E402

METHODS = ("stock", "stock-eager", "attnlrp", "pa-lrp")


def tinyllama_width_config(layers: int, vocab: int) -> LlamaConfig:
    """TinyLlama-1.1B's width (its config.json), with ``layers`` decoder layers."""
    return LlamaConfig(vocab_size=vocab, hidden_size=2048, intermediate_size=5632,
                       num_attention_heads=32, num_key_value_heads=4, num_hidden_layers=layers,
                       max_position_embeddings=2048, rms_norm_eps=1e-5, pad_token_id=0)


def set_checkpointing(model, enabled: bool) -> None:
    """transformers' activation checkpointing (non-reentrant) on or off for the stock runs."""
    if enabled:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        disable = getattr(model, "activation_checkpointing_disable", None)
        (disable or model.gradient_checkpointing_disable)()


def stock_step(model, ids, attn: str, checkpointing: bool):
    """Stock forward + backward of the argmax logit at the last position to the embeddings.
    transformers checkpoints in training mode only; Llama has no dropout at its default
    settings, so training mode changes no number."""
    previous = model.config._attn_implementation
    model.config._attn_implementation = attn
    model.train(checkpointing)
    try:
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1).logits[:, -1]
        score = logits.max(dim=-1).values.sum()
        (grad,) = torch.autograd.grad(score, embeds)
        return grad
    finally:
        model.eval()
        model.config._attn_implementation = previous


def run(method: str, model, ids, checkpointing: bool):
    if method == "stock":
        return stock_step(model, ids, "sdpa", checkpointing)
    if method == "stock-eager":
        return stock_step(model, ids, "eager", checkpointing)
    return explain_text(model, ids, pe=(method == "pa-lrp"),
                        gradient_checkpointing=checkpointing)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of one call above the memory in use before it, in MiB (or None)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu_reset = self._can_reset_rss() if device.type == "cpu" else False
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

    def measure(self, fn) -> float | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            fn()
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - before) / 2 ** 20
        if not self.cpu_reset:
            fn()
            return None
        if self._libc is not None:
            self._libc.malloc_trim(0)  # hand freed heap back so the baseline is the live set
        before = self._status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        fn()
        return (self._status_kib("VmHWM") - before) / 1024


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--layers", type=int, default=2, help="decoder layers (default 2)")
    p.add_argument("--seq-lens", type=int, nargs="+", default=[128, 512])
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--vocab-size", type=int, default=32000, help="TinyLlama's is 32000")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method (best of)")
    p.add_argument("--no-checkpointing-runs", action="store_true",
                   help="skip the runs with gradient checkpointing")
    p.add_argument("--output", type=Path, default=config.OUTPUT_DIR / "bench_llama.json")
    p.add_argument("--seed", type=int, default=config.SEED)
    args = p.parse_args(argv)
    try:
        args.device = torch.device(args.device)
    except RuntimeError as exc:
        raise SystemExit(f"error: unknown device {args.device!r} ({exc}); use cpu or cuda")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but no CUDA device is visible; "
                         "use --device cpu")
    for name in ("layers", "batch_size", "repeats", "vocab_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1")
    if min(args.seq_lens) < 1:
        raise SystemExit("error: --seq-lens must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    cfg = tinyllama_width_config(args.layers, args.vocab_size)
    if max(args.seq_lens) > cfg.max_position_embeddings:
        cfg.max_position_embeddings = max(args.seq_lens)
    model = LlamaForCausalLM(cfg).to(device=args.device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # no weight gradients anywhere (explanations need none)
    memory = PeakMemory(args.device)
    checkpoint_modes = (False,) if args.no_checkpointing_runs else (False, True)
    jobs = [(s, c) for s in args.seq_lens for c in checkpoint_modes]
    rows = []
    for seq_len, ckpt in tqdm(jobs, desc="configurations"):
        ids = torch.randint(1, cfg.vocab_size, (args.batch_size, seq_len), device=args.device)
        set_checkpointing(model, ckpt)
        times = {m: [] for m in METHODS}
        for repeat in range(args.repeats + 1):  # first round is the warm-up
            for method in METHODS:
                synchronize(args.device)
                start = time.perf_counter()
                run(method, model, ids, ckpt)
                synchronize(args.device)
                if repeat:
                    times[method].append(time.perf_counter() - start)
        peaks = {m: memory.measure(lambda m=m: run(m, model, ids, ckpt)) for m in METHODS}
        base_t, base_m = min(times["stock"]), peaks["stock"]
        for method in METHODS:
            t = min(times[method])
            peak = peaks[method]
            rows.append(dict(seq_len=seq_len, checkpointing=ckpt, method=method, time_s=t,
                             time_ratio=t / base_t, peak_mib=peak,
                             mem_ratio=(peak / base_m) if peak is not None and base_m else None))
    device_name = (torch.cuda.get_device_name(args.device) if args.device.type == "cuda"
                   else f"CPU ({os.cpu_count()} cores visible, {torch.get_num_threads()} threads)")
    mem_note = ("torch.cuda.max_memory_allocated above the pre-run allocation"
                if args.device.type == "cuda" else
                "peak RSS above the pre-run RSS (VmHWM)" if memory.cpu_reset else
                "n/a: this kernel cannot reset the peak RSS")
    print(f"\nLlama of TinyLlama width, {args.layers} layers, batch {args.batch_size}, "
          f"{args.dtype}, {device_name}; peak memory: {mem_note}\n")
    print("| seq len | checkpointing | method | time (s) | x stock | peak (MiB) | x stock |")
    print("|---:|:---:|:---|---:|---:|---:|---:|")
    for r in rows:
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        mem_ratio = "n/a" if r["mem_ratio"] is None else f"{r['mem_ratio']:.2f}"
        print(f"| {r['seq_len']} | {'yes' if r['checkpointing'] else 'no'} | {r['method']} | "
              f"{r['time_s']:.3f} | {r['time_ratio']:.2f} | {peak} | {mem_ratio} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(args.output.suffix + ".tmp")
    tmp.write_text(json.dumps(dict(device=device_name, dtype=args.dtype, layers=args.layers,
                                   batch_size=args.batch_size, memory=mem_note, rows=rows),
                              indent=2))
    os.replace(tmp, args.output)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
