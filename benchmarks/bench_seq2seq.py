"""Cost of an encoder-decoder explanation against the stock model's forward + backward (issue 20).

bench_llama.py's method (same process, best of ``--repeats`` after one warm-up round, methods
interleaved with a rotating order, peak memory above the memory before each call) on one random
T5 at t5-small's width (d_model 512, d_ff 2048, 8 heads of 64, vocabulary 32128) with few
layers, for each encoder length, with a decoder prefix of ``--decoder-len`` tokens:

- ``stock``: the unpatched model on the benchmark's attention kernel (default ``sdpa``), forward
  with the encoder's and the decoder's input embeddings as leaves, backward of the argmax logit
  at the last decoder position to both (``torch.autograd.grad``: no weight gradients);
- ``attnlrp`` / ``pa-lrp``: ``palrp.explain(model, {"input_ids", "decoder_input_ids"},
  method="attn_lrp" / "pa_lrp")`` on the same model and kernel: the next decoder token over
  both streams, the relative-position biases the positional leaves under PA-LRP.

T5 has no ``logits_to_keep``: both the stock run and the explanation compute the logits of every
decoder position and read the last one.

    OMP_NUM_THREADS=1 python benchmarks/bench_seq2seq.py                 # CPU, 256/1024/2048
    python benchmarks/bench_seq2seq.py --device cuda --seq-lens 2048 8192 --layers 6
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration

import palrp
from bench_llama import PeakMemory, _mib, check_common_args, load_line
from palrp import config
from palrp.runtime.cli import random_seed
from palrp.runtime.store import atomic_write_json

METHODS = ("stock", "attnlrp", "pa-lrp")
#: t5-small's width (its config.json), with --layers encoder and decoder layers.
WIDTH = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_heads=8,
             relative_attention_num_buckets=32, relative_attention_max_distance=128,
             pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def build_model(layers: int, gated: bool, attn: str, device, dtype):
    cfg = T5Config(num_layers=layers, num_decoder_layers=layers,
                   feed_forward_proj="gated-gelu" if gated else "relu", **WIDTH)
    cfg._attn_implementation = attn
    model = T5ForConditionalGeneration(cfg).to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def stock_step(model, ids, decoder_ids):
    """Stock forward + backward of the argmax logit at the last decoder position to both
    input embeddings."""
    embeds = model.get_encoder().get_input_embeddings()(ids).detach().requires_grad_(True)
    decoder_embeds = model.get_decoder().get_input_embeddings()(decoder_ids).detach()
    decoder_embeds.requires_grad_(True)
    logits = model(inputs_embeds=embeds, decoder_inputs_embeds=decoder_embeds,
                   use_cache=False).logits[:, -1]
    score = logits.max(dim=-1).values.sum()
    return torch.autograd.grad(score, (embeds, decoder_embeds))


def run(method: str, model, ids, decoder_ids):
    if method == "stock":
        return stock_step(model, ids, decoder_ids)
    return palrp.explain(model, {"input_ids": ids, "decoder_input_ids": decoder_ids},
                         method="pa_lrp" if method == "pa-lrp" else "attn_lrp")


def measure(model, ids, decoder_ids, repeats: int, memory: PeakMemory) -> dict:
    best = {m: [float("inf"), None] for m in METHODS}
    for round_ in range(repeats + 1):  # round 0 is the warm-up
        shift = round_ % len(METHODS)
        for method in METHODS[shift:] + METHODS[:shift]:
            seconds, peak = memory.timed(lambda m=method: run(m, model, ids, decoder_ids))
            if round_ == 0:
                continue
            best[method][0] = min(best[method][0], seconds)
            if peak is not None:
                best[method][1] = peak if best[method][1] is None else min(best[method][1], peak)
    return best


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--attn", default="sdpa", help="attention kernel: sdpa or eager [sdpa]")
    p.add_argument("--layers", type=int, default=2, help="encoder and decoder layers [2]")
    p.add_argument("--gated", action="store_true",
                   help="the gated-GELU feed-forward of T5 v1.1 / Flan-T5 (default: ReLU)")
    p.add_argument("--seq-lens", type=int, nargs="+", default=[256, 1024, 2048],
                   help="encoder lengths [256 1024 2048]")
    p.add_argument("--decoder-len", type=int, default=64, help="decoder prefix length [64]")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (best of) [3]")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--output", type=Path, default=config.OUTPUT_DIR / "bench_seq2seq.json")
    p.add_argument("--seed", type=random_seed, default=config.SEED)
    args = p.parse_args(argv)
    check_common_args(args, ("layers", "batch_size", "repeats", "decoder_len"))
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
    torch.manual_seed(args.seed)
    model = build_model(args.layers, args.gated, args.attn, args.device, dtype)
    rows = []
    for seq_len in args.seq_lens:
        ids = torch.randint(2, WIDTH["vocab_size"], (args.batch_size, seq_len),
                            device=args.device)
        decoder_ids = torch.randint(2, WIDTH["vocab_size"], (args.batch_size, args.decoder_len),
                                    device=args.device)
        best = measure(model, ids, decoder_ids, args.repeats, memory)
        base_t, base_m = best["stock"]
        for method in METHODS:
            t, peak = best[method]
            rows.append(dict(seq_len=seq_len, decoder_len=args.decoder_len, method=method,
                             time_s=t, time_ratio=t / base_t, peak_mib=peak,
                             mem_ratio=(peak / base_m) if peak is not None and base_m
                             else None))
        print(f"t5 {seq_len}+{args.decoder_len}: " + ", ".join(
            f"{r['method']} {r['time_s']:.3f} s ({r['time_ratio']:.2f}x), "
            f"{_mib(r['peak_mib'])} MiB" for r in rows[-len(METHODS):]), flush=True)
    load_after = load_line()
    header = (f"T5 at t5-small width (d_model 512, 8 heads of 64, d_ff 2048, "
              f"{'gated GELU' if args.gated else 'ReLU'}), {args.layers} encoder + "
              f"{args.layers} decoder layers, decoder prefix {args.decoder_len}, batch "
              f"{args.batch_size}, {args.dtype}, {args.attn}, {device_name}; best of "
              f"{args.repeats}; peak memory: {memory.note()}; {load_before} before, "
              f"{load_after} after")
    print(f"\n{header}\n")
    print("| encoder len | method | time (s) | x stock | peak (MiB) | x stock |")
    print("|---:|:---|---:|---:|---:|---:|")
    for r in rows:
        ratio = "n/a" if r["mem_ratio"] is None else f"{r['mem_ratio']:.2f}"
        print(f"| {r['seq_len']} | {r['method']} | {r['time_s']:.3f} | {r['time_ratio']:.2f} | "
              f"{_mib(r['peak_mib'])} | {ratio} |")
    atomic_write_json(args.output, dict(setup=header, rows=rows))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
