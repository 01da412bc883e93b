"""Images given as patch sequences (SigLIP 2's NaFlex input: ``pixel_values`` (B, N, P*P*C)
patchified by its image processor, each image's grid in ``spatial_shapes`` (B, 2), its real
patches in ``pixel_attention_mask`` (B, N), the rest padding).

- **Position.** ``Siglip2VisionEmbeddings`` resizes its learned (G x G) table to each image's
  grid (bilinear, antialiased) and adds the result, (B, N, D), to the patch embeddings: that
  addend, as added, is the positional leaf (the epsilon rule on the sum, M9), found as the one
  sum of two (B, N, D) tensors in the embeddings' forward (a torch function mode; nothing else
  is changed). Padding positions carry the table's first entry in the stock code; no real query
  attends to them and no pooling reads them, so they get no relevance.
- **Layout.** Each sample's sequence is its own grid in row-major order; the stream reports a
  canvas of the batch's largest grid (rows x columns), each image in its top-left corner:
  patch relevance is unpatchified (the processor's ``(rows, P, cols, P, C)`` order) into
  (B, C, rows * P, cols * P) pixels, and positional relevance is moved to the same canvas
  positions (:meth:`palrp.modules.positional.PositionalSource.leaf` ``spread``). A canvas cell
  outside an image's grid holds 0.
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["factories", "geometry"]

_ADDITIONS = frozenset({torch.add, torch.Tensor.add, torch.Tensor.__add__})


def factories(part) -> dict:
    return {"patch_sequence_embeddings": _embeddings(part)}


def _shapes(part) -> torch.Tensor:
    shapes = part.cache.get("spatial_shapes")
    if shapes is None:
        raise RuntimeError(f"the {part.family.name} part saw no spatial_shapes; pass the image "
                           "processor's spatial_shapes and pixel_attention_mask")
    return shapes


class _SequenceToCanvas:
    """(B, N) per sequence position -> (B, rows * cols) on the batch's canvas."""

    def __init__(self, shapes: torch.Tensor):
        self.shapes = shapes.tolist()
        self.rows = max(h for h, _ in self.shapes)
        self.cols = max(w for _, w in self.shapes)

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros(values.shape[0], self.rows, self.cols)
        for b, (h, w) in enumerate(self.shapes):
            out[b, :h, :w] = values[b, :h * w].reshape(h, w)
        return out.reshape(values.shape[0], -1)


class _TableAdd(TorchFunctionMode):
    def __init__(self, part, spread):
        super().__init__()
        self.part, self.spread = part, spread

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _ADDITIONS and len(args) == 2 and all(
                torch.is_tensor(a) and a.dim() == 3 for a in args) \
                and args[0].shape == args[1].shape:
            table = self.part.source.leaf(args[1], args[0].shape[0], "position_embedding",
                                          spread=self.spread)
            return func(args[0], table, **kwargs)
        return func(*args, **kwargs)


def _embeddings(part):
    def make(module, original):
        def forward(pixel_values, spatial_shapes, *args, **kwargs):
            part.cache["spatial_shapes"] = torch.as_tensor(spatial_shapes).detach().cpu()
            if not part.source.attribute:
                return original(pixel_values, spatial_shapes, *args, **kwargs)
            with _TableAdd(part, _SequenceToCanvas(part.cache["spatial_shapes"])):
                return original(pixel_values, spatial_shapes, *args, **kwargs)
        return forward
    return make


def geometry(part, pixels: torch.Tensor, patch: tuple[int, int]) -> dict | None:
    """The canvas layout of a patch-sequence stream (module docstring), with ``canvas``: the
    per-value relevance (B, N, P*P*C) -> (B, C, rows * P, cols * P); None for other streams."""
    if not part.places_of("patch_sequence_embeddings"):
        return None
    to_canvas = _SequenceToCanvas(_shapes(part))
    ph, pw = patch

    def canvas(values: torch.Tensor) -> torch.Tensor:
        batch, _, width = values.shape
        channels = width // (ph * pw)
        out = values.new_zeros(batch, channels, to_canvas.rows * ph, to_canvas.cols * pw)
        for b, (h, w) in enumerate(to_canvas.shapes):
            image = values[b, :h * w].reshape(h, w, ph, pw, channels)
            out[b, :, :h * ph, :w * pw] = image.permute(4, 0, 2, 1, 3).reshape(
                channels, h * ph, w * pw)
        return out

    return {"patch_size": (ph, pw), "grid": (to_canvas.rows, to_canvas.cols), "prefix": 0,
            "canvas": canvas}
