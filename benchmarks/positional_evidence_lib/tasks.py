"""Tasks whose label depends on position (or, for the controls, ignores it), with the evidence of
each sample known exactly.

Every task draws samples from a seeded generator and returns a :class:`Batch`: the inputs, the
labels, and ``evidence`` (B, N), True at the positions (tokens, or grid cells of an image) that
carry the evidence of the label. ``label_of`` recomputes a label from an input alone, so that a
test can check that the label is a function of the evidence alone (changing any non-evidence
position leaves it unchanged).

Text sequences have ``TEXT_LENGTH`` positions: position 0 is a fixed ``[CLS]`` token (never
evidence), positions 1.. are content. Token ids: 0 ``[CLS]``, 1 padding (never used: all
sequences have the same length), 2..5 the four marker types, 6.. the filler / content tokens.
Images are ``GRID`` x ``GRID`` cells of ``CELL`` pixels (one ViT patch per cell), Gaussian
background noise, and one object drawn exactly inside one cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

CLS, PAD = 0, 1
MARKERS = (2, 3, 4, 5)
FILLERS = tuple(range(6, 22))
VOCAB = 22
TEXT_LENGTH = 12                     # [CLS] + 11 content positions
CONTENT = tuple(range(1, TEXT_LENGTH))
COPY_K = 4                           # copy_kth: the label is the class of the token at this position
COPY_CLASSES = 8                     # copy_kth: tokens of FILLERS[:8]
GRID, CELL = 4, 4                    # 16 cells of 4 x 4 px -> 16 px images
NOISE = 0.5


@dataclass
class Batch:
    inputs: torch.Tensor             # (B, N) token ids or (B, 3, H, W) images
    labels: torch.Tensor             # (B,)
    evidence: torch.Tensor           # (B, N) bool; N = positions (text) or cells (images)


@dataclass(frozen=True)
class Task:
    name: str
    kind: str                        # "text" or "vision"
    position_is_evidence: bool
    num_classes: int
    control_of: str | None           # the position task whose inputs this control shares
    description: str
    sample: Callable[[int, torch.Generator], Batch]
    label_of: Callable[[torch.Tensor], torch.Tensor]
    evidence_of: Callable[[torch.Tensor], torch.Tensor]

    @property
    def positions(self) -> int:
        return TEXT_LENGTH if self.kind == "text" else GRID * GRID


# --- text ---------------------------------------------------------------------------

def _fillers(n: int, g: torch.Generator, pool=FILLERS) -> torch.Tensor:
    pool = torch.tensor(pool)
    ids = pool[torch.randint(len(pool), (n, TEXT_LENGTH), generator=g)]
    ids[:, 0] = CLS
    return ids


def _marker_position(ids: torch.Tensor) -> torch.Tensor:
    """(B,) the position of the (single) marker of each sequence."""
    is_marker = (ids >= MARKERS[0]) & (ids <= MARKERS[-1])
    return is_marker.float().argmax(dim=1)


def _one_hot(positions: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(positions, n).bool()


def _with_marker(n, g, positions, types=None):
    ids = _fillers(n, g)
    pos = torch.tensor(positions)[torch.randint(len(positions), (n,), generator=g)]
    marker = torch.full((n,), MARKERS[0]) if types is None else \
        torch.tensor(types)[torch.randint(len(types), (n,), generator=g)]
    ids[torch.arange(n), pos] = marker
    return ids


def _marker_slot_label(ids):
    return _marker_position(ids) - 1


def _marker_evidence(ids):
    return _one_hot(_marker_position(ids), ids.shape[1])


def _marker_slot(n, g):
    ids = _with_marker(n, g, CONTENT)
    return Batch(ids, _marker_slot_label(ids), _marker_evidence(ids))


def _marker_type_label(ids):
    return ids.gather(1, _marker_position(ids)[:, None])[:, 0] - MARKERS[0]


def _marker_type(n, g):
    ids = _with_marker(n, g, CONTENT, MARKERS)
    return Batch(ids, _marker_type_label(ids), _marker_evidence(ids))


SWITCH_FIRST, SWITCH_LAST = CONTENT[0], CONTENT[-1]          # the positions the two rules read
SWITCH_MARKERS = CONTENT[1:-1]                               # where the marker may be
SWITCH_HALF = SWITCH_MARKERS[len(SWITCH_MARKERS) // 2]       # marker before it: rule A


def _parity(tokens):
    return (tokens - FILLERS[0]) % 2


def _switch_read_position(ids):
    return torch.where(_marker_position(ids) < SWITCH_HALF, SWITCH_FIRST, SWITCH_LAST)


def _rule_switch_label(ids):
    return _parity(ids.gather(1, _switch_read_position(ids)[:, None])[:, 0])


def _rule_switch_evidence(ids):
    n = ids.shape[1]
    return _one_hot(_marker_position(ids), n) | _one_hot(_switch_read_position(ids), n)


def _rule_switch(n, g):
    ids = _with_marker(n, g, SWITCH_MARKERS)
    return Batch(ids, _rule_switch_label(ids), _rule_switch_evidence(ids))


def _copy_label(ids):
    return ids[:, COPY_K] - FILLERS[0]


def _copy_evidence(ids):
    return _one_hot(torch.full((ids.shape[0],), COPY_K), ids.shape[1])


def _copy_kth(n, g):
    ids = _fillers(n, g)
    ids[:, COPY_K] = torch.tensor(FILLERS[:COPY_CLASSES])[
        torch.randint(COPY_CLASSES, (n,), generator=g)]
    return Batch(ids, _copy_label(ids), _copy_evidence(ids))


# --- vision -------------------------------------------------------------------------

def _shapes() -> torch.Tensor:
    """(4, CELL, CELL) the object masks: a plus, an x, a square ring, a filled 2 x 2 centre."""
    plus, cross, ring, centre = (torch.zeros(CELL, CELL) for _ in range(4))
    mid = CELL // 2
    plus[mid - 1:mid + 1, :] = 1
    plus[:, mid - 1:mid + 1] = 1
    idx = torch.arange(CELL)
    cross[idx, idx] = 1
    cross[idx, CELL - 1 - idx] = 1
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = 1
    centre[mid - 1:mid + 1, mid - 1:mid + 1] = 1
    return torch.stack([plus, cross, ring, centre])


SHAPES = _shapes()
OBJECT_COLOUR = torch.tensor([2.0, -1.0, 1.0])
OBJECT_SCALE = 3.0


def _image(n, g, cells, shapes):
    images = NOISE * torch.randn(n, 3, GRID * CELL, GRID * CELL, generator=g)
    for i in range(n):
        r, c = divmod(int(cells[i]), GRID)
        patch = OBJECT_COLOUR[:, None, None] * SHAPES[int(shapes[i])]
        images[i, :, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] += OBJECT_SCALE * patch
    return images


def _cell_scores(images):
    """(B, cells, shapes): how much drawing each object in each cell explains of the image, the
    drop of the squared residual ``|cell|^2 - |cell - t|^2 = 2 <cell, t> - |t|^2`` for the
    object ``t = OBJECT_SCALE * colour * mask`` (largest for the object actually drawn there)."""
    b = images.shape[0]
    cells = images.reshape(b, 3, GRID, CELL, GRID, CELL).permute(0, 2, 4, 1, 3, 5)
    cells = cells.reshape(b, GRID * GRID, 3, CELL, CELL)
    templates = OBJECT_SCALE * OBJECT_COLOUR[None, :, None, None] * SHAPES[:, None]
    return 2 * torch.einsum("bnkij,skij->bns", cells, templates) - \
        templates.pow(2).sum((1, 2, 3))


def _object_cell(images):
    return _cell_scores(images).amax(-1).argmax(-1)


def _object_shape(images):
    scores = _cell_scores(images)
    cell = scores.amax(-1).argmax(-1)
    return scores[torch.arange(len(cell)), cell].argmax(-1)


def _cell_evidence(images):
    return _one_hot(_object_cell(images), GRID * GRID)


def _object_cell_task(n, g):
    cells = torch.randint(GRID * GRID, (n,), generator=g)
    images = _image(n, g, cells, torch.zeros(n, dtype=torch.long))
    return Batch(images, cells, _one_hot(cells, GRID * GRID))


def _object_shape_task(n, g):
    cells = torch.randint(GRID * GRID, (n,), generator=g)
    shapes = torch.randint(len(SHAPES), (n,), generator=g)
    return Batch(_image(n, g, cells, shapes), shapes, _one_hot(cells, GRID * GRID))


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("marker_slot", "text", True, len(CONTENT), None,
         "one marker among random fillers; the label is the slot that holds it "
         "(the marker token is identical in every sample: position is the only evidence)",
         _marker_slot, _marker_slot_label, _marker_evidence),
    Task("rule_switch", "text", True, 2, None,
         "one marker at positions 2-10; marker before position "
         f"{SWITCH_HALF}: the label is the parity of the first content token, else of the "
         "last (evidence: the marker and the token the active rule reads)",
         _rule_switch, _rule_switch_label, _rule_switch_evidence),
    Task("copy_kth", "text", True, COPY_CLASSES, None,
         f"the label is the token at position {COPY_K} (one of {COPY_CLASSES}); all positions "
         "hold tokens of the same distribution",
         _copy_kth, _copy_label, _copy_evidence),
    Task("marker_type", "text", False, len(MARKERS), "marker_slot",
         "control: marker_slot's inputs with one of four marker types; the label is the "
         "marker's type, wherever it is (position irrelevant)",
         _marker_type, _marker_type_label, _marker_evidence),
    Task("object_cell", "vision", True, GRID * GRID, None,
         f"one identical object in one of {GRID}x{GRID} cells over noise; the class is the cell "
         "(position is the only evidence)",
         _object_cell_task, _object_cell, _cell_evidence),
    Task("object_shape", "vision", False, len(SHAPES), "object_cell",
         "control: one of four objects in a random cell; the class is the object "
         "(position irrelevant)",
         _object_shape_task, _object_shape, _cell_evidence),
)}


def sample(task: Task, n: int, seed: int) -> Batch:
    """``n`` samples of ``task`` from the generator seeded with ``seed``."""
    return task.sample(n, torch.Generator().manual_seed(seed))
