"""Family maps of the vision engine, as data (docs/vision_families.md).

Each family file names, for one group of timm model classes, which module gets which rule,
where position enters (the positional sink), and the family's default and conservative rule
sets. The engine (:mod:`palrp.modules.vit_lrp`) implements the rules; a model no family covers, or a
configuration with a module no map names (a Swin, a ConvNeXt, an attention-pool ``map`` head),
is refused with one line naming the supported families.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..patching import RuleMap, UnsupportedModelError
from ..rules import RuleSet

__all__ = ["VisionFamily", "families", "family_for", "supported_families"]


@dataclass(frozen=True)
class VisionFamily:
    """One family: its rule map, where position enters (for the docs and the refusal line),
    the rule set used when none is given, and its conservative alternative."""

    name: str
    examples: str
    rule_map: RuleMap
    positional: str
    default_rules: RuleSet
    conservative_rules: RuleSet


def families() -> tuple[VisionFamily, ...]:
    """Every family, in the order they are tried."""
    from . import eva, vit
    return (vit.FAMILY, eva.FAMILY)


def supported_families() -> str:
    """One line naming the supported families and the timm models they cover."""
    return "; ".join(f"{f.name} ({f.examples})" for f in families())


def family_for(model) -> VisionFamily:
    """The family covering ``model``'s class, else :class:`UnsupportedModelError` (one line)."""
    for family in families():
        if family.rule_map.covers(model):
            return family
    raise UnsupportedModelError(
        f"{type(model).__name__} is not a supported vision transformer; supported families: "
        f"{supported_families()}")
