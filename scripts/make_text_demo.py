"""Build the embedded text default into ``palrp/assets/text/`` (docs/protocols.md, section 6), deterministically.

Writes, from :mod:`palrp.data.text_procedural`:
- ``imdb.csv``: IMDB-style reviews in the Kaggle CSV layout (``review``, ``sentiment``);
- ``arc_easy.jsonl``: held-out ARC-style items (``allenai/ai2_arc`` schema), none of which is in
  the LM's training text;
- ``wiki.jsonl``: Wikipedia-style articles (``id``, ``title``, ``text``, ``next_word``) not in the
  training text, each cut just before a fact word (the next token the LM should predict);
- ``lm/``: a word-level tokenizer (``tokenizers`` library; ``<unk>``, ``<s>``, ``</s>``, ``<pad>``)
  and a small ``LlamaForCausalLM`` (grouped-query attention) trained on the procedural corpus
  (articles, ARC-style items in the prompt of docs/protocols.md, section 4 followed by their answer letter and
  answer text, and the training reviews), saved with ``save_pretrained`` (safetensors);
- ``classifier/``: ``LlamaForSequenceClassification`` fine-tuned from ``lm/`` on ``imdb.csv`` by
  ``NLP/main_imdb.py``'s code path;
- ``manifest.json``: seeds, sizes and the measured accuracies.

Usage: ``OMP_NUM_THREADS=1 python scripts/make_text_demo.py`` (about 20 minutes on 2 shared CPU
cores: the LM about 16, the classifier about 3; one thread each is faster when cores are shared).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path


from palrp import config
from palrp.data import text_data, text_procedural as tp
from palrp.runtime.cli import random_seed
from palrp.runtime.store import atomic_write_json, atomic_write_text

IMDB_ROWS = 3000
ARC_TRAIN_ITEMS = 6000
ARC_HELD_OUT_ITEMS = 300
WIKI_TRAIN_ARTICLES = 1200
WIKI_HELD_OUT_ARTICLES = 200
LM_REVIEWS = 1200
LM_CONFIG = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=192, max_position_embeddings=1024, rope_theta=10000.0,
                 tie_word_embeddings=True, rms_norm_eps=1e-5)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def build_data(out: Path, seed: int) -> dict:
    """Write the three data files; return the LM training texts (never the held-out ones)."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    rows = tp.imdb_rows(IMDB_ROWS, seed)
    atomic_write_text(out / "imdb.csv",
                      pd.DataFrame(rows, columns=["review", "sentiment"]).to_csv(index=False))
    held_arc = tp.arc_items(ARC_HELD_OUT_ITEMS, seed + 1, held_out=True)
    _write_jsonl(out / "arc_easy.jsonl", held_arc)
    held_wiki = tp.wiki_articles(WIKI_HELD_OUT_ARTICLES, seed + 2, cut=True)
    _write_jsonl(out / "wiki.jsonl", held_wiki)

    reviews, sentiments = text_data.load_imdb_csv(out / "imdb.csv")
    train_reviews = text_data.imdb_split(reviews, sentiments, None, None)["train"][0]
    train_arc = tp.arc_items(ARC_TRAIN_ITEMS, seed + 3, held_out=False)
    answers = [it["choices"]["text"][it["choices"]["label"].index(it["answerKey"])]
               for it in train_arc]
    return {
        "arc_prompts": [text_data.arc_prompt(it) for it in train_arc],
        "arc": [f"{text_data.arc_prompt(it)} {it['answerKey']}. {a}"
                for it, a in zip(train_arc, answers)],
        "wiki": [a["text"] for a in tp.wiki_articles(WIKI_TRAIN_ARTICLES, seed + 4)],
        "reviews": train_reviews[:LM_REVIEWS],
        "held_out_arc": held_arc,
        "held_out_wiki": held_wiki,
        "all_texts": reviews + [text_data.arc_prompt(it) for it in held_arc]
                     + [a["text"] for a in held_wiki],
    }


def _pad(seqs: list[list[int]], pad_id: int):
    import torch

    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask


def arc_accuracy(model, tokenizer, items: list[dict], batch_size: int = 64) -> dict:
    """Accuracy on ARC-style items: argmax over the A-D letter tokens at the last position of the
    prompt of docs/protocols.md, section 4 (``letters``), and argmax over the whole vocabulary (``vocab``)."""
    import torch

    letter_ids = tokenizer.convert_tokens_to_ids(list(text_data.ARC_LETTERS))
    hits_letters = hits_vocab = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            seqs = [tokenizer(text_data.arc_prompt(it))["input_ids"] for it in chunk]
            ids, mask = _pad(seqs, tokenizer.pad_token_id)
            logits = model(input_ids=ids, attention_mask=mask).logits
            last = logits[torch.arange(len(chunk)), mask.sum(1) - 1]
            for it, row in zip(chunk, last):
                gold = text_data.ARC_LETTERS.index(it["answerKey"])
                hits_letters += int(row[letter_ids].argmax()) == gold
                hits_vocab += int(row.argmax()) == letter_ids[gold]
    return {"letters": hits_letters / len(items), "vocab": hits_vocab / len(items)}


def next_word_accuracy(model, tokenizer, articles: list[dict]) -> float:
    """How often the LM's argmax next token after a cut article is its ``next_word``."""
    import torch

    hits = 0
    model.eval()
    with torch.no_grad():
        for a in articles:
            ids = torch.tensor([tokenizer(a["text"])["input_ids"]])
            predicted = int(model(input_ids=ids).logits[0, -1].argmax())
            hits += tokenizer.convert_ids_to_tokens(predicted) == a["next_word"]
    return hits / len(articles)


def train_lm(corpus: dict, tokenizer, seed: int, steps: int, lr: float, answer_weight: float,
             mix: tuple[int, int, int] = (32, 8, 4), probe_every: int = 500):
    """Train a small LlamaForCausalLM on the corpus: next-token loss on every real token, each
    step a batch of ``mix`` = (ARC-style items, articles, reviews) drawn at random; the answer
    letter of an item weighs ``answer_weight`` tokens (its continuation ". <answer text>" ties
    the letter to its choice, which helps the small model learn to bind letters to choices)."""
    import torch
    from tqdm import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM, get_cosine_schedule_with_warmup

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      **LM_CONFIG)
    model = LlamaForCausalLM(cfg)
    eos = tokenizer.eos_token_id
    pools = [[tokenizer(t)["input_ids"] + [eos] for t in corpus[k]]
             for k in ("arc", "wiki", "reviews")]
    # position whose next token is the answer letter: the last token of the prompt
    answer_at = [len(tokenizer(p)["input_ids"]) - 1 for p in corpus["arc_prompts"]]
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = get_cosine_schedule_with_warmup(opt, min(200, steps // 10), steps)
    probe = tp.arc_items(200, seed + 5, held_out=True)
    history, running = [], 0.0
    model.train()
    bar = tqdm(range(steps), desc="LM")
    for step in bar:
        picks = [(k, rng.randrange(len(pools[k]))) for k, n in enumerate(mix) for _ in range(n)]
        ids, mask = _pad([pools[k][i] for k, i in picks], tokenizer.pad_token_id)
        weight = mask[:, 1:].float()
        for row, (k, i) in enumerate(picks):
            if k == 0:
                weight[row, answer_at[i]] = answer_weight
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        token_loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
        loss = (token_loss * weight.reshape(-1)).sum() / weight.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running += loss.item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % probe_every == 0 or step + 1 == steps:
            acc = arc_accuracy(model, tokenizer, probe)["letters"]
            model.train()
            n = probe_every if (step + 1) % probe_every == 0 else (step + 1) % probe_every
            history.append({"step": step + 1, "loss": round(running / n, 4), "probe_arc": acc})
            tqdm.write(f"LM step {step + 1}: loss {running / n:.4f}, held-out ARC probe {acc:.3f}")
            running = 0.0
    return model, history


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=config.DEMO_TEXT_DIR,
                   help="folder to write (default: config.DEMO_TEXT_DIR)")
    p.add_argument("--seed", type=random_seed, default=config.SEED)
    p.add_argument("--lm-steps", type=int, default=3000, help="LM optimiser steps [3000]")
    p.add_argument("--lm-lr", type=float, default=2e-3, help="LM peak learning rate [2e-3]")
    p.add_argument("--answer-weight", type=float, default=10.0,
                   help="loss weight of the answer letter of a training item [10]")
    p.add_argument("--classifier-args", nargs=argparse.REMAINDER, default=["--lr", "2e-3"],
                   help="options passed on to NLP/main_imdb.py for the classifier (last option)")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    out = args.out
    t0 = time.time()
    corpus = build_data(out, args.seed)
    tokenizer = tp.build_word_tokenizer(corpus["all_texts"] + corpus["arc"] + corpus["wiki"],
                                        LM_CONFIG["max_position_embeddings"])
    model, history = train_lm(corpus, tokenizer, args.seed, args.lm_steps, args.lm_lr,
                              args.answer_weight)
    lm_dir = out / "lm"
    if lm_dir.exists():
        shutil.rmtree(lm_dir)
    model.save_pretrained(lm_dir)
    tp.save_tokenizer(tokenizer, lm_dir)
    lm_seconds = time.time() - t0

    # Measure on the saved files, as users will load them.
    model = LlamaForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    acc = arc_accuracy(model, tokenizer, corpus["held_out_arc"])
    wiki_acc = next_word_accuracy(model, tokenizer, corpus["held_out_wiki"])
    print(f"LM held-out ARC accuracy: {acc['letters']:.4f} (argmax over A-D), "
          f"{acc['vocab']:.4f} (argmax over the vocabulary); chance 0.25; held-out article "
          f"next-word accuracy {wiki_acc:.4f}; {lm_seconds:.0f} s", flush=True)
    manifest = {
        "seed": args.seed,
        "files": {"imdb.csv": IMDB_ROWS, "arc_easy.jsonl": ARC_HELD_OUT_ITEMS,
                  "wiki.jsonl": WIKI_HELD_OUT_ARTICLES},
        "lm": {"config": LM_CONFIG, "vocab_size": len(tokenizer),
               "parameters": sum(p.numel() for p in model.parameters()),
               "training_texts": {k: len(corpus[k]) for k in ("arc", "wiki", "reviews")},
               "steps": args.lm_steps, "lr": args.lm_lr, "answer_weight": args.answer_weight,
               "probes": history, "held_out_arc_accuracy": acc,
               "held_out_wiki_next_word_accuracy": wiki_acc,
               "train_seconds": round(lm_seconds, 1)},
    }
    manifest["classifier"] = build_classifier(out, args.classifier_args)
    atomic_write_json(out / "manifest.json", manifest)


def build_classifier(out: Path, extra: list[str]) -> dict:
    """Fine-tune ``out/lm`` on ``out/imdb.csv`` with ``NLP/main_imdb.py``'s code and defaults (plus
    ``extra`` options) and keep its best checkpoint as ``out/classifier``."""
    from NLP import main_imdb

    run_dir = out / "classifier_run"
    argv = ["--model-path", str(out / "lm"), "--data-path", str(out / "imdb.csv"),
            "--output-dir", str(run_dir), *extra]
    t0 = time.time()
    metrics = main_imdb.main(argv)
    seconds = time.time() - t0
    if (out / "classifier").exists():
        shutil.rmtree(out / "classifier")
    shutil.copytree(run_dir / "best", out / "classifier")
    shutil.rmtree(run_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the LM's tokenizer, as built
        shutil.copyfile(out / "lm" / name, out / "classifier" / name)
    print(f"classifier test accuracy {metrics['best_accuracy']:.4f} (epoch "
          f"{metrics['best_epoch']}), {seconds:.0f} s", flush=True)
    return {"command": "python NLP/main_imdb.py --model-size demo " + " ".join(extra),
            "test_accuracy": metrics["best_accuracy"], "best_epoch": metrics["best_epoch"],
            "test_samples": metrics["test_samples"], "train_samples": metrics["train_samples"],
            "epochs": metrics["epochs"], "train_seconds": round(seconds, 1)}


if __name__ == "__main__":
    main()
