"""One Family type and one registry for every model the engine explains: timm, transformers,
torchvision and composites, vision and text side by side (docs/adding_a_family.md).

A family is data: a :class:`palrp.modules.patching.RuleMap` (which module class gets which rule,
classes matched by identity), the adapter that implements those rules for its library
(:mod:`palrp.modules.adapters`), the input stream it reads (``"pixel_values"`` or
``"input_ids"``) and where position enters it. Every module of ``modules/families/`` that
defines ``FAMILY`` is registered: adding a family is adding one file.

A **composite** family (a vision-language model) names no stream of its own: its parts (a
vision tower, a language model) are submodules whose classes belong to other registered
families; the engine applies each part's map to its subtree, in one patch and one backward.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
import sys
from dataclasses import dataclass, field
from typing import Mapping

from .patching import RuleMap, UnsupportedModelError
from .positional import TEXT_PAPER, Combination
from .rules import UNIFORM_RULES, RuleSet

__all__ = ["Family", "families", "family_of", "family_named", "part_family", "baseline_family",
           "supported_line",
           "UnsupportedModelError", "TASKS", "POSITIONS"]

#: What a model class of a family is: the head it explains, or ``"part"`` (a tower or a base
#: model that only runs inside a composite; it has no output of its own to explain).
#: ``"image_text"``: a dual encoder's image-text score (``logits_per_image``: the texts are the
#: classes of each image).
TASKS = ("image_classifier", "causal_lm", "masked_lm", "seq2seq_lm", "classifier", "image_text",
         "part")
#: How a ``pixel_values`` stream is laid out (:class:`Family`).
PIXEL_LAYOUTS = ("images", "patches", "tiles", "patch_sequence")
#: Where position enters a family (docs/method.md, the positional rule).
#: ``"alibi"``: ALiBi's per-head linear bias on the attention scores (BLOOM, MPT, Falcon);
#: ``"relative"``: relative-position terms added to the attention scores (T5's buckets, Swin
#: V2's continuous bias, DeBERTa's c2p / p2c terms); ``"additive+relative"``: such a bias,
#: and an added table where the model has one (BEiT, Swin).
POSITIONS = ("additive", "rotary", "additive+rotary", "alibi", "relative", "additive+relative",
             "none")


@dataclass(frozen=True)
class Family:
    """One family's map and what the engine needs to know about it.

    - ``name``; ``library``: ``"timm"``, ``"transformers"`` or ``"torchvision"``, whose
      adapter (:mod:`palrp.modules.adapters`) implements the rules of the map;
    - ``rules``: the :class:`RuleMap` (its ``model_classes`` are the keys of ``tasks``);
    - ``tasks``: model class name -> one of :data:`TASKS`;
    - ``stream``: the input keyword the family reads (``"pixel_values"``, ``"input_ids"``;
      ``None`` for a composite, whose parts' families bring the streams) and ``position``:
      one of :data:`POSITIONS`;
    - ``default_rules``: the :class:`RuleSet` used when none is given (the paper's vision set
      for ViT/DeiT; AttnLRP's uniform attention rule elsewhere); ``rule_sets``: the sets the
      family's adapter implements (by name);
    - ``combination``: the stream's paper map (:data:`VISION_PAPER` or :data:`TEXT_PAPER`);
    - transformers text families: ``position_module`` (path, from the family's root, of the
      learned position table whose output is the positional leaf), ``token_type_module``
      (the same for token-type embeddings, reported as the ``token_type_ids`` stream),
      ``position_ids`` (``"from_mask"``: the engine passes ``cumsum(mask) - 1``; ``"stock"``),
      ``pooling`` (where a classifier reads: ``"last"`` non-pad token or ``"first"``),
      ``identity_functions`` (torch functions called inline that get the identity rule),
      ``rope_gate`` (the attention module's boolean attribute saying whether its layer applies
      RoPE, for models with NoPE layers such as SmolLM3's ``use_rope``: a layer without RoPE
      has no positional leaves and its q/k keep their relevance);
    - ``position_parameter`` (transformers vision families): path, from the family's root's
      base model, of a learned position table kept as an ``nn.Parameter`` of shape (1, N, D)
      and added inside its owner module's forward (ViT's, DeiT's and DINOv2's
      ``embeddings.position_embeddings``); the addend the owner adds (the parameter itself, or
      the table its ``interpolate_pos_encoding`` resampled to the input's grid) is the
      positional leaf. Exclusive with ``position_module`` (a table that is a module);
    - ``decoder_stream`` (encoder-decoders): the input keyword of the decoder
      (``"decoder_input_ids"``); the decoder stack (``root.get_decoder()``) is then a second
      part of the same family reading that stream, with its own token and positional leaves,
      while the root part reads ``stream`` through the encoder;
    - ``baselines``: the baseline groups whose rules are defined for the family
      (``"attention"``: rollout, raw attention, GradCAM; ``"chefer"``: partial LRP and
      Transformer Attribution; ``"gradient"``: gradient x input, integrated gradients);
    - ``first_position`` (a composite): the position id of a sequence's first token in the
      ids the engine passes (``cumsum(mask) - 1 + first_position``): 0, or 1 for PaliGemma,
      whose positions count from 1;
    - ``rope_sections``: rotary encodings whose frequencies are split into sections, each
      rotating by its own position index (Qwen2-VL's M-RoPE: ``("temporal", "height",
      "width")``; its vision tower's 2-D RoPE: ``("height", "width")``): each section of each
      cos/sin is a positional leaf of its own, labelled ``"cos_3:height"``
      (docs/method.md, "M-RoPE sections"); sizes from the config's ``mrope_section``, else equal;
    - ``rotary_module``: path, from the part's root, of the rotary module whose ``(cos, sin)``
      output every layer shares, made the positional leaves there (once per pass, not per
      layer): a packed vision tower whose tokens carry no batch dim (Qwen2-VL's);
    - ``pixel_layout``: how a ``pixel_values`` stream is laid out: ``"images"`` (B, C, H, W),
      ``"patches"`` (flattened patch rows of every image with ``image_grid_thw``, Qwen2-VL)
      ``"tiles"`` ((B, N, C, H, W) sub-images, all-zero ones padding: Idefics3, SmolVLM) or
      ``"patch_sequence"`` (patchified images (B, N, P*P*C) with ``spatial_shapes`` and
      ``pixel_attention_mask``: SigLIP 2's NaFlex input);
    - ``kernels_checked``: the attention kernels the tests compare;
    - ``examples``, ``notes``: for the docs and the refusal line.
    """

    name: str
    library: str
    rules: RuleMap
    tasks: Mapping[str, str]
    stream: str | None = None
    position: str = "none"
    default_rules: RuleSet = UNIFORM_RULES
    rule_sets: tuple[str, ...] = ("uniform",)
    combination: Combination = TEXT_PAPER
    position_module: str | None = None
    token_type_module: str | None = None
    position_ids: str = "from_mask"
    pooling: str = "last"
    identity_functions: tuple[str, ...] = ()
    rope_gate: str | None = None
    position_parameter: str | None = None
    decoder_stream: str | None = None
    first_position: int = 0
    rope_sections: tuple[str, ...] = ()
    rotary_module: str | None = None
    pixel_layout: str = "images"
    baselines: frozenset = frozenset({"gradient"})
    kernels_checked: tuple[str, ...] = ("eager", "sdpa")
    examples: str = ""
    notes: str = ""
    _order: int = field(default=100, compare=False)

    def __post_init__(self):
        if self.library not in ("timm", "transformers", "torchvision"):
            raise ValueError(f"unknown library {self.library!r}")
        if set(self.tasks.values()) - set(TASKS):
            raise ValueError(f"tasks must be among {TASKS}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.position_ids not in ("from_mask", "stock"):
            raise ValueError("position_ids must be 'from_mask' or 'stock'")
        if self.pooling not in ("last", "first"):
            raise ValueError("pooling must be 'last' or 'first'")
        if self.pixel_layout not in PIXEL_LAYOUTS:
            raise ValueError(f"pixel_layout must be one of {PIXEL_LAYOUTS}")
        if self.position_parameter and self.position_module:
            raise ValueError(f"{self.name}: a position table is either a module "
                             "(position_module) or a parameter (position_parameter), not both")
        if self.default_rules.name not in self.rule_sets:
            raise ValueError(f"{self.name}: default rules {self.default_rules.name!r} are not "
                             f"among its rule sets {self.rule_sets}")

    @property
    def composite(self) -> bool:
        """A family without a stream of its own: its parts are other families' models."""
        return self.stream is None

    def check_rules(self, rules: RuleSet) -> None:
        if rules.name not in self.rule_sets:
            raise ValueError(f"the {self.name} family implements the rule sets "
                             f"{list(self.rule_sets)}; got {rules.name!r}")


def _family_modules() -> list[str]:
    package = importlib.import_module(f"{__package__}.families")
    return sorted(info.name for info in pkgutil.iter_modules(package.__path__)
                  if not info.name.startswith("_"))


@functools.lru_cache(maxsize=1)
def families() -> tuple[Family, ...]:
    """Every registered family (each ``FAMILY`` of ``modules/families/*.py``), vision and
    text together, in the docs' order."""
    found = []
    for name in _family_modules():
        module = importlib.import_module(f"{__package__}.families.{name}")
        family = getattr(module, "FAMILY", None)
        if isinstance(family, Family):
            found.append(family)
    names = [f.name for f in found]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise RuntimeError(f"two family files define the families {sorted(duplicates)}")
    return tuple(sorted(found, key=lambda f: (f._order, f.name)))


def family_named(name: str) -> Family:
    for family in families():
        if family.name == name:
            return family
    raise KeyError(f"no family named {name!r}; registered: {[f.name for f in families()]}")


def supported_line(task: str | None = None, baseline: str | None = None) -> str:
    """One line naming the registered families (those explaining ``task``, or whose rules
    define the baseline group ``baseline``, if given)."""
    chosen = [f for f in families()
              if (task is None or task in f.tasks.values())
              and (baseline is None or baseline in f.baselines)]
    return "; ".join(f"{f.name} ({f.examples or ', '.join(f.tasks)})" for f in chosen)


def model_classes() -> dict[type, tuple[Family, str]]:
    """Every model class of a registered family whose namespace is imported -> ``(family,
    task)`` (a class whose module is not imported has no instance to match; looking only at
    those keeps a timm user from importing transformers, and vice versa)."""
    loaded = tuple(f.name for f in families()
                   if any(ns in sys.modules for ns in f.rules.namespaces))
    return _model_classes(loaded)


@functools.lru_cache(maxsize=16)
def _model_classes(loaded: tuple[str, ...]) -> dict[type, tuple[Family, str]]:
    index: dict[type, tuple[Family, str]] = {}
    for family in families():
        if family.name not in loaded:
            continue
        for name, task in family.tasks.items():
            for cls in family.rules.resolve(name):
                index.setdefault(cls, (family, task))
    return index


def family_of(model) -> tuple[Family, str]:
    """``(family, task)`` of a model, matched by class identity; :class:`UnsupportedModelError`
    with one line naming the supported families otherwise."""
    found = model_classes().get(type(model))
    if found is not None:
        return found
    raise UnsupportedModelError(
        f"{type(model).__name__} is not a model the engine explains; supported families: "
        f"{supported_line()}")


def baseline_family(model, group: str, what: str) -> Family:
    """The family of ``model`` if the baseline group ``group`` (see :class:`Family`) is
    defined for it; otherwise :class:`UnsupportedModelError` naming ``what`` and the families
    that have it."""
    family = part_family(model)
    if family is None or group not in family.baselines:
        raise UnsupportedModelError(
            f"{what}: not defined for a {type(model).__name__}; supported families: "
            f"{supported_line(baseline=group)}")
    return family


def part_family(module, index: dict | None = None) -> Family | None:
    """The family whose model classes include ``module``'s class (any task), or None
    (``index``: a :func:`model_classes` result to reuse over many modules)."""
    found = (model_classes() if index is None else index).get(type(module))
    return None if found is None else found[0]
