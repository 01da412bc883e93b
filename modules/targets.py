"""What an explanation explains: one resolver for targets, shared by vision and text.

- :func:`resolve_target` turns the ``target`` argument of :func:`palrp.explain_image`,
  :func:`palrp.explain_text` and the baselines (None, an int, a sequence or a tensor) into one
  class / token index per sample, checked against the model's outputs;
- :func:`index_from_spec` turns what a user types on a command line (``"3"``, ``"tabby"``,
  ``"negative"``) into one index, from a number or a case-insensitive name, with an error that
  names the problem and what to give instead.

Both raise :class:`ValueError` with one line; the command lines turn it into their exit line.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

__all__ = ["resolve_target", "per_sample", "index_from_spec", "out_of_range"]


def per_sample(value, batch: int, device, name: str, noun: str) -> torch.Tensor:
    """``value`` (an int, or a sequence or tensor of ``batch`` ints) as a (B,) long tensor, one
    per sample (an int is repeated). Floats, complex numbers and booleans are refused (a
    probability passed by mistake is not silently truncated), as is a wrong count; ``name`` and
    ``noun`` word the one-line error ("target" / "index", "position" / "position")."""
    t = torch.as_tensor(value, device=device)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        kind = "sequence position" if noun == "position" else noun
        raise ValueError(f"{name} must be an integer {kind}, got {value!r}")
    t = t.to(torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{name} has {t.numel()} entries for a batch of {batch}; give None, "
                         f"one {noun} or one per sample")
    return t


def out_of_range(index, size: int, what: str) -> str:
    """The one wording of an index beyond the model's outputs."""
    return f"target {index} is outside the model's {size} {what} (0..{size - 1})"


def resolve_target(target, logits: torch.Tensor, what: str = "classes") -> torch.Tensor:
    """The (B,) long tensor of explained indices for ``logits`` of shape (B, C).

    ``None`` -> each sample's argmax (the prediction); an int -> that index for every sample;
    a sequence or tensor of B integers -> one per sample. Floats and booleans are refused
    (a probability passed by mistake is not silently truncated), as are a wrong count and an
    index outside ``0..C-1``; ``what`` names the outputs in the message ("classes",
    "vocabulary entries")."""
    batch, size = logits.shape
    if target is None:
        return logits.argmax(dim=-1)
    t = per_sample(target, batch, logits.device, "target", "index")
    bad = (t < 0) | (t >= size)
    if bool(bad.any()):
        raise ValueError(out_of_range(int(t[bad][0]), size, what))
    return t.clone()


def index_from_spec(spec: str | int, size: int,
                    names: Mapping[str, int] | Sequence[str] | None = None,
                    what: str = "classes") -> int:
    """One index from a typed ``spec``: a decimal number (checked against ``size``) or a name.

    ``names`` is either a sequence (position = index, e.g. timm's ``class_names``) or a mapping
    name -> index (e.g. a transformers ``label2id``); names match case-insensitively after
    stripping spaces. An unknown name lists the names that contain it (or all of them when
    there are few), an ambiguous one the indices it names; without names only numbers are
    accepted."""
    text = str(spec).strip()
    if re.fullmatch(r"[+-]?\d+", text):
        index = int(text)
        if not 0 <= index < size:
            raise ValueError(out_of_range(index, size, what))
        return index
    if names is None or len(names) == 0:
        raise ValueError(f"target {text!r} is not an index and this model has no names for its {what}; "
                         f"give an index 0..{size - 1}")
    pairs = (list(names.items()) if isinstance(names, Mapping)
             else [(name, i) for i, name in enumerate(names)])
    hits = sorted({int(i) for name, i in pairs if str(name).strip().lower() == text.lower()})
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ValueError(f"target {text!r} names {len(hits)} {what} ({hits}); give the index")
    near = [str(name) for name, _ in pairs if text.lower() in str(name).lower()][:5]
    if near:
        hint = f" (did you mean {', '.join(map(repr, near))}?)"
    elif len(pairs) <= 10:
        hint = f" (its {what}: {', '.join(repr(str(name)) for name, _ in pairs)})"
    else:
        hint = ""
    raise ValueError(f"target {text!r} is none of this model's {what}{hint}; give an index "
                     f"0..{size - 1} or an exact name")
