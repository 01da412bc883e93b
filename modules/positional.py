"""THE positional-encoding relevance rule of PA-LRP (docs/method.md; the paper's section 3), for
both modalities.

Two shared pieces serve every family, vision and text:

- :class:`PositionalSource`: makes the leaves where a model mixes position in (an added
  ``pos_embed`` or ``wpe`` output; each layer's rotary cos/sin, 1-D or 2-D) and reads their
  relevance as one (B, K, N) tensor: K sinks per position (1 for an additive encoding, 2 per
  layer for rotary cos/sin), N positions of the token sequence (prefix tokens included);
- :func:`combine` with a :class:`Combination`: folds token (or pixel) relevance and positional
  relevance into one map, with the paper's variants (single norm, per-part norm, PE only,
  signed PE terms, PE term clamped, final map clamped).

Positional encodings are inputs of their own: the engine makes them leaves of the autograd
graph, and their relevance is ``leaf * leaf.grad`` like any input's.

- Additive PE (learned ``pos_embed``, GPT-2's ``wpe``, BERT's position embeddings):
  ``z = E + P`` is a plain addition, i.e. the epsilon rule ``R(P) = P R(z) / (E + P)``; the
  leaf is what the model adds. :func:`spread_patch_grid` spreads a patch-grid map uniformly over
  each patch's pixels.
- Rotary PE (1-D in the language models, 2-D axial in EVA-02): one (cos, sin) pair of leaves per
  layer, the uniform rule on each of the four products (the engines halve the gradients reaching
  the leaves and q/k's rotary dims).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "PositionalSource",
    "Combination",
    "combine",
    "VISION_PAPER",
    "TEXT_PAPER",
    "max_abs_normalise",
    "per_unit_seed",
    "spread_patch_grid",
]


# --- patch-grid maps ------------------------------------------------------------------

def spread_patch_grid(grid_map: torch.Tensor, patch_size: tuple[int, int],
                      image_size: tuple[int, int]) -> torch.Tensor:
    """Spread a (B, gh, gw) per-patch relevance uniformly over each patch's pixels.

    Each patch's value is divided by its pixel count and repeated over its ``ph x pw`` pixels,
    so the pixel map sums to the grid map. Pixels the patch grid does not cover (an image size
    not divisible by the patch size, cropped by the conv) get 0; where the grid covers more than
    the image (timm's ``dynamic_img_pad`` pads the image up to whole patches) the map is cut to
    the image. Returns (B, H, W) with (H, W) = ``image_size``.
    """
    ph, pw = patch_size
    per_pixel = grid_map / float(ph * pw)
    pixels = per_pixel.repeat_interleave(ph, dim=-2).repeat_interleave(pw, dim=-1)
    height, width = image_size
    pad_h, pad_w = height - pixels.shape[-2], width - pixels.shape[-1]
    if pad_h > 0 or pad_w > 0:
        pixels = F.pad(pixels, (0, max(pad_w, 0), 0, max(pad_h, 0)))
    return pixels[..., :height, :width]


# --- the shared positional source ----------------------------------------------------------

class PositionalSource:
    """The positional-encoding leaves of one forward pass and their relevance, (B, K, N).

    An engine calls :meth:`leaf` at each place where the model mixes position in, with the
    tensor that the model uses there (after any resampling or scaling: the leaf *is* what is
    added or multiplied), shaped ``(1 or B, n, ...)``: position on dim 1, any trailing dims
    (channels, head dim) are summed when relevance is read. ``offset`` is the index of the
    tensor's first position in the model's token sequence (e.g. a ``pos_embed`` that skips the
    prefix tokens, or a 2-D RoPE applied to the patch tokens only), so relevance lands on the
    right token. ``position_dim`` names another dim as the position one, for a leaf laid out
    otherwise: an attention-score bias ``(B, heads, queries, keys)`` (ALiBi, a relative position
    bias) is read per key with ``position_dim=3``, every other dim summed. ``spread``, a callable
    (B, n) -> (B, m), places a leaf's per-slot relevance on m positions of the stream (from
    ``offset``) when its slots are not the stream's positions one to one: a table resized to
    each image's own patch grid, put on the batch's canvas (SigLIP 2's patch sequences, see
    modules/adapters/patch_sequence.py). Each call adds one sink (one row of K), labelled for display
    (``"pos_embed"``, ``"cos_3"``, ``"sin_3"``, ...).

    With ``attribute=False`` (the AttnLRP baseline) :meth:`leaf` returns the tensor detached, a
    constant, and no sink is recorded.

    Relevance of a leaf is ``leaf * grad`` (gradient x input, docs/method.md), summed over the
    trailing dims: ``p_{k,i} = sum_d R(P_k)[i, d]``.
    """

    def __init__(self, attribute: bool = True):
        self.attribute = bool(attribute)
        self.clear()

    def clear(self) -> None:
        """Forget the leaves of the previous forward pass (call at the start of each)."""
        self._leaves: list[torch.Tensor] = []
        self.labels: list[str] = []
        self._offsets: list[int] = []
        self._position_dims: list[int] = []
        self._spreads: list = []

    def leaf(self, tensor: torch.Tensor, batch_size: int, label: str,
             offset: int = 0, position_dim: int = 1, spread=None) -> torch.Tensor:
        """A per-sample (B, n, ...) leaf with ``tensor``'s values (a (1, n, ...) parameter is
        expanded first, so samples never share a leaf and their relevance never mixes)."""
        if tensor.dim() < 2 or tensor.shape[0] not in (1, batch_size):
            raise ValueError(f"positional tensor {label!r} has shape {tuple(tensor.shape)}; "
                             f"expected (1 or {batch_size}, positions, ...)")
        if not 1 <= position_dim < tensor.dim():
            raise ValueError(f"positional tensor {label!r}: position_dim {position_dim} is not "
                             f"a non-batch dim of shape {tuple(tensor.shape)}")
        if not self.attribute:
            return tensor.detach()
        leaf = tensor.detach().expand(batch_size, *tensor.shape[1:]).clone().requires_grad_(True)
        self._leaves.append(leaf)
        self.labels.append(label)
        self._offsets.append(int(offset))
        self._position_dims.append(int(position_dim))
        self._spreads.append(spread)
        return leaf

    def leaves(self) -> list[torch.Tensor]:
        """The leaves of the latest forward pass, in the order they were made."""
        return list(self._leaves)

    def relevance(self, grads, num_positions: int, dtype=None) -> torch.Tensor | None:
        """(B, K, N) relevance from the gradients of :meth:`leaves` (``None`` entries, for a
        leaf the score does not depend on, count as 0). ``None`` without attribution."""
        if not self.attribute:
            return None
        grads = list(grads)
        if len(grads) != len(self._leaves):
            raise ValueError(f"{len(grads)} gradients for {len(self._leaves)} positional leaves")
        if not self._leaves:
            raise RuntimeError("no positional leaf was made in the forward pass; the model "
                               "did not reach its positional encoding")
        first = self._leaves[0]
        dtype = dtype or first.dtype
        out = torch.zeros(first.shape[0], len(self._leaves), num_positions, dtype=dtype,
                          device=first.device)
        for k, (leaf, grad, offset, dim, spread) in enumerate(
                zip(self._leaves, grads, self._offsets, self._position_dims, self._spreads)):
            if grad is None:
                continue
            product = (leaf.detach().to(dtype) * grad.to(dtype)).movedim(dim, 1)
            per_position = product.flatten(2).sum(-1)
            if spread is not None:
                per_position = spread(per_position)
            out[:, k, offset:offset + per_position.shape[1]] = per_position
        return out


# --- the one combine step ---------------------------------------------------------------------

@dataclass(frozen=True)
class Combination:
    """How token (or pixel) relevance ``t`` (B, *P) and positional relevance ``p`` (B, K, *P)
    become one map (docs/method.md, "combining"):

    - ``absolute``: sum ``|p_k|`` over the sinks (the paper's NLP maps), else signed ``p_k``;
    - ``normalise``: ``None`` (raw), ``"single"`` (the sum divided by its max-abs over
      positions, the paper's ``--single-norm``) or ``"per_part"`` (``t`` and each ``p_k``
      first divided by their own max-abs, then summed, then the sum again);
    - ``pe_only``: the positional term alone; ``clamp_pe``: the positional term clamped at 0;
    - ``clamp_map``: the final map clamped at 0 (the paper's vision maps);
    - ``unit_seed``: the relevance is first divided by the explained logit, i.e. expressed for
      ``R(target) = 1``, the paper's vision seed (the engine seeds ``R(target) = logit``; the
      rules are linear in the relevance, so this is exact, and it keeps the sign of a map when
      the explained logit is negative).
    """

    absolute: bool = False
    normalise: str | None = None
    pe_only: bool = False
    clamp_pe: bool = False
    clamp_map: bool = False
    unit_seed: bool = False

    def __post_init__(self):
        if self.normalise not in (None, "single", "per_part"):
            raise ValueError(f"normalise must be None, 'single' or 'per_part', "
                             f"got {self.normalise!r}")


#: The paper's vision map: ``clamp(pixel + pe, min=0)`` for ``R(target) = 1`` (PA-LRP; AttnLRP
#: without ``pe``).
VISION_PAPER = Combination(clamp_map=True, unit_seed=True)
#: The paper's NLP map (``--pe --single-norm``): ``(tok + sum_k |p_k|) / max |...|``.
TEXT_PAPER = Combination(absolute=True, normalise="single")


def max_abs_normalise(x: torch.Tensor, start_dim: int = 1) -> torch.Tensor:
    """Divide by the max-abs over the dims from ``start_dim`` on (the positions); an all-zero
    map stays zero (never NaN)."""
    dims = tuple(range(start_dim, x.dim()))
    peak = x.abs().amax(dim=dims, keepdim=True)
    return x / torch.where(peak > 0, peak, torch.ones_like(peak))


def per_unit_seed(values: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
    """Relevance seeded with ``R(target) = logit`` re-expressed for ``R(target) = 1``: each
    sample divided by its explained logit (a logit of exactly 0 carries no relevance: 0)."""
    shape = (-1,) + (1,) * (values.dim() - 1)
    logit = logit.to(values.dtype).reshape(shape)
    safe = torch.where(logit == 0, torch.ones_like(logit), logit)
    return torch.where(logit == 0, torch.zeros_like(values), values / safe)


def combine(token: torch.Tensor, positional: torch.Tensor | None,
            how: Combination = VISION_PAPER, logit: torch.Tensor | None = None) -> torch.Tensor:
    """The one map of token/pixel relevance ``token`` (B, *P) and positional relevance
    ``positional`` (B, K, *P) (see :class:`Combination`). Without positional relevance (the
    AttnLRP baseline) the map is ``token`` itself (clamped if ``how.clamp_map``).
    ``logit`` (B,): the explained logits, needed by ``how.unit_seed``."""
    if how.unit_seed:
        if logit is None:
            raise ValueError("a unit-seed combination needs the explained logits")
        token = per_unit_seed(token, logit)
        positional = None if positional is None else per_unit_seed(positional, logit)
    if positional is None:
        if how.pe_only:
            raise ValueError("a PE-only map needs positional relevance (an explanation "
                             "computed with positional attribution)")
        out = token
    else:
        if positional.shape[:1] + positional.shape[2:] != token.shape:
            raise ValueError(f"positional relevance {tuple(positional.shape)} does not match "
                             f"token relevance {tuple(token.shape)} as (B, K, *positions)")
        tok, pe = token, positional
        if how.normalise == "per_part":
            tok, pe = max_abs_normalise(tok, 1), max_abs_normalise(pe, 2)
        term = (pe.abs() if how.absolute else pe).sum(dim=1)
        if how.clamp_pe:
            term = term.clamp(min=0)
        out = term if how.pe_only else tok + term
        if how.normalise is not None:
            out = max_abs_normalise(out, 1)
    return out.clamp(min=0) if how.clamp_map else out
