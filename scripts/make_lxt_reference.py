"""Make the LXT reference values of tests/test_lxt_reference.py (AttnLRP as its authors ship it).

LXT (``pip install lxt==2.1``, Achtibat et al., the authors of AttnLRP) patches transformers 4.x
modelling code, while the project runs on transformers 5, so the two cannot share an
environment. This script runs in a separate one, made once with

    python -m venv lxt-venv
    lxt-venv/bin/pip install torch==2.14.1 lxt==2.1 transformers==4.52.4
    lxt-venv/bin/python scripts/make_lxt_reference.py

(transformers 4.52.4 is the release LXT 2.1's README says it was tested with). It is never
imported by the library or by the tests. For every family that LXT's efficient AttnLRP
(``lxt.efficient.monkey_patch`` with its default map, ``lxt/efficient/models/*.py``) and the
project both cover -- Llama, Qwen2, Qwen3, Gemma 3 (text), GPT-2, BERT -- it builds a tiny
random model from a config (hidden 32, 2 layers, 4 heads, vocabulary 61; weights N(0, 0.25),
norm weights random around their identity value, so that attention is far from uniform), runs
it in float64 on the eager kernel on a batch of two sequences of 7 tokens (the second one
right-padded by 2), and explains the argmax at the explained position (a causal LM: the last
real token; BERT's classifier: its pooled first token) as LXT's README does: input embeddings
as a leaf, one backward from the target logit, ``relevance = (embeds * embeds.grad).sum(-1)``.

Each family is made in its own process: LXT patches classes globally (``torch.nn.LayerNorm``
for GPT-2 and BERT, ``torch.nn.Dropout`` for all). Written per family to
``tests/data/lxt_reference/<family>.pt`` (``torch.load(..., weights_only=True)`` reads it): the
config keywords (transformers 4.x spelling), the model class, the state dict (float32 values:
the model is built in float32, perturbed, then cast to float64), the input ids and attention
mask, the target, the stock model's logits at the explained position (float64), LXT's per-token
relevance, the versions of LXT, transformers and torch, and this command.
"""
from __future__ import annotations

import argparse
import importlib
import pathlib
import subprocess
import sys
from importlib.metadata import version

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "lxt_reference"
COMMAND = ("python -m venv lxt-venv && lxt-venv/bin/pip install torch==2.14.1 lxt==2.1 "
           "transformers==4.52.4 && lxt-venv/bin/python scripts/make_lxt_reference.py")

VOCAB, PAD, SEQ, PADDED = 61, 0, 7, 2
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=64, pad_token_id=PAD, bos_token_id=1, eos_token_id=2)
_ROPE = dict(_COMMON, intermediate_size=48, num_key_value_heads=2, tie_word_embeddings=False,
             rope_theta=10000.0)

#: family -> (transformers module, config class, model class, config keywords (4.x spelling))
FAMILIES = {
    "llama": ("llama", "LlamaConfig", "LlamaForCausalLM",
              dict(_ROPE, rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 16})),
    "qwen2": ("qwen2", "Qwen2Config", "Qwen2ForCausalLM", dict(_ROPE)),
    "qwen3": ("qwen3", "Qwen3Config", "Qwen3ForCausalLM", dict(_ROPE, head_dim=8)),
    # layer 0 sliding (window 4 < 7 tokens), layer 1 global; the two rope bases differ
    "gemma3": ("gemma3", "Gemma3TextConfig", "Gemma3ForCausalLM",
               dict(_ROPE, head_dim=8, sliding_window=4, sliding_window_pattern=2,
                    query_pre_attn_scalar=8, rope_local_base_freq=1000.0)),
    "gpt2": ("gpt2", "GPT2Config", "GPT2LMHeadModel",
             dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                  pad_token_id=PAD, bos_token_id=1, eos_token_id=2)),
    "bert": ("bert", "BertConfig", "BertForSequenceClassification",
             dict(_COMMON, intermediate_size=48, type_vocab_size=2, num_labels=3)),
}


def modelling(family: str):
    """The transformers modelling module of ``family`` (what ``monkey_patch`` patches)."""
    name = FAMILIES[family][0]
    return importlib.import_module(f"transformers.models.{name}.modeling_{name}")


def _is_norm(name: str) -> bool:
    return "norm" in name.lower() or name.split(".")[-2].startswith("ln_")


def build(family: str):
    """The tiny float32 model of ``family`` (eager attention), its weights perturbed."""
    import transformers as tf
    _, config_class, model_class, kwargs = FAMILIES[family]
    config = getattr(tf, config_class)(**kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    # from the modelling module, which LXT may have patched (BERT: its classes replaced)
    model = getattr(modelling(family), model_class)(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if _is_norm(name) and p.dim() == 1:
                if family.startswith("gemma"):        # (1 + w) RMSNorm: w around 0
                    p.copy_(0.3 * torch.randn_like(p))
                elif name.endswith("bias"):
                    p.normal_(0.0, 0.1)
                else:
                    p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.25)
    return model.eval()


def inputs():
    """Two sequences of SEQ tokens, the second right-padded by PADDED."""
    ids = torch.randint(3, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, SEQ, dtype=torch.long)
    mask[1, SEQ - PADDED:] = 0
    ids[mask == 0] = PAD
    return ids, mask


def explained_logits(output, mask):
    """(B, C): a causal LM's logits at each sample's last real token, a classifier's logits."""
    logits = output.logits
    if logits.dim() == 2:
        return logits
    last = mask.sum(-1) - 1
    return logits[torch.arange(logits.shape[0]), last]


def make(family: str) -> dict:
    import transformers as tf
    from lxt.efficient import monkey_patch

    model = build(family)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model = model.double()
    ids, mask = inputs()
    with torch.no_grad():
        stock = explained_logits(model(input_ids=ids, attention_mask=mask), mask)

    monkey_patch(modelling(family))
    if family == "bert":
        # LXT replaces the BERT modelling module's classes: a model built before the patch
        # keeps the stock attention and GELU (only the global LayerNorm patch reaches it), so
        # rebuild it from the patched classes
        model = build(family)
        model.load_state_dict(state)
        model = model.double()
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    out = explained_logits(model(inputs_embeds=embeds, attention_mask=mask), mask)
    if not torch.allclose(out, stock, atol=1e-12, rtol=0):
        raise RuntimeError(f"{family}: LXT's patched forward differs from the stock one by "
                           f"{(out - stock).abs().max():.3g}")
    target = stock.argmax(-1)
    out[torch.arange(len(target)), target].sum().backward()
    relevance = (embeds * embeds.grad).sum(-1).detach()
    return {
        "family": family,
        "config_class": FAMILIES[family][1],
        "model_class": FAMILIES[family][2],
        "config": FAMILIES[family][3],
        "state_dict": state,
        "input_ids": ids,
        "attention_mask": mask,
        "target": target,
        "logits": stock,
        "relevance": relevance,
        "dtype": "float64",
        "attn_implementation": "eager",
        "lxt_version": version("lxt"),
        "transformers_version": str(tf.__version__),
        "torch_version": str(torch.__version__),
        "command": COMMAND,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(FAMILIES),
                        help="make this family only, in this process (the default makes every "
                             "family, each in a process of its own)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.family is None:
        for family in FAMILIES:
            subprocess.run([sys.executable, __file__, "--family", family], check=True)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    record = make(args.family)
    path = OUT / f"{args.family}.pt"
    torch.save(record, path)
    rel = record["relevance"]
    print(f"{args.family}: {path.stat().st_size / 1024:.0f} KiB, target {record['target'].tolist()}, "
          f"sum R {rel.sum(-1).tolist()} vs logit "
          f"{record['logits'].gather(1, record['target'][:, None]).squeeze(1).tolist()}")


if __name__ == "__main__":
    main()
