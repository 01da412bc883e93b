"""Procedural images with exact object masks: the vision half of the embedded default (docs/protocols.md, section 6).

Each image holds one object of one of :data:`CLASS_NAMES` on a cluttered background. Following the
design notes of docs/protocols.md, section 6, the class evidence is *local to the object*: every class has
its own fill texture (stripes, checks, dots, ...), and its own outline. The outline rotates with the
object; the fill pattern keeps the image axes (like a printed fabric seen through a rotated
silhouette), which lets a patch-based model read the class from any single object patch. The background carries no class evidence: smooth colour noise, medium-scale blotches,
flat-coloured distractor blobs and thin lines (none of them textured like an object), plus pixel
noise. Position, scale, rotation, texture period and both texture colours are random.

Everything is defined in image-relative coordinates (the image spans [-1, 1] on both axes), so any
image size renders the same scene at a different resolution. Image ``i`` of seed ``s`` depends only on
``(s, i)``: its parameters come from ``numpy.random.default_rng([s, i])``, and the rendering is
vectorised over the batch, so batch size never changes an image.

Writers: :func:`write_gtsegs_demo` (the ``gtsegs_ijcv.mat`` layout of docs/protocols.md, section 1) and
:func:`write_imagenet_demo` (``val/<class_name>/*.png``, the folder layout of docs/protocols.md, section 2).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# Sorted, so that torchvision's ImageFolder (sorted folder names) gives label i to CLASS_NAMES[i].
CLASS_NAMES = (
    "bricked_cross",
    "checkered_square",
    "dotted_triangle",
    "grid_star",
    "ringed_hexagon",
    "spoked_ellipse",
    "striped_disc",
    "zigzag_diamond",
)
NUM_CLASSES = len(CLASS_NAMES)
assert list(CLASS_NAMES) == sorted(CLASS_NAMES)

# One shape and one texture per class, in CLASS_NAMES order.
_SHAPES = ("cross", "square", "triangle", "star", "hexagon", "ellipse", "disc", "diamond")
_TEXTURES = ("bricks", "checker", "dots", "grid", "rings", "spokes", "stripes", "zigzag")

_N_BLOBS = 6      # distractor blobs per image (some switched off at random)
_N_LINES = 4      # distractor lines per image (some switched off at random)
_LOWRES = 4       # grid of the smooth background colour field
_MIDRES = 12      # grid of the medium-scale luminance blotches


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of the same shape; returns shape + (3,)."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([
        np.stack([v, t, p], -1), np.stack([q, v, p], -1), np.stack([p, v, t], -1),
        np.stack([p, q, v], -1), np.stack([t, p, v], -1), np.stack([v, p, q], -1),
    ], 0)
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear interpolation weights (align_corners=False), for separable upsampling."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - w
    m[np.arange(n_out), hi] += w
    return m


def _draw_params(seed: int, index: int, label: int | None) -> dict:
    """All random numbers of one image, drawn from its own generator."""
    rng = np.random.default_rng([seed, index])
    p = {}
    p["label"] = int(rng.integers(NUM_CLASSES)) if label is None else int(label)
    p["scale"] = rng.uniform(0.4, 0.65)
    lim = 0.95 - p["scale"]
    p["center"] = rng.uniform(-lim, lim, size=2)
    p["angle"] = rng.uniform(0, 2 * np.pi)
    p["period"] = rng.uniform(0.13, 0.19)          # texture period, image units (4-6 px at 64 px)
    p["phase"] = rng.uniform(0, 1, size=2)
    # texture colours: random hues, one light and one dark so the texture is always visible
    hues = rng.uniform(0, 1, size=2)
    sats = rng.uniform(0.3, 1.0, size=2)
    vals = np.array([rng.uniform(0.75, 1.0), rng.uniform(0.05, 0.4)])
    if rng.uniform() < 0.5:
        vals = vals[::-1].copy()
    p["obj_colors"] = _hsv_to_rgb(hues, sats, vals)
    # background: smooth colour field around a base colour, medium blotches
    base = _hsv_to_rgb(rng.uniform(0, 1, 1), rng.uniform(0.1, 0.8, 1), rng.uniform(0.3, 0.9, 1))[0]
    p["bg_low"] = np.clip(base + rng.normal(0, 0.15, size=(_LOWRES, _LOWRES, 3)), 0, 1)
    p["bg_mid"] = rng.normal(0, 0.07, size=(_MIDRES, _MIDRES))
    # distractor blobs: ellipses / rectangles with flat colours
    p["blob_on"] = rng.uniform(size=_N_BLOBS) < 0.6
    p["blob_center"] = rng.uniform(-1, 1, size=(_N_BLOBS, 2))
    p["blob_axes"] = rng.uniform(0.08, 0.4, size=(_N_BLOBS, 2))
    p["blob_angle"] = rng.uniform(0, np.pi, size=_N_BLOBS)
    p["blob_rect"] = rng.uniform(size=_N_BLOBS) < 0.4
    p["blob_color"] = _hsv_to_rgb(*(rng.uniform(lo, hi, _N_BLOBS) for lo, hi in
                                    ((0, 1), (0.0, 0.9), (0.1, 1.0))))
    # distractor lines
    p["line_on"] = rng.uniform(size=_N_LINES) < 0.6
    p["line_point"] = rng.uniform(-1, 1, size=(_N_LINES, 2))
    p["line_angle"] = rng.uniform(0, np.pi, size=_N_LINES)
    p["line_width"] = rng.uniform(0.015, 0.04, size=_N_LINES)
    p["line_color"] = _hsv_to_rgb(*(rng.uniform(lo, hi, _N_LINES) for lo, hi in
                                    ((0, 1), (0.0, 0.9), (0.0, 1.0))))
    p["noise_seed"] = int(rng.integers(2**31))
    return p


def _stack(params: list[dict], key: str) -> np.ndarray:
    return np.stack([np.asarray(p[key], dtype=np.float64) for p in params])


def _shape_mask(name: str, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Inside-test of one shape in the object frame (unit circumradius); boolean, same shape as sx."""
    if name == "cross":
        ax, ay = np.abs(sx), np.abs(sy)
        return (ax < 0.36) & (ay < 0.95) | (ay < 0.36) & (ax < 0.95)
    if name == "square":
        return np.maximum(np.abs(sx), np.abs(sy)) <= 0.75
    if name == "ellipse":
        return sx ** 2 + (sy / 0.6) ** 2 <= 1
    if name == "diamond":
        return np.abs(sx) + np.abs(sy) / 0.75 <= 1
    r = np.hypot(sx, sy)
    if name == "disc":
        return r <= 0.85
    phi = np.arctan2(sy, sx)
    if name == "star":
        return r <= 0.45 + 0.55 * np.abs(1 - 2 * np.mod(phi * 5 / (2 * np.pi) + 0.25, 1.0)) ** 1.5
    n, rot = {"triangle": (3, np.pi / 2), "hexagon": (6, 0.0)}[name]
    sector = 2 * np.pi / n
    return r * np.cos(np.mod(phi + rot, sector) - sector / 2) <= np.cos(sector / 2)


def _texture(name: str, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """One two-colour fill pattern in period units, centred on the object; values in {0,1}."""
    fx, fy = np.mod(tx, 1.0), np.mod(ty, 1.0)
    if name == "bricks":
        out = (fy < 0.25) | (np.mod(tx / 2 + 0.5 * np.mod(np.floor(ty), 2), 1.0) < 0.12)
    elif name == "checker":
        out = np.mod(np.floor(tx) + np.floor(ty), 2) == 0
    elif name == "dots":
        out = (fx - 0.5) ** 2 + (fy - 0.5) ** 2 < 0.32 ** 2
    elif name == "grid":
        out = np.minimum(np.abs(fx - 0.5), np.abs(fy - 0.5)) < 0.14
    elif name == "rings":
        out = np.mod(np.hypot(tx, ty), 1.0) < 0.5
    elif name == "spokes":
        out = np.mod(np.arctan2(ty, tx) * 10 / (2 * np.pi), 1.0) < 0.5
    elif name == "stripes":
        out = fx < 0.5
    else:  # zigzag
        out = np.mod(ty + np.abs(fx - 0.5) * 1.6, 1.0) < 0.5
    return out.astype(np.float32)


# rings and spokes are drawn around the object's centre; the others get a random phase
_CENTRED = ("rings", "spokes")


def _upsample(grid: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Separable bilinear upsampling of (B,g,g,...) with the (size,g) matrix ``m``."""
    out = np.tensordot(m, grid, axes=([1], [1]))              # (H, B, g, ...)
    out = np.tensordot(m, out, axes=([1], [2]))               # (W, H, B, ...)
    return np.moveaxis(out, (0, 1, 2), (2, 1, 0))            # (B, H, W, ...)


def render(params: list[dict], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render a batch of parameter sets; returns uint8 images (B,H,W,3) and uint8 masks (B,H,W) in {0,1}."""
    if size < 8:
        raise ValueError(f"image size {size} is too small; use at least 8 pixels")
    b = len(params)
    coords = ((np.arange(size) + 0.5) / size * 2 - 1).astype(np.float32)
    v, u = np.meshgrid(coords, coords, indexing="ij")   # v: rows (down), u: columns (right)
    u, v = u[None], v[None]

    def col(key: str) -> np.ndarray:   # per-image scalars as (B,1,1) float32
        return _stack(params, key).astype(np.float32).reshape(b, 1, 1)

    # background: smooth colour field + medium luminance blotches
    img = _upsample(_stack(params, "bg_low"), _interp_matrix(size, _LOWRES))
    img = img + _upsample(_stack(params, "bg_mid"), _interp_matrix(size, _MIDRES))[..., None]
    img = img.astype(np.float32)

    # distractor blobs (flat colour, no texture)
    bc, ba = _stack(params, "blob_center").astype(np.float32), _stack(params, "blob_axes").astype(np.float32)
    bang, bcol = _stack(params, "blob_angle"), _stack(params, "blob_color").astype(np.float32)
    on, rect = _stack(params, "blob_on").astype(bool), _stack(params, "blob_rect").astype(bool)
    for k in range(_N_BLOBS):
        c = np.cos(bang[:, k]).astype(np.float32)[:, None, None]
        s = np.sin(bang[:, k]).astype(np.float32)[:, None, None]
        du, dv = u - bc[:, k, 0, None, None], v - bc[:, k, 1, None, None]
        xx = (c * du + s * dv) / ba[:, k, 0, None, None]
        yy = (-s * du + c * dv) / ba[:, k, 1, None, None]
        inside = np.where(rect[:, k, None, None], np.maximum(np.abs(xx), np.abs(yy)) <= 1,
                          xx ** 2 + yy ** 2 <= 1) & on[:, k, None, None]
        np.copyto(img, bcol[:, k, None, None, :], where=inside[..., None])

    # distractor lines
    lp, lang = _stack(params, "line_point").astype(np.float32), _stack(params, "line_angle")
    lw, lcol = _stack(params, "line_width").astype(np.float32), _stack(params, "line_color").astype(np.float32)
    lon = _stack(params, "line_on").astype(bool)
    for k in range(_N_LINES):
        dist = np.abs(-np.sin(lang[:, k]).astype(np.float32)[:, None, None] * (u - lp[:, k, 0, None, None])
                      + np.cos(lang[:, k]).astype(np.float32)[:, None, None] * (v - lp[:, k, 1, None, None]))
        inside = (dist <= lw[:, k, None, None]) & lon[:, k, None, None]
        np.copyto(img, lcol[:, k, None, None, :], where=inside[..., None])

    # the object: outline in its rotated frame, fill pattern in image axes, one class at a time
    labels = np.array([p["label"] for p in params])
    center = _stack(params, "center").astype(np.float32)
    angle, phase = col("angle"), _stack(params, "phase").astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    du, dv = u - center[:, 0, None, None], v - center[:, 1, None, None]
    lx, ly = c * du + s * dv, -s * du + c * dv
    sx, sy = lx / col("scale"), ly / col("scale")
    tx, ty = du / col("period"), dv / col("period")   # the fill pattern keeps the image axes
    mask = np.zeros((b, size, size), dtype=bool)
    tex = np.zeros((b, size, size), dtype=np.float32)
    for k in np.unique(labels):
        i = labels == k
        mask[i] = _shape_mask(_SHAPES[k], sx[i], sy[i])
        shift = 0.0 if _TEXTURES[k] in _CENTRED else phase[i]
        px = shift if np.isscalar(shift) else shift[:, 0, None, None]
        py = shift if np.isscalar(shift) else shift[:, 1, None, None]
        tex[i] = _texture(_TEXTURES[k], tx[i] + px, ty[i] + py)
    cols = _stack(params, "obj_colors").astype(np.float32)
    t = tex[..., None]
    obj = t * cols[:, 0, None, None, :] + (1 - t) * cols[:, 1, None, None, :]
    np.copyto(img, obj, where=mask[..., None])

    # pixel noise, one generator per image
    noise = np.stack([np.random.default_rng(p["noise_seed"]).standard_normal((size, size, 3), dtype=np.float32)
                      for p in params])
    img = np.clip(img + 0.03 * noise, 0, 1)
    return (img * 255 + 0.5).astype(np.uint8), mask.astype(np.uint8)


def generate(seed: int, indices, size: int = 64, labels=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images ``indices`` of the procedural set ``seed`` (docs/protocols.md, section 6).

    ``labels``: ``None`` draws each image's class at random; otherwise one class per index.
    Returns uint8 images (B,H,W,3), uint8 masks (B,H,W) in {0,1}, and int64 labels (B,).
    """
    indices = [int(i) for i in indices]
    if labels is None:
        labels = [None] * len(indices)
    elif len(labels) != len(indices):
        raise ValueError(f"got {len(labels)} labels for {len(indices)} indices; give one label per index")
    for lab in labels:
        if lab is not None and not 0 <= int(lab) < NUM_CLASSES:
            raise ValueError(f"label {lab} is out of range; labels go from 0 to {NUM_CLASSES - 1}")
    params = [_draw_params(seed, i, lab) for i, lab in zip(indices, labels)]
    images, masks = render(params, size)
    return images, masks, np.array([p["label"] for p in params], dtype=np.int64)


def balanced_labels(n: int) -> list[int]:
    """Labels 0,1,...,C-1,0,1,... for a class-balanced set of ``n`` images."""
    return [i % NUM_CLASSES for i in range(n)]


def write_gtsegs_demo(path: str | Path, n_images: int, size: int = 64, seed: int = 0,
                      chunk: int = 64) -> Path:
    """Write ``n_images`` balanced procedural images and masks in the ``gtsegs_ijcv.mat`` layout (docs/protocols.md, section 1).

    Written to a temporary name and renamed, so a crash never leaves a half-written file.
    """
    from palrp.data.gtsegs import write_gtsegs

    path = Path(path)
    labels = balanced_labels(n_images)
    images, masks = [], []
    for start in range(0, n_images, chunk):
        idx = list(range(start, min(start + chunk, n_images)))
        im, mk, _ = generate(seed, idx, size, [labels[i] for i in idx])
        images.extend(im)
        masks.extend(mk)
    from palrp.runtime.store import atomic_output
    with atomic_output(path) as tmp:
        write_gtsegs(tmp, images, masks)
    return path


def write_imagenet_demo(root: str | Path, n_per_class: int, size: int = 64, seed: int = 1,
                        chunk: int = 64) -> Path:
    """Write a balanced procedural set as ``root/val/<class_name>/<index>.png`` (the layout of docs/protocols.md, section 2).

    The class folders are :data:`CLASS_NAMES`, whose sorted order is the model's label order.
    Returns ``root``.
    """
    from PIL import Image

    root = Path(root)
    n = n_per_class * NUM_CLASSES
    labels = balanced_labels(n)
    from palrp.runtime.store import atomic_output
    for name in CLASS_NAMES:
        (root / "val" / name).mkdir(parents=True, exist_ok=True)
    for start in range(0, n, chunk):
        idx = list(range(start, min(start + chunk, n)))
        im, _, lab = generate(seed, idx, size, [labels[i] for i in idx])
        for i, img, y in zip(idx, im, lab):
            out = root / "val" / CLASS_NAMES[y] / f"{i:06d}.png"
            with atomic_output(out, suffix=".png") as tmp:
                Image.fromarray(img).save(tmp)
    return root
