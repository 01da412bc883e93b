"""The one result type of :func:`palrp.explain`: relevance per input stream, positional
relevance per stream, and the paper's merged maps (docs/method.md, "Maps").

A **stream** is one input of the model's forward that carries evidence: ``"pixel_values"``
(images; relevance per patch of the grid, row-major, prefix tokens excluded, and per pixel),
``"input_ids"`` (relevance per token), ``"token_type_ids"`` (the token-type embeddings of a
BERT-like model). For each stream the :class:`Stream` record keeps every positional sink
(K of them: one for an added table, a cos and a sin per layer for rotary encodings) over the
whole token sequence of that stream (prefix tokens included), with its labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .positional import Combination, combine, spread_patch_grid

__all__ = ["Explanation", "Stream", "check_finite"]


@dataclass
class Stream:
    """One input stream's relevance.

    - ``relevance``: (B, N) per token, or per patch for images (each patch's pixels summed);
    - ``sinks``: (B, K, T) relevance of each positional sink at each of the stream's T
      sequence positions (T = ``prefix`` + N for images), ``None`` without positional
      attribution; ``labels``: the K sinks' names (``pos_embed``, ``cos_3``, ...);
    - images: ``channels`` (B, C, H, W) relevance of each pixel value, ``pixels`` (B, H, W)
      the channels summed, ``grid`` (gh, gw), ``patch_size`` (ph, pw), ``prefix`` (class /
      distillation / register tokens);
    - tokens: ``mask`` (B, S), 1 for a real token;
    - ``combination``: the family's paper map; ``family``: the family that read the stream.
    """

    kind: str
    relevance: torch.Tensor
    sinks: torch.Tensor | None
    labels: tuple[str, ...]
    combination: Combination
    family: str
    prefix: int = 0
    pixels: torch.Tensor | None = None
    channels: torch.Tensor | None = None
    grid: tuple[int, int] | None = None
    patch_size: tuple[int, int] | None = None
    mask: torch.Tensor | None = None

    @classmethod
    def image(cls, *, channels, sinks, labels, prefix, grid, patch_size, combination, family):
        pixels = channels.sum(dim=1)
        return cls(kind="image", relevance=_per_patch(pixels, grid, patch_size), sinks=sinks,
                   labels=labels, prefix=prefix, pixels=pixels, channels=channels,
                   grid=tuple(grid), patch_size=tuple(patch_size), combination=combination,
                   family=family)

    @classmethod
    def tokens(cls, *, relevance, sinks, labels, mask, combination, family):
        return cls(kind="tokens", relevance=relevance, sinks=sinks, labels=labels, mask=mask,
                   combination=combination, family=family)

    @property
    def positional(self) -> torch.Tensor | None:
        """(B, N): the positional relevance at each position, all sinks summed (prefix
        tokens excluded for images); ``None`` without positional attribution."""
        if self.sinks is None:
            return None
        return self.sinks[:, :, self.prefix:].sum(1)

    @property
    def sections(self) -> dict[str, torch.Tensor]:
        """Positional relevance per rotary section (docs/method.md, "M-RoPE sections"):
        section name (``"temporal"``, ``"height"``, ``"width"``) -> (B, N), the sinks labelled
        ``"<leaf>:<section>"`` summed (prefix tokens excluded for images). The sections of a
        stream sum to :attr:`positional`. Empty for a stream without sections or without
        positional attribution."""
        if self.sinks is None:
            return {}
        out: dict[str, torch.Tensor] = {}
        for k, label in enumerate(self.labels):
            if ":" in label:
                name = label.rsplit(":", 1)[1]
                values = self.sinks[:, k, self.prefix:]
                out[name] = out[name] + values if name in out else values.clone()
        return out

    @property
    def prefix_positional(self) -> torch.Tensor | None:
        """(B, K, prefix): the sinks' relevance at the prefix tokens of an image stream."""
        if self.sinks is None:
            return None
        return self.sinks[:, :, :self.prefix]

    def positional_pixels(self, per_sink: bool = False) -> torch.Tensor | None:
        """The positional relevance of an image stream spread uniformly over each patch's
        pixels: (B, H, W), or (B, K, H, W) per sink."""
        if self.kind != "image":
            raise ValueError("positional_pixels is for image streams")
        if self.sinks is None:
            return None
        gh, gw = self.grid
        grid = self.sinks[:, :, self.prefix:]
        batch, k, _ = grid.shape
        if not per_sink:
            grid = grid.sum(1, keepdim=True)
            k = 1
        size = tuple(self.pixels.shape[-2:])
        spread = spread_patch_grid(grid.reshape(batch * k, gh, gw), self.patch_size, size)
        spread = spread.reshape(batch, k, *size)
        return spread if per_sink else spread[:, 0]


def _per_patch(pixels: torch.Tensor, grid, patch_size) -> torch.Tensor:
    """(B, H, W) -> (B, gh * gw): each patch's pixels summed (pixels the grid does not cover
    carry no relevance; a grid padded beyond the image sums zeros)."""
    gh, gw = grid
    ph, pw = patch_size
    batch, height, width = pixels.shape
    need_h, need_w = gh * ph, gw * pw
    canvas = pixels[:, :need_h, :need_w]
    if canvas.shape[-2:] != (need_h, need_w):
        canvas = torch.nn.functional.pad(canvas, (0, need_w - canvas.shape[-1],
                                                  0, need_h - canvas.shape[-2]))
    return canvas.reshape(batch, gh, ph, gw, pw).sum(dim=(2, 4)).reshape(batch, gh * gw)


@dataclass
class Explanation:
    """Result of :func:`palrp.explain` for a batch of B samples.

    - ``method``: ``pa_lrp``, ``attn_lrp`` or ``pe_only``;
    - ``logits``: (B, C) the explained output row (at the explained position of a causal LM);
      ``target``: (B,) the explained index; ``positions``: (B,) the explained sequence
      position of a text model (``None`` for images; for an encoder-decoder, in the decoder
      prefix); ``attention_mask``: (B, S) or None (an encoder-decoder's encoder mask; each
      stream's own mask is ``streams[stream].mask``);
    - ``relevance``: stream name -> (B, N) relevance per token or per patch;
    - ``positional``: the same keys -> (B, N) positional relevance at each position, ``None``
      where the stream has no positional encoding or the method has none;
    - ``streams``: the full :class:`Stream` records (sinks, pixels, geometry);
    - ``rules``: family name -> the :class:`palrp.modules.rules.RuleSet` used;
      ``families``: the families of the model's parts, the root's first.

    Relevance is seeded with ``R(target) = logit`` (float32; float64 for a float64 model).
    """

    method: str
    logits: torch.Tensor
    target: torch.Tensor
    streams: dict[str, Stream]
    positions: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    rules: dict = field(default_factory=dict)
    families: tuple[str, ...] = ()

    @property
    def relevance(self) -> dict[str, torch.Tensor]:
        return {name: s.relevance for name, s in self.streams.items()}

    @property
    def positional(self) -> dict[str, torch.Tensor | None]:
        return {name: s.positional for name, s in self.streams.items()}

    def positional_sections(self, stream: str | None = None) -> dict[str, torch.Tensor]:
        """One stream's positional relevance per rotary section: section -> (B, N)
        (:attr:`Stream.sections`; e.g. Qwen2-VL's M-RoPE ``temporal``, ``height``, ``width``
        on ``input_ids``, its vision tower's ``height``, ``width`` on ``pixel_values``)."""
        return self._stream(stream)[1].sections

    @property
    def explained_logit(self) -> torch.Tensor:
        """(B,) the logit of each sample's target: what its relevance sums to."""
        return self.logits.gather(1, self.target[:, None].to(self.logits.device))[:, 0]

    def _stream(self, stream: str | None) -> tuple[str, Stream]:
        if stream is None:
            stream = next(iter(self.streams))
        if stream not in self.streams:
            raise KeyError(f"no stream {stream!r}; this explanation has {list(self.streams)}")
        return stream, self.streams[stream]

    def combined(self, stream: str | None = None, how: Combination | None = None,
                 **changes) -> torch.Tensor:
        """The paper's merged map of one stream (the first one by default), by
        :func:`palrp.modules.positional.combine`.

        ``how``: a :class:`Combination` (default: the stream family's paper map, with
        ``pe_only`` set for a ``pe_only`` explanation); ``changes``: fields of it to override
        (``absolute``, ``normalise``, ``pe_only``, ``clamp_pe``, ``clamp_map``, ``unit_seed``).

        Images give (B, H, W): the paper's vision map is ``clamp(pixel + pe, 0)`` for
        ``R(target) = 1``, the positional relevance of each patch spread over its pixels.
        Tokens give (B, S): the paper's NLP map ``(tok + sum_k |p_k|) / max |...|``. Without
        positional relevance (``attn_lrp``) the map is the token/pixel relevance alone.
        """
        name, record = self._stream(stream)
        how = how or replace(record.combination, pe_only=self.method == "pe_only")
        if changes:
            how = replace(how, **changes)
        logit = self.explained_logit
        if record.kind == "image":
            positional = None
            if record.sinks is not None:
                per_sink = how.absolute or how.normalise == "per_part"
                positional = record.positional_pixels(per_sink=per_sink)
                if not per_sink:
                    positional = positional[:, None]
            return combine(record.pixels, positional, how, logit)
        return combine(record.relevance, record.sinks, how, logit)

    def record(self) -> dict:
        """JSON-ready description of how the maps were made."""
        return {"method": self.method,
                "families": list(self.families),
                "rules": {name: rules.to_dict() for name, rules in self.rules.items()},
                "streams": {name: {"kind": s.kind, "positional_sinks": list(s.labels),
                                   "prefix_tokens": int(s.prefix)}
                            for name, s in self.streams.items()}}

    def check_finite(self) -> None:
        for name, s in self.streams.items():
            check_finite(s.relevance, f"{name} relevance")
            check_finite(s.sinks, f"{name} positional relevance")
            check_finite(s.pixels, f"{name} pixel relevance")


def check_finite(values, name: str) -> None:
    """A NaN or infinity anywhere in a result is an error (one line naming the sample)."""
    if values is None:
        return
    bad = ~torch.isfinite(values.detach())
    if bool(bad.any()):
        sample = int(bad.reshape(bad.shape[0], -1).any(-1).nonzero()[0])
        raise FloatingPointError(
            f"non-finite {name} (NaN or inf) for sample {sample} of the batch: the model "
            f"overflows or is undefined on this input in its dtype; try float32 or float64, "
            "and check the weights for NaN")
