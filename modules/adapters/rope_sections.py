"""Sectioned rotary encodings as positional sources of their own (docs/method.md, "M-RoPE
sections"), and rotary leaves shared by every layer of a packed vision tower.

Qwen2-VL's multimodal RoPE (M-RoPE) splits the ``head_dim / 2`` rotary frequencies of its
language model into sections (``mrope_section``, e.g. 16 / 24 / 24): the first rotates by each
token's temporal index, the second by its height index, the third by its width index (text
tokens have the same index in all three). The stock code builds one cos/sin of ``head_dim``
channels laid out ``[s_0 s_1 s_2 | s_0 s_1 s_2]`` (the frequencies, then repeated for
``rotate_half``). Its vision tower's 2-D RoPE is the same with two equal sections (height,
width). Each channel of cos/sin belongs to exactly one section, and RoPE's products
``q cos + rot(q) sin`` are elementwise in the channels, so splitting a cos (or sin) leaf into
one leaf per section is exact: the relevance of the sections sums to the relevance of the
unsplit leaf, and each section's is the positional relevance of its own axis.
"""
from __future__ import annotations

import torch

from ..rules import scale_grad

__all__ = ["section_sizes", "section_channels", "Sectioned", "sectioned_leaf", "assemble",
           "install_shared_rotary", "halve_qk_of_fused_qkv"]


def section_sizes(config, names: tuple[str, ...], width: int) -> list[int]:
    """The frequencies of each section in a cos/sin of ``width`` channels: the config's
    ``mrope_section`` (in ``rope_parameters`` or ``rope_scaling``) when it names one per
    section, else ``width / 2`` split equally (a 2-D axial RoPE)."""
    half = width // 2
    for holder in ("rope_parameters", "rope_scaling"):
        params = getattr(config, holder, None) or {}
        if isinstance(params, dict) and params.get("mrope_section") is not None:
            if params.get("mrope_interleaved"):
                raise NotImplementedError("interleaved M-RoPE sections are not supported")
            sizes = [int(s) for s in params["mrope_section"]]
            if len(sizes) == len(names) and sum(sizes) == half:
                return sizes
            raise RuntimeError(f"mrope_section {sizes} does not split {half} rotary "
                               f"frequencies into the sections {names}")
    if half % len(names):
        raise RuntimeError(f"{half} rotary frequencies do not split into {len(names)} sections")
    return [half // len(names)] * len(names)


def section_channels(sizes: list[int], width: int, device) -> list[torch.Tensor]:
    """Channel indices of each section in a ``[s_0 s_1 ... | s_0 s_1 ...]`` cos/sin."""
    half = width // 2
    out, start = [], 0
    for size in sizes:
        block = torch.arange(start, start + size, device=device)
        out.append(torch.cat([block, block + half]))
        start += size
    return out


class Sectioned:
    """One cos (or sin) as its section leaves; :meth:`tensor` rebuilds it (values the stock
    ones). The leaves are made once per pass; the rebuild is done at every use, so that a
    layer recomputed under gradient checkpointing records the same operations again."""

    def __init__(self, pieces: list[torch.Tensor], order: torch.Tensor):
        self.pieces, self.order = pieces, order

    def tensor(self) -> torch.Tensor:
        return torch.cat(self.pieces, dim=-1).index_select(-1, self.order)


def assemble(value):
    """A :class:`Sectioned` rebuilt into its tensor; any other value as it is."""
    return value.tensor() if isinstance(value, Sectioned) else value


def sectioned_leaf(source, tensor: torch.Tensor, batch: int, label: str,
                   names: tuple[str, ...], sizes: list[int]):
    """``tensor`` (a cos or sin, channels last) as one positional leaf per section, labelled
    ``f"{label}:{name}"`` (a :class:`Sectioned`; :func:`assemble` rebuilds the tensor).
    Without attribution (the AttnLRP baseline) the tensor detached."""
    if not source.attribute:
        return tensor.detach()
    channels = section_channels(sizes, tensor.shape[-1], tensor.device)
    pieces = [source.leaf(tensor.index_select(-1, index), batch, f"{label}:{name}")
              for name, index in zip(names, channels)]
    return Sectioned(pieces, torch.cat(channels).argsort())


def install_shared_rotary(patcher, part) -> None:
    """Make the output ``(cos, sin)`` of the part's rotary module (``Family.rotary_module``)
    its positional leaves: one cos and one sin (per section, if the family has sections) for
    the whole pass, every layer reading them (the stock code computes them once and passes
    them to every block). The tensors are (tokens, channels), all images of the batch packed
    on one axis: the leaves are (1, tokens, ...), their relevance read per packed token. The
    gradient reaching them is halved once, which halves it at every layer's rotary product
    (the uniform rule on ``q cos``, ``rot(q) sin``, and the same for k)."""
    family = part.family
    module = part.module.get_submodule(family.rotary_module)

    def make(original):
        def forward(*args, **kwargs):
            cos, sin = original(*args, **kwargs)
            if not part.source.attribute:
                return cos, sin
            out = []
            for label, tensor in (("cos", cos), ("sin", sin)):
                packed = tensor.unsqueeze(0)
                if family.rope_sections:
                    sizes = section_sizes(part.module.config, family.rope_sections,
                                          tensor.shape[-1])
                    leaf = assemble(sectioned_leaf(part.source, packed, 1, label,
                                                   family.rope_sections, sizes))
                else:
                    leaf = part.source.leaf(packed, 1, label)
                out.append(scale_grad(leaf, 0.5)[0])
            return tuple(out)
        return forward

    patcher.wrap_forward(module, make)


def halve_qk_of_fused_qkv(part):
    """Rule for a fused ``qkv`` linear (q, k, v of equal width) whose heads are rotated over
    their whole width: the q and k channels' gradient halved (the uniform rule's share of q, k
    in the rotary products), v's kept. Without attribution nothing changes."""
    def make(module, original):
        def forward(x, *args, **kwargs):
            out = original(x, *args, **kwargs)
            if not part.source.attribute:
                return out
            width = out.shape[-1] // 3
            scale = torch.ones(out.shape[-1], device=out.device, dtype=out.dtype)
            scale[:2 * width] = 0.5
            return scale_grad(out, scale)
        return forward
    return make
