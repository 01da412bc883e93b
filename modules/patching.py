"""Reversible, per-instance patching of a stock model: the one mechanism by which every engine
(vision and text) installs its LRP rules.

Inside ``with patching(model) as patcher:`` the engine replaces forwards and attributes of *this
model's module instances* (never classes, never files); every change is recorded in the
:class:`Patcher`'s undo log and reverted on exit, also when the body raises, so that after the
``with`` block the model is exactly as before: same forward, same gradients, no attribute left
behind.

Family maps are data (:class:`RuleMap`): which module class gets which rule. The engine of a
modality supplies the rule forwards (factories ``make(module, original_forward) -> forward``);
:meth:`Patcher.apply_rules` walks the model and installs them by class name.
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch

__all__ = ["Patcher", "patching", "RuleMap", "forward_attr", "UnsupportedModelError"]


class UnsupportedModelError(TypeError):
    """A model (or a module inside it) that no family map covers; the message names the
    supported families."""


def forward_attr(module: torch.nn.Module) -> str:
    """The attribute a call of ``module`` ends in: accelerate's hooks (``device_map``) keep the
    real forward in ``_old_forward`` and call it from their wrapper; patching that one keeps the
    device hooks working."""
    if hasattr(module, "_hf_hook") and hasattr(module, "_old_forward"):
        return "_old_forward"
    return "forward"


_ACTIVE: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


class Patcher:
    """Undo log of per-instance changes to one model."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._undo: list[Callable[[], None]] = []

    def set_attr(self, obj, name: str, value) -> None:
        """Set an instance attribute, restored exactly on exit: to the previous instance value
        if there was one, else deleted (so that a class attribute shows through again)."""
        own = vars(obj)
        if name in own:
            old = own[name]
            self._undo.append(lambda: setattr(obj, name, old))
        else:
            self._undo.append(lambda: delattr(obj, name))
        setattr(obj, name, value)

    def set_value(self, obj, name: str, value) -> None:
        """``setattr`` through properties (e.g. a transformers config's
        ``_attn_implementation``), restored with the value read before."""
        old = getattr(obj, name)
        self._undo.append(lambda: setattr(obj, name, old))
        setattr(obj, name, value)

    def wrap_forward(self, module: torch.nn.Module, make: Callable) -> None:
        """Replace ``module``'s forward by ``make(original_forward)`` (the bound original is
        handed over, so a rule can call the stock code)."""
        attr = forward_attr(module)
        self.set_attr(module, attr, make(getattr(module, attr)))

    def on_exit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on exit (after the later changes are undone), e.g. to clear state."""
        self._undo.append(fn)

    def apply_rules(self, rule_map: "RuleMap",
                    factories: Mapping[str, Callable]) -> dict[str, int]:
        """Install ``rule_map``'s rules: for every module whose class name the map names,
        ``factories[rule](module, original_forward)`` becomes its forward. Returns how many
        modules got each rule. A rule name without a factory is an error (a map can only
        name rules its engine implements)."""
        missing = sorted(set(rule_map.modules.values()) - set(factories))
        if missing:
            raise KeyError(f"family map {rule_map.name!r} names rules {missing} that this "
                           f"engine does not implement (known: {sorted(factories)})")
        counts: dict[str, int] = {}
        for module in self.model.modules():
            rule = rule_map.modules.get(type(module).__name__)
            if rule is None:
                continue
            make = factories[rule]
            self.wrap_forward(module, lambda original, m=module, f=make: f(m, original))
            counts[rule] = counts.get(rule, 0) + 1
        return counts

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


@contextlib.contextmanager
def patching(model: torch.nn.Module) -> Iterator[Patcher]:
    """Yield a :class:`Patcher` for ``model``; everything it changed is undone on exit.
    A second, nested patching of the same model is refused (the rules would stack)."""
    if model in _ACTIVE:
        raise RuntimeError(f"LRP rules are already active on this {type(model).__name__}; "
                           "leave the first `with` block before entering another")
    patcher = Patcher(model)
    _ACTIVE.add(model)
    try:
        yield patcher
    finally:
        _ACTIVE.discard(model)
        patcher.restore()


@dataclass(frozen=True)
class RuleMap:
    """A family map, as data: the model classes it explains, and which rule each module class
    gets (module class name -> rule name). What a map does not name keeps its stock forward,
    which in gradient x input form is the epsilon rule (linears, adds, embeddings)."""

    name: str
    model_classes: tuple[str, ...]
    modules: Mapping[str, str] = field(default_factory=dict)
    notes: str = ""

    def covers(self, model: torch.nn.Module) -> bool:
        return type(model).__name__ in self.model_classes
