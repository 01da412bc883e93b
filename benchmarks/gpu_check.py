#!/usr/bin/env python3
"""GPU check: CUDA vs CPU agreement of the explanations, and throughput on one GPU.

    python benchmarks/gpu_check.py --output gpu_check.json      # about 2-3 minutes on an H100/H200

No downloads: random weights. Sections (each reported even if another fails):

1. DeiT (Tiny geometry) PA-LRP maps on CUDA vs CPU, float32 with TF32 off: Pearson correlation
   per map (pixel + PE), minimum over the batch.
2. Llama (a small random config with GQA, a padded batch) PA-LRP token maps on CUDA vs CPU.
3. DeiT-Base geometry ``pa_lrp`` throughput at batch 32 (images/s), next to timm's
   forward+backward on the same batch.
4. A Llama stack of Llama-3-8B width (hidden 4096, 32 heads, 8 KV heads, MLP 14336, vocabulary
   128256) with 4 layers, bfloat16: PA-LRP and AttnLRP tokens/s at 2,048 tokens next to the
   stock forward+backward to the embeddings, and the peak memory of 512- and 2,048-token PA-LRP
   explanations.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback
from pathlib import Path

import torch


from palrp import explain_image, explain_text, load_deit


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats=5, warmup=2) -> float:
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def min_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten(1).double().cpu(), b.flatten(1).double().cpu()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    corr = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)
    return float(corr.min())


def deit_agreement(device, args) -> dict:
    import timm
    torch.manual_seed(0)
    ref = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=args.img_size)
    cpu = load_deit(ref.state_dict(), model_size="tiny")
    gpu = load_deit(ref.state_dict(), model_size="tiny").to(device)
    images = torch.randn(4, 3, args.img_size, args.img_size)
    a = explain_image(cpu, images)
    b = explain_image(gpu, images.to(device))
    sa, sb = a.streams["pixel_values"], b.streams["pixel_values"]
    return {"pixel_plus_pe_corr_min": min_correlation(sa.pixels + sa.positional_pixels(),
                                                      sb.pixels + sb.positional_pixels()),
            "pa_lrp_map_corr_min": min_correlation(a.combined(), b.combined()),
            "pe_patch_corr_min": min_correlation(sa.positional, sb.positional)}


def llama_agreement(device, args) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=688,
                      num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=4,
                      pad_token_id=0)
    cpu = LlamaForCausalLM(cfg).eval()
    gpu = LlamaForCausalLM(cfg).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(device)
    ids = torch.randint(3, 1000, (2, 96))
    mask = torch.ones_like(ids)
    mask[1, 80:] = 0                           # right padding in the second sample
    a = explain_text(cpu, ids, mask)
    b = explain_text(gpu, ids.to(device), mask.to(device))
    real = mask.bool()
    ta, tb = a.relevance["input_ids"], b.relevance["input_ids"]
    return {"tokens_corr_min": min(min_correlation(ta[i, real[i]][None], tb[i, real[i]][None])
                                   for i in range(2)),
            "pa_lrp_combined_corr_min": min(
                min_correlation(a.combined()[i, real[i]][None], b.combined()[i, real[i]][None])
                for i in range(2)),
            "same_targets": bool((a.target.cpu() == b.target.cpu()).all())}


def deit_throughput(device, args) -> dict:
    import timm
    ref = timm.create_model("deit_base_patch16_224", pretrained=False,
                            img_size=args.img_size).to(device)
    model = load_deit(ref.state_dict(), model_size="base").to(device)
    images = torch.randn(args.deit_batch, 3, args.img_size, args.img_size, device=device)

    def forward_backward():
        ref.zero_grad(set_to_none=True)
        ref(images).sum().backward()

    base = timed(forward_backward)
    pa = timed(lambda: explain_image(model, images, "pa_lrp"))
    return {"batch": args.deit_batch, "img_size": args.img_size,
            "pa_lrp_images_per_s": args.deit_batch / pa,
            "timm_fwd_bwd_images_per_s": args.deit_batch / base, "ratio": pa / base}


def llama_throughput(device, args) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                      num_attention_heads=32, num_key_value_heads=8,
                      num_hidden_layers=args.llama_layers, rope_theta=500000.0,
                      max_position_embeddings=8192, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    out = {"layers": args.llama_layers, "dtype": "bfloat16"}
    for seq in args.llama_seq_lens:
        ids = torch.randint(0, cfg.vocab_size, (1, seq), device=device)

        def stock():
            embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
            logits = model(inputs_embeds=embeds, logits_to_keep=1, use_cache=False).logits[0, -1]
            torch.autograd.grad(logits.max(), embeds)

        row = {"stock_fwd_bwd_s": timed(stock, repeats=3, warmup=1)}
        for name, pe in (("pa_lrp", True), ("attnlrp", False)):
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            row[f"{name}_s"] = timed(lambda: explain_text(model, ids, pe=pe), repeats=3, warmup=1)
            row[f"{name}_peak_gib"] = (torch.cuda.max_memory_allocated() - before) / 2**30
        row["pa_lrp_tokens_per_s"] = seq / row["pa_lrp_s"]
        row["ratio_pa_lrp_to_stock"] = row["pa_lrp_s"] / row["stock_fwd_bwd_s"]
        out[f"seq_{seq}"] = row
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--deit-batch", type=int, default=32)
    parser.add_argument("--llama-layers", type=int, default=4)
    parser.add_argument("--llama-seq-lens", type=int, nargs="+", default=[512, 2048])
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; run this on a GPU machine")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    try:
        import transformers
        report["transformers"] = transformers.__version__
    except ImportError:
        pass
    for name, fn in (("deit_cuda_vs_cpu", deit_agreement), ("llama_cuda_vs_cpu", llama_agreement),
                     ("deit_base_throughput", deit_throughput),
                     ("llama3_8b_width_throughput", llama_throughput)):
        start = time.perf_counter()
        try:
            report[name] = fn(device, args)
        except Exception as exc:  # report every section, even when one fails
            report[name] = {"error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc(limit=6)}
        report[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(name, json.dumps(report[name], indent=1), flush=True)
        torch.cuda.empty_cache()
    from palrp.runtime.store import atomic_write_json
    atomic_write_json(args.output, report)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
