"""The one engine: one patch context (:func:`lrp`) and one entry point (:func:`explain`) for every
registered family, vision and text, and for models composed of them (docs/method.md).

Inside ``with lrp(model, method) as state:`` a forward pass of a supported model gives the stock
outputs and its backward, seeded at a score, is the LRP backward of every part's family map, in
gradient x input form. A model is cut into **parts**: the root family's subtree, and, for a
composite (a vision-language model), each submodule whose class belongs to another registered
family (a vision tower, a language model), explained by that family's map, in the same patch
and the same backward. Each part reads one input **stream** (``"pixel_values"``:
the pixels are the leaf; ``"input_ids"``: the token embeddings are) and owns one
:class:`palrp.modules.positional.PositionalSource` for the positional encodings of that
stream.

One convention across modalities:

- every module is in eval mode during the explanation and gets its own flag back after;
- the backward is seeded with gradient 1 at each sample's target logit, so the relevance of a
  sample sums to its explained logit (``R(target) = logit``, docs/method.md "Seed"); the
  paper's vision maps, defined for ``R(target) = 1``, divide by the logit in their combination
  (:attr:`palrp.modules.positional.Combination.unit_seed`), which changes no normalised map
  since every rule is linear in the relevance;
- every patch (module forwards, attention kernels seen through per-instance config views,
  torch function modes) is per instance and undone on exit, also when the body raises.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field

import torch

from .adapters.peft import explained_model
from .explanation import Explanation, Stream, check_finite
from .family import Family, UnsupportedModelError, family_of, model_classes, part_family
from .patching import patching
from .positional import PositionalSource
from .rules import RuleSet
from .targets import per_sample, resolve_target

__all__ = ["lrp", "explain", "LRPState", "Part", "METHODS", "plan"]

#: The methods of :func:`explain`: PA-LRP (tokens/pixels and positions attributed), the AttnLRP
#: baseline (positional encodings constant) and the positional map alone.
METHODS = ("pa_lrp", "attn_lrp", "pe_only")


def _adapter(family: Family):
    if family.library == "torchvision":
        from .adapters import torchvision as tv_adapter
        return tv_adapter
    from .adapters import timm as timm_adapter
    from .adapters import transformers as hf_adapter
    return {"timm": timm_adapter, "transformers": hf_adapter}[family.library]


@dataclass(eq=False)
class Part:
    """One family's subtree of the explained model, with the leaves of its latest pass."""

    family: Family
    module: torch.nn.Module
    path: str
    rules: RuleSet
    source: PositionalSource
    gradient_checkpointing: bool = False
    token_leaf: torch.Tensor | None = None
    token_type_leaf: torch.Tensor | None = None
    batch_size: int = 0
    cache: dict = field(default_factory=dict)
    rotary_width: dict = field(default_factory=dict)
    parents: dict = field(default_factory=dict)
    placed: dict = field(default_factory=dict)
    #: an encoder-decoder's decoder part reads ``family.decoder_stream`` instead of ``stream``
    stream_name: str | None = None
    #: the (B, S) mask of the stream this part reads, when it is not the call's main mask
    mask: torch.Tensor | None = None
    #: True while the part's own stack runs (routes a token embedding shared by two parts)
    active: bool = False
    #: the parts of the same family in this model (an encoder-decoder's encoder and decoder)
    siblings: list = field(default_factory=list)

    @property
    def stream(self) -> str | None:
        return self.stream_name or self.family.stream

    def new_pass(self) -> None:
        self.token_leaf = self.token_type_leaf = None
        self.cache.clear()
        self.rotary_width.clear()
        self.source.clear()

    def places_of(self, rule: str) -> list:
        return list(self.placed.get(rule, ()))


def plan(model) -> list[tuple[Family, torch.nn.Module, str]]:
    """The parts of ``model``: ``(family, module, path)``, the root's first. A submodule whose
    class belongs to another registered family starts a part of its own inside a composite
    family; inside any other family it is refused (one line). An encoder-decoder family
    (``Family.decoder_stream``) has two parts: its root (the encoder's stream) and, right after
    it, its decoder stack (``root.get_decoder()``, the decoder's stream)."""
    family, _ = family_of(model)
    index = model_classes()
    out = []

    def walk(fam, root, path):
        out.append((fam, root, path))
        if fam.decoder_stream:
            decoder = root.get_decoder()
            where = next(name for name, m in root.named_modules() if m is decoder)
            out.append((fam, decoder, f"{path}.{where}" if path else where))

        def descend(module, prefix):
            for name, child in module.named_children():
                where = f"{prefix}.{name}" if prefix else name
                other = part_family(child, index)
                if other is not None and other is not fam:
                    if fam.composite:
                        walk(other, child, where)
                        continue
                    raise UnsupportedModelError(
                        f"{type(child).__name__} (at {where}) inside a {fam.name} model "
                        "is not supported")
                descend(child, where)

        descend(root, path)

    walk(family, model, "")
    return out


@dataclass
class LRPState:
    """Handle yielded by :func:`lrp`: the model, its family and task, the method and the parts
    (``part_for(stream)`` finds the part that reads a stream)."""

    model: torch.nn.Module
    family: Family
    task: str
    method: str
    parts: list

    def part_for(self, stream: str) -> Part | None:
        for part in self.parts:
            if part.stream == stream:
                return part
        return None


def _resolve_rules(family: Family, rules) -> RuleSet:
    if rules is None:
        return family.default_rules
    if isinstance(rules, str):
        rules = RuleSet.named(rules)
    if not isinstance(rules, RuleSet):
        raise TypeError(f"rules must be None, a preset name or a RuleSet, got "
                        f"{type(rules).__name__}")
    family.check_rules(rules)
    return rules


@contextlib.contextmanager
def lrp(model, method: str = "pa_lrp", rules=None, *, gradient_checkpointing: bool = False):
    """Equip a supported model with the LRP rules of its families while active.

    ``method``: ``"pa_lrp"`` and ``"pe_only"`` make the positional encodings leaves (their
    relevance is read); ``"attn_lrp"`` keeps them constants. ``rules``: a
    :class:`palrp.modules.rules.RuleSet`, a preset name, or None for each family's default
    (the root's rule set is applied to every part whose family implements it).
    ``gradient_checkpointing=True`` recomputes each transformers layer in the backward
    (non-reentrant; same numbers). Yields an :class:`LRPState`. Forward outputs are the stock
    ones; on exit the model is exactly as before.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    model = explained_model(model)
    family, task = family_of(model)
    attribute = method != "attn_lrp"
    layout = plan(model)
    parts = []
    for fam, module, path in layout:
        chosen = _resolve_rules(fam, rules if fam is family or rules is None else None)
        siblings = [p for p in parts if p.family is fam]
        # the second part of an encoder-decoder family is its decoder (see plan())
        decoder = fam.decoder_stream if fam.decoder_stream and siblings else None
        parts.append(Part(family=fam, module=module, path=path, rules=chosen,
                          source=PositionalSource(attribute=attribute),
                          gradient_checkpointing=gradient_checkpointing, stream_name=decoder))
    for part in parts:
        part.siblings = [p for p in parts if p.family is part.family]
    state = LRPState(model=model, family=family, task=task, method=method, parts=parts)
    part_roots = {id(p.module): p for p in parts}

    with patching(model) as patcher:
        for part in parts:
            patcher.on_exit(part.new_pass)
        for module in model.modules():
            patcher.set_attr(module, "training", False)
        for part in parts:
            _adapter(part.family).check(part.module)
        for part in parts:
            adapter = _adapter(part.family)
            part.parents = {child: owner for owner in part.module.modules()
                            for child in owner.children()}

            def foreign(module, part=part):
                other = part_roots.get(id(module))
                return other is not None and other is not part

            counts = patcher.apply_rules(part.family.rules, adapter.factories(part),
                                         root=part.module, foreign=foreign, placed=part.placed)
            adapter.install(patcher, part, counts)
        patcher.wrap_forward(model, _top_level(parts))
        yield state


def _top_level(parts):
    """The explained model's own forward: a new pass for every part (leaves forgotten; an image
    stream's batch size read from its pixels, so that its position leaves are per sample), and
    the parts' forward contexts around the stock forward."""
    def make(original):
        def forward(*args, **kwargs):
            pixels = kwargs.get("pixel_values", args[0] if args else None)
            for part in parts:
                part.new_pass()
                if part.stream == "pixel_values" and torch.is_tensor(pixels) \
                        and part.family.pixel_layout in ("images", "patch_sequence"):
                    part.batch_size = pixels.shape[0]
            with contextlib.ExitStack() as stack:
                for part in parts:
                    if part.family.library == "transformers":
                        stack.enter_context(_adapter(part.family).forward_context(part))
                return original(*args, **kwargs)
        return forward
    return make


# =========================================================================================
# explain()
# =========================================================================================

def _token_batch(ids, mask, vocab_size: int, device):
    """Checked (B, S) ids and mask (1 = token, 0 = padding)."""
    ids = torch.as_tensor(ids)
    if ids.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
        raise ValueError(f"input_ids must be integer token ids, got dtype {ids.dtype}")
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(ids.shape)}")
    if ids.numel() == 0:
        raise ValueError("empty input: input_ids has no tokens; give at least one token per sample")
    ids = ids.to(device=device, dtype=torch.long)
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"input_ids hold ids outside the vocabulary [0, {vocab_size}); "
                         "tokenize with the model's own tokenizer")
    if mask is None:
        mask = torch.ones_like(ids)
    else:
        mask = torch.as_tensor(mask)
        if mask.dim() == 1:
            mask = mask.unsqueeze(0)
        if tuple(mask.shape) != tuple(ids.shape):
            raise ValueError(f"attention_mask shape {tuple(mask.shape)} differs from input_ids "
                             f"shape {tuple(ids.shape)}; pass the tokenizer's mask")
        mask = mask.to(device=device, dtype=torch.long)
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
        if not bool((mask.sum(-1) > 0).all()):
            raise ValueError("empty input: a sample has no real token (attention_mask all 0)")
    return ids, mask


def _prepare(state: LRPState, inputs):
    """The keyword call of the model, the pixel leaves, the token mask; checked (before the
    forward, against the streams of the model's parts)."""
    model, task = state.model, state.task
    streams = {p.stream: p.family for p in state.parts if p.stream is not None}
    if torch.is_tensor(inputs):
        if set(streams) != {"pixel_values"}:
            raise ValueError(f"a {type(model).__name__} takes the inputs "
                             f"{sorted(streams)}: pass a mapping of them, what model(**inputs) "
                             "takes")
        inputs = {"pixel_values": inputs}
    if not hasattr(inputs, "keys"):
        raise TypeError(f"inputs must be a tensor of images or a mapping of the model's keyword "
                        f"inputs, got {type(inputs).__name__}")
    call = dict(inputs)
    missing = sorted(set(streams) - set(call))
    if missing:
        raise ValueError(f"inputs lack {missing}: a {type(model).__name__} reads "
                         f"{sorted(streams)}")
    param = next(model.parameters())
    mask = None
    if "pixel_values" in streams:
        pixels = torch.as_tensor(call["pixel_values"])
        vision = state.part_for("pixel_values")
        if vision.family.pixel_layout == "patches":
            from .adapters.packed_patches import checked_pixels
            ids = torch.as_tensor(call["input_ids"])
            batch = ids.shape[0] if ids.dim() == 2 else 1
            pixels = checked_pixels(pixels, call, vision.module.config, batch)
        elif vision.family.pixel_layout == "tiles":
            if pixels.dim() != 5 or not pixels.is_floating_point():
                raise ValueError(f"pixel_values must be float (B, images, C, H, W) sub-images, "
                                 f"got {tuple(pixels.shape)} {pixels.dtype}")
        elif vision.family.pixel_layout == "patch_sequence":
            if pixels.dim() != 3 or not pixels.is_floating_point():
                raise ValueError(f"pixel_values must be float (B, patches, values) patch "
                                 f"sequences (the image processor's), got "
                                 f"{tuple(pixels.shape)} {pixels.dtype}")
        elif pixels.dim() != 4 or not pixels.is_floating_point():
            raise ValueError(f"pixel_values must be float (B, C, H, W) images, got "
                             f"{tuple(pixels.shape)} {pixels.dtype}")
        call["pixel_values"] = pixels.detach().to(param.device, param.dtype).requires_grad_(True)
    if "input_ids" in streams:
        text = streams["input_ids"]
        embedding = state.part_for("input_ids").module.get_input_embeddings()
        ids, mask = _token_batch(call["input_ids"], call.get("attention_mask"),
                                 embedding.num_embeddings, embedding.weight.device)
        call["input_ids"], call["attention_mask"] = ids, mask
        if "token_type_ids" in call and call["token_type_ids"] is not None:
            # a composite reads them itself (Gemma 3, PaliGemma: which tokens are image)
            if not text.token_type_module and not state.family.composite:
                raise ValueError(f"token_type_ids given, but a {text.name} model has no token "
                                 "types; leave them out")
            call["token_type_ids"] = torch.as_tensor(call["token_type_ids"]).reshape(
                ids.shape).to(ids.device, torch.long)
        if text.position_ids == "from_mask" and call.get("position_ids") is None:
            # a padded sample sees the positions it has on its own
            call["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0) + state.family.first_position
        if task == "classifier" and text.pooling == "first" and bool((mask[:, 0] == 0).any()):
            raise ValueError(f"a {text.name} classifier reads the first token; this batch is "
                             "padded on the left: pad on the right (the tokenizer's default)")
        for part in state.parts:
            if part.stream_name and part.stream_name != "input_ids":
                key = part.stream_name
                ids_d, part.mask = _token_batch(
                    call[key], call.get(key.replace("input_ids", "attention_mask")),
                    embedding.num_embeddings, embedding.weight.device)
                call[key] = ids_d
                call[key.replace("input_ids", "attention_mask")] = part.mask
                if ids_d.shape[0] != ids.shape[0]:
                    raise ValueError(f"{key} has {ids_d.shape[0]} samples for {ids.shape[0]} "
                                     "input_ids samples")
        if "use_cache" in inspect.signature(type(model).forward).parameters:
            call["use_cache"] = False  # no KV cache (and none filled twice by a recompute)
    return call, mask


def _last_real(mask):
    order = torch.arange(mask.shape[1], device=mask.device)
    return (order * mask).argmax(dim=-1)


def _explained_positions(state: LRPState, call: dict, mask, position, mask_token_id):
    """The (B,) sequence positions explained by a token-predicting head (see :func:`explain`,
    ``position``), checked: inside the sequence and on a real (unpadded) token."""
    task = state.task
    if task == "seq2seq_lm":
        decoder = next(p for p in state.parts if p.stream_name)
        ids, mask = call[decoder.stream_name], decoder.mask
    else:
        ids = call["input_ids"]
    batch, seq_len = mask.shape
    if position is None:
        if task != "masked_lm":
            return _last_real(mask)
        if mask_token_id is None:
            mask_token_id = getattr(state.model.config, "mask_token_id", None)
        if mask_token_id is None:
            return _last_real(mask)
        is_mask = (ids == int(mask_token_id)) & (mask == 1)
        missing = (~is_mask.any(dim=-1)).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"sample(s) {missing} hold no mask token (id {int(mask_token_id)}); "
                             "pass position= (one int, or one per sample)")
        return is_mask.to(torch.long).argmax(dim=-1)
    given = per_sample(position, batch, mask.device, "position", "position")
    if bool(((given < 0) | (given >= seq_len)).any()):
        raise ValueError(f"position {given.tolist()} outside the sequence (0..{seq_len - 1})")
    if not bool(mask.gather(1, given[:, None]).all()):
        raise ValueError(f"position {given.tolist()} is a padding position of its sample")
    return given.clone()


def _run(state: LRPState, call: dict, mask, position=None, mask_token_id=None):
    """The forward: ``(logits (B, C), explained positions (B,) or None, what)``."""
    model, task = state.model, state.task
    family = state.family
    token_head = task in ("causal_lm", "masked_lm", "seq2seq_lm")
    if position is not None and not token_head:
        raise ValueError(f"position= is for heads that predict a token at each position "
                         f"(causal, masked and encoder-decoder LMs); a {type(model).__name__} "
                         f"({task}) has one output per sample")
    if mask_token_id is not None and task != "masked_lm":
        raise ValueError(f"mask_token_id= is for masked LMs; a {type(model).__name__} ({task}) "
                         "has no mask token to find")
    if family.library in ("timm", "torchvision"):        # images given positionally
        return _adapter(family).call_model(model, call), None, "classes"
    if token_head:
        from .adapters.transformers import logits_to_keep_kwargs
        explained = _explained_positions(state, call, mask, position, mask_token_id)
        kept = torch.unique(explained)
        extra = logits_to_keep_kwargs(model, kept)
        all_logits = model(**call, **extra).logits
        column = torch.searchsorted(kept, explained) if extra else explained
        logits = all_logits[torch.arange(explained.shape[0], device=explained.device), column]
        return logits, explained, "vocabulary entries"
    if task == "image_text":    # a dual encoder: each image's scores against the batch's texts
        return model(**call).logits_per_image, None, "texts"
    logits = model(**call).logits
    positions = None
    if mask is not None:
        seq_len = mask.shape[1]
        order = torch.arange(seq_len, device=mask.device)
        text = state.part_for("input_ids").family
        pad_id = getattr(model.config, "pad_token_id", None)
        if text.pooling == "first":
            positions = torch.zeros(mask.shape[0], dtype=torch.long, device=mask.device)
        elif pad_id is None:
            positions = torch.full((mask.shape[0],), seq_len - 1, device=mask.device)
        else:  # the stock pooling: rightmost token that is not the pad token
            positions = (order * (call["input_ids"] != pad_id)).argmax(dim=-1)
    return logits, positions, "classes"


def explain(model, inputs, target=None, method: str = "pa_lrp", *, rules=None,
            gradient_checkpointing: bool = False, position=None,
            mask_token_id: int | None = None) -> Explanation:
    """Explain ``target`` for every sample of a batch with PA-LRP (docs/method.md).

    - ``model``: an unmodified supported model (``palrp.families()``), any dtype, device and
      attention kernel; restored after (parameters, forwards, training flags).
    - ``inputs``: a (B, C, H, W) tensor of normalised images (a timm model), or a mapping of
      the keyword inputs of the model's forward, what ``model(**inputs)`` takes
      (``input_ids``, ``attention_mask``, ``token_type_ids``, ``pixel_values``, ...).
    - ``target``: None (argmax), an int, or one per sample: the token predicted at the
      explained position of a causal, masked or encoder-decoder LM, the class of a classifier,
      the text (its index in the batch's texts) of a dual encoder's image-text score
      (``logits_per_image``, (B images, texts)).
    - ``position`` (token-predicting heads only; a classifier or image model refuses it): the
      sequence position whose prediction is explained, one int for every sample or one per
      sample, 0-based in the padded sequence, on a real token. Default: a causal LM's last
      real token (its next token); an encoder-decoder's last real ``decoder_input_ids``
      token (the next decoder token, over the encoder input and the decoder prefix); a masked
      LM's first mask token when the mask token id is known (``mask_token_id=``, else
      ``model.config.mask_token_id``; a sample without it is an error), else its last real
      token. ``result.positions`` holds the positions explained.
    - ``method``: ``"pa_lrp"``, ``"attn_lrp"`` (positional encodings constant: no positional
      relevance) or ``"pe_only"`` (as pa_lrp; its map is the positional term alone).
    - ``rules``: a :class:`palrp.modules.rules.RuleSet` or preset name for the root family
      (default: each family's own).

    Returns an :class:`palrp.modules.explanation.Explanation`: ``logits`` (B, C) at the
    explained position, ``target`` (B,), ``relevance`` and ``positional``: input stream name ->
    (B, N) relevance per token or per patch (patch grids row-major, prefix tokens excluded),
    ``combined(stream)``: the paper's map. Relevance of a sample sums (up to the rules' own
    non-conservation) to its explained logit. A NaN or infinity anywhere is an error.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    model = explained_model(model)      # a LoRA PEFT model: its base model, adapters in place
    _, task = family_of(model)
    if task == "part":
        raise UnsupportedModelError(
            f"{type(model).__name__} is a base model without a head: there is no output to "
            "explain; load the model with its head (...ForCausalLM, "
            "...ForSequenceClassification)")
    with torch.enable_grad(), lrp(model, method, rules,
                                  gradient_checkpointing=gradient_checkpointing) as state:
        call, mask = _prepare(state, inputs)
        logits, positions, what = _run(state, call, mask, position, mask_token_id)
        check_finite(logits, "logits")
        target_idx = resolve_target(target, logits.detach(), what)
        score = logits.gather(1, target_idx[:, None]).sum()
        leaves, readers = _collect_leaves(state, call)
        grads = torch.autograd.grad(score, leaves, allow_unused=True) if leaves else ()
        streams = {}
        for reader in readers:
            streams.update(reader(grads, mask))
    out = torch.float64 if logits.dtype == torch.float64 else torch.float32
    result = Explanation(method=method, logits=logits.detach().to(out), target=target_idx,
                         streams=streams, positions=positions, attention_mask=mask,
                         rules={p.family.name: p.rules for p in state.parts},
                         families=tuple(p.family.name for p in state.parts))
    result.check_finite()
    return result


def _collect_leaves(state: LRPState, call: dict):
    """Every leaf to differentiate, and for each stream a reader turning its slice of the
    gradients into :class:`Stream` records."""
    leaves: list = []
    readers = []
    for part in state.parts:
        if part.stream is None:
            continue
        start = len(leaves)
        if part.stream == "pixel_values":
            leaves.append(call["pixel_values"])
        else:
            if part.token_leaf is None:
                raise RuntimeError(f"the {part.family.name} part made no token embeddings in "
                                   "the forward pass")
            leaves.append(part.token_leaf)
        positional = part.source.leaves()
        leaves.extend(positional)
        has_types = part.token_type_leaf is not None
        if has_types:
            leaves.append(part.token_type_leaf)
        stop = len(leaves)
        readers.append(_reader(part, call, start, stop, len(positional), has_types))
    return leaves, readers


def _reader(part: Part, call: dict, start: int, stop: int, num_positional: int, has_types: bool):
    family = part.family

    def read(grads, mask):
        mask = mask if part.mask is None else part.mask
        grads = grads[start:stop]
        first = grads[0]
        leaf = call["pixel_values"] if part.stream == "pixel_values" else part.token_leaf
        out = torch.float64 if leaf.dtype == torch.float64 else torch.float32
        labels = tuple(part.source.labels)
        if part.stream == "pixel_values" and family.pixel_layout in ("patches", "tiles"):
            from .adapters import packed_patches, tiles
            layout = {"patches": packed_patches, "tiles": tiles}[family.pixel_layout]
            g = torch.zeros_like(leaf) if first is None else first
            sinks = part.source.relevance(grads[1:1 + num_positional],
                                          layout.positions(part, leaf), dtype=out)
            return {"pixel_values": layout.image_stream(
                part, call, leaf.detach().to(out) * g.to(out), sinks, labels)}
        if part.stream == "pixel_values":
            geometry = _adapter(family).geometry(part, leaf)
            gh, gw = geometry["grid"]
            prefix = geometry["prefix"]
            g = torch.zeros_like(leaf) if first is None else first
            channels = leaf.detach().to(out) * g.to(out)
            if "canvas" in geometry:    # patch sequences: their pixels on the batch's canvas
                channels = geometry["canvas"](channels)
            sinks = part.source.relevance(grads[1:1 + num_positional], prefix + gh * gw,
                                          dtype=out)
            return {"pixel_values": Stream.image(
                channels=channels, sinks=sinks, labels=labels, prefix=prefix, grid=(gh, gw),
                patch_size=geometry["patch_size"], combination=family.combination,
                family=family.name)}
        real = mask.to(out)

        def per_token(leaf_tensor, grad):
            if grad is None:
                return torch.zeros_like(real)
            return (leaf_tensor.detach().to(out) * grad.to(out)).sum(-1) * real

        sinks = part.source.relevance(grads[1:1 + num_positional], mask.shape[1], dtype=out)
        if sinks is not None:
            sinks = sinks * real[:, None, :]
        streams = {part.stream: Stream.tokens(
            relevance=per_token(leaf, first), sinks=sinks, labels=labels, mask=mask,
            combination=family.combination, family=family.name)}
        if has_types:
            streams["token_type_ids"] = Stream.tokens(
                relevance=per_token(part.token_type_leaf, grads[-1]), sinks=None, labels=(),
                mask=mask, combination=family.combination, family=family.name)
        return streams

    return read
