"""Explain a language model's prediction on a text with AttnLRP and PA-LRP (docs/method.md, sections 3 and 5).

    python explain_text.py MODEL_DIR --text "The movie was great" [--target TOKEN_OR_ID]
    python explain_text.py MODEL_DIR --file review.txt --bf16 --device cuda
    python explain_text.py TinyLlama/TinyLlama-1.1B-Chat-v1.0 --text "The movie was"

MODEL_DIR is any checkpoint written by ``save_pretrained`` (a causal LM or a sequence classifier
of a family the text engine explains, docs/text_families.md) with its tokenizer, or the hub id
``org/name[@revision]`` of one in the local Hugging Face cache (``HF_HOME``; nothing is
downloaded unless ``--allow-download``, which ``HF_HUB_OFFLINE=1`` refuses); it runs in
float32 on CPU and bfloat16 on CUDA unless ``--fp32`` / ``--bf16`` says otherwise. For a causal
LM the explained target is the next token after the text (default: the predicted one;
``--target`` takes a token id or one sub-word piece of the tokenizer); for a classifier it is a
class (default: the predicted one; ``--target`` takes a class index or label name). Prints the
most relevant tokens, then the most negative ones of the PA-LRP map (evidence against the
target), and writes ``<stem>.html``, ``<stem>.png`` (AttnLRP, PA-LRP and PE-only side by side)
and ``<stem>.json`` (the maps). A text of special tokens only is refused.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from palrp import config
from palrp.modules.targets import index_from_spec
from palrp.runtime.cli import file_stem
from palrp.runtime.cli import (Parser, check_allow_download, check_output_dir, device_args,
                               device_map_args, dtype_from_flags, gradient_checkpointing_args,
                               hub_args, model_folder_or_exit, output_args, positive_int,
                               precision_args, quiet_loading)


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0],
               parents=[device_args(), device_map_args(), gradient_checkpointing_args(),
                        output_args(config.OUTPUT_DIR / "explain_text", "HTML, PNG and JSON",
                                    overwrite=False), precision_args(), hub_args()])
    p.add_argument("model_dir", help="folder written by save_pretrained (model + tokenizer), or a "
                                     "hub id org/name[@revision] in the Hugging Face cache")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="the text to explain")
    src.add_argument("--file", type=Path, help="a UTF-8 text file to explain")
    p.add_argument("--target", help="causal LM: token id or sub-word piece; classifier: class "
                                    "index or label (default: the prediction)")
    p.add_argument("--max-length", type=positive_int, default=None,
                   help="keep only the first N tokens of the text")
    p.add_argument("--top-k", type=positive_int, default=10, help="tokens to print (default 10)")
    p.add_argument("--stem", type=file_stem, default=None,
                   help="output file name stem (default: the --file name, else 'explanation')")
    return p.parse_args(argv)


def read_text(args) -> str:
    if args.file is not None:
        if not args.file.is_file():
            raise SystemExit(f"error: text file {args.file} not found; give an existing --file")
        try:
            text = args.file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SystemExit(f"error: {args.file} is not UTF-8 text; convert it or use --text")
    else:
        text = args.text
    if not text.strip():
        raise SystemExit("error: the text is empty; give --text with at least one word or a "
                         "non-empty --file")
    return text


def check_folder(model_dir: Path) -> None:
    """The cheap folder checks (exists, config.json is JSON) before the text is read."""
    from palrp.loaders.text_models import ModelFolderError, check_model_folder

    try:
        check_model_folder(model_dir)
    except ModelFolderError as exc:
        raise SystemExit(f"error: {exc}") from None


def load_checkpoint(model_dir: Path, dtype, device, device_map=None):
    """The model (the checkpoint's causal LM or sequence classifier), its tokenizer and its
    head kind, through the one text-model loader (palrp/loaders/text_models.py)."""
    from palrp.loaders.text_models import ModelFolderError, load_text_model

    try:
        loaded = load_text_model(model_dir, "auto", dtype=dtype, device=device,
                                 device_map=device_map)
    except ModelFolderError as exc:
        raise SystemExit(f"error: {exc}") from None
    return loaded.model, loaded.tokenizer, loaded.head


def parse_target(spec, model, tokenizer, kind: str):
    """Index to explain, from a number or a token piece / label name; None = the prediction.
    Numbers and label names go through :func:`palrp.modules.targets.index_from_spec` (the one
    resolver of both command lines); a causal LM also takes one sub-word piece of its
    tokenizer."""
    if spec is None:
        return None
    try:
        if kind != "causal_lm":
            return index_from_spec(spec, model.config.num_labels,
                                   model.config.label2id or {}, "classes")
        size = model.get_output_embeddings().weight.shape[0]
        if re.fullmatch(r"[+-]?\d+", spec.strip()):
            return index_from_spec(spec, size, None, "vocabulary entries")
        return _token_piece(spec, tokenizer, size)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def _token_piece(spec: str, tokenizer, size: int) -> int:
    """The id of ``spec`` as one vocabulary entry, or as text that encodes to one token."""
    vocab = tokenizer.get_vocab()
    if spec in vocab:
        idx = vocab[spec]
    else:
        ids = tokenizer.encode(spec, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"target {spec!r} is not one token of this tokenizer (it is "
                             f"{len(ids)} pieces); give a token id or one sub-word piece")
        idx = ids[0]
        if tokenizer.unk_token_id is not None and idx == tokenizer.unk_token_id:
            raise ValueError(f"target {spec!r} is not in this tokenizer's vocabulary (it "
                             f"becomes the unknown token {tokenizer.unk_token!r}); give a "
                             "token id or a sub-word piece of the vocabulary")
    if not 0 <= idx < size:
        raise ValueError(f"target {spec!r} (id {idx}) is outside the model's {size} "
                         "vocabulary entries; give a token the model can predict")
    return idx


def check_not_only_special(ids: list[int], tokenizer) -> None:
    """Refuse a text the tokenizer turns into special tokens only (its ``all_special_ids``:
    BOS, EOS, padding, unknown...): there is no word of the text to explain."""
    special = set(getattr(tokenizer, "all_special_ids", None) or ())
    if ids and all(i in special for i in ids):
        shown = " ".join(dict.fromkeys(tokenizer.convert_ids_to_tokens(ids)))
        raise SystemExit(f"error: the text becomes special tokens only ({shown}), so there is "
                         "nothing of it to explain; give a text with at least one word of the "
                         "model's vocabulary")


def non_finite_line(model, exc: FloatingPointError) -> str:
    """One line for a non-finite explanation, naming the likely cause: the first parameter
    holding NaN or infinity if there is one, else an overflow in the model's dtype."""
    import torch

    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param.detach()).all()):
            return (f"error: the model's weights are not finite (parameter {name} holds NaN or "
                    "inf), so its explanation is NaN; use a checkpoint with finite weights "
                    "(e.g. retrain a diverged fine-tune)")
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    return (f"error: the explanation is not finite (NaN or inf): the model overflows on this "
            f"text in {dtype}; run with --fp32 (or check the weights for huge values)")


def print_most_negative(values, pieces, scaled, columns, k: int) -> None:
    """The k tokens of most negative PA-LRP relevance (the evidence against the target, which
    the ranking by relevance puts last), in the same columns as the ranking."""
    negative = [pos for pos in values.argsort().tolist() if float(values[pos]) < 0][:k]
    if not negative:
        print("\nmost negative PA-LRP relevance: no token has negative PA-LRP relevance")
        return
    print(f"\nmost negative PA-LRP relevance (evidence against the target; the {len(negative)} "
          "lowest tokens of the PA-LRP map, most negative first):")
    print(f"{'rank':>4}  {'pos':>4}  {'token':<20} " + " ".join(f"{n:>9}" for n in columns))
    for rank, pos in enumerate(negative, 1):
        print(f"{rank:>4}  {pos:>4}  {pieces[pos][:20]!s:<20} "
              + " ".join(f"{scaled[n][pos]:>9.4f}" for n in columns))


def main(argv=None):
    args = parse_args(argv)
    model_dir = model_folder_or_exit(args.model_dir, check_allow_download(args))
    check_folder(model_dir)
    text = read_text(args)
    check_output_dir(args.output_dir)
    from palrp.runtime import atomic_write_json, resolve_device
    device = resolve_device(args.device)
    with quiet_loading():
        model, tokenizer, kind = load_checkpoint(model_dir, dtype_from_flags(args), device,
                                                 args.device_map)
    if args.device_map is not None:      # inputs go where the embedding lives
        device = model.get_input_embeddings().weight.device

    from palrp.modules import method_maps
    from palrp.render.text import peak_normalised, save_heatmaps

    target = parse_target(args.target, model, tokenizer, kind)
    enc = tokenizer(text, return_tensors="pt", truncation=args.max_length is not None,
                    max_length=args.max_length)
    ids = enc["input_ids"]
    if ids.shape[1] == 0:
        raise SystemExit("error: the text gives no tokens; give a text the tokenizer can read")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and ids.shape[1] > limit:
        raise SystemExit(f"error: the text has {ids.shape[1]} tokens, more than the model's "
                         f"{limit} positions; pass --max-length {limit} or shorten it")
    check_not_only_special(ids[0].tolist(), tokenizer)
    inputs = {"input_ids": ids.to(device), "attention_mask": enc["attention_mask"].to(device)}
    try:
        maps, result = method_maps(model, inputs, target,
                                   gradient_checkpointing=args.gradient_checkpointing)
    except FloatingPointError as exc:    # the engine refuses a non-finite result
        raise SystemExit(non_finite_line(model, exc)) from None
    pieces = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    maps = {name: values[0].cpu() for name, values in maps.items()}
    t = int(result.target[0])
    if kind == "causal_lm":
        label = f"next token {tokenizer.convert_ids_to_tokens([t])[0]!r} (id {t})"
    else:
        label = f"class {t} ({model.config.id2label.get(t, t)})"
    logit = float(result.logits[0, t])
    print(f"explained: {label}, logit {logit:.4f}, at position {int(result.positions[0])} "
          f"of {len(pieces)} tokens")
    order = maps["PA-LRP"].argsort(descending=True)[: args.top_k]  # most relevant first
    columns = ("PA-LRP", "AttnLRP", "PE-only")
    scaled = {name: peak_normalised(maps[name]) for name in columns}
    peaks = ", ".join(f"{name} {float(maps[name].abs().max()):.4g}" for name in columns)
    print(f"\nscale: every column is its map divided by the map's max |relevance| (1 = the "
          f"map's most relevant token, as in the heatmaps)\nmax |relevance| before scaling: {peaks}")
    print(f"{'rank':>4}  {'pos':>4}  {'token':<20} " + " ".join(f"{n:>9}" for n in columns))
    for rank, pos in enumerate(order.tolist(), 1):
        print(f"{rank:>4}  {pos:>4}  {pieces[pos][:20]!s:<20} "
              + " ".join(f"{scaled[n][pos]:>9.4f}" for n in columns))
    print_most_negative(maps["PA-LRP"], pieces, scaled, columns, args.top_k)
    stem = args.stem or (args.file.stem if args.file is not None else "explanation")
    info = [f"model: {args.model_dir}", f"explained: {label}, logit {logit:.4f}",
            "AttnLRP: token relevance without PE; PA-LRP: tokens + |PE| of every layer, "
            "max-normalised; PE-only: the PE term alone"]
    try:
        html_path, png_path = save_heatmaps(pieces, maps, args.output_dir, stem=stem,
                                            title=f"{model.__class__.__name__}: {label}",
                                            info=info)
    except ValueError as exc:          # a PNG too large to draw (the HTML page is written)
        raise SystemExit(f"error: {exc}") from None
    json_path = atomic_write_json(args.output_dir / f"{stem}.json",
                                  {"tokens": pieces, "target": t, "logit": logit,
                                   "maps": {k: v.tolist() for k, v in maps.items()}})
    print(f"\nwrote {html_path}\nwrote {png_path}\nwrote {json_path}")


if __name__ == "__main__":
    sys.exit(main())
