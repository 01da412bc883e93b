"""Reversible, per-instance patching of a stock model: the one mechanism by which every engine
(vision and text) installs its LRP rules.

Inside ``with patching(model) as patcher:`` the engine replaces forwards and attributes of *this
model's module instances* (never classes, never files); every change is recorded in the
:class:`Patcher`'s undo log and reverted on exit, also when the body raises, so that after the
``with`` block the model is exactly as before: same forward, same gradients, no attribute left
behind.

Family maps are data (:class:`RuleMap`): which module class (or which named child of a module
class, ``"Mlp.fc1"``) gets which rule, which methods are replaced (``"VisionTransformer._pos_embed"``,
where position enters), and which classes keep their stock forward. The engine of a modality
supplies the rule forwards (factories ``make(module, original) -> replacement``);
:meth:`Patcher.apply_rules` walks the model, refuses a module no map entry covers, and installs
the rules.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
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

    def apply_rules(self, rule_map: "RuleMap", factories: Mapping[str, Callable],
                    root: torch.nn.Module | None = None, foreign: Callable | None = None,
                    placed: dict | None = None) -> dict[str, int]:
        """Install ``rule_map``'s rules: ``factories[rule](module, original)`` replaces the
        forward of every module the map names (by class, or as ``"Parent.child"``) and, for a
        ``"Class.method"`` entry of ``rule_map.methods``, that method. Returns how many places
        got each rule. A rule name without a factory is a ``KeyError`` (a map can only name
        rules its engine implements); with ``rule_map.plain`` given, a module that the map does
        not cover is an :class:`UnsupportedModelError`, raised before anything is changed.
        ``root``: the submodule the map applies to (default: the model); ``foreign``: see
        :meth:`RuleMap.places`; ``placed``: a dict that receives rule -> the modules it was
        installed on."""
        named = set(rule_map.modules.values()) | set(rule_map.methods.values())
        missing = sorted(named - set(factories))
        if missing:
            raise KeyError(f"family map {rule_map.name!r} names rules {missing} that this "
                           f"engine does not implement (known: {sorted(factories)})")
        places = list(rule_map.places(self.model if root is None else root, foreign))
        counts: dict[str, int] = {}
        for module, attr, rule in places:
            make = factories[rule]
            original = getattr(module, attr)
            self.set_attr(module, attr, make(module, original))
            counts[rule] = counts.get(rule, 0) + 1
            if placed is not None:
                placed.setdefault(rule, []).append(module)
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


#: Classes that keep their stock forward in every map (see :func:`register_plain`).
_PLAIN_WRAPPERS: set = set()


def register_plain(*classes: type) -> None:
    """Let every family map cover ``classes`` as plain modules: wrappers that a library other
    than the model's puts around the model's own layers (peft's LoRA ``Linear``, registered
    when a PEFT model is first explained, so that nobody else imports peft)."""
    _PLAIN_WRAPPERS.update(classes)


def resolve_class(name, namespaces: tuple[str, ...]) -> tuple[type, ...]:
    """The classes a family map means by ``name``: a class object as given, or every distinct
    class called ``name`` in the modules ``namespaces`` (imported here; e.g. ``"GELU"`` is
    both ``torch.nn.GELU`` and timm's own ``GELU``). Empty when no namespace has it (a class
    of another release of the library: no model can hold it)."""
    if isinstance(name, type):
        return (name,)
    return _resolve(name, namespaces)


@functools.lru_cache(maxsize=None)
def _resolve(name: str, namespaces: tuple[str, ...]) -> tuple[type, ...]:
    found = []
    for namespace in namespaces:
        try:
            module = importlib.import_module(namespace)
        except ImportError:
            continue
        cls = getattr(module, name, None)
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


@dataclass(frozen=True)
class RuleMap:
    """A family map, as data; classes are matched by identity, never by name.

    Class names are resolved in ``namespaces`` (module paths, tried in order, then
    ``torch.nn``): a family file names ``"LlamaAttention"`` with the namespace
    ``transformers.models.llama.modeling_llama``, and the map matches exactly the classes of
    that name defined in its namespaces (a class of the same name elsewhere does not match).
    Class objects may be given instead of names.

    - ``model_classes``: the model classes it explains (or that are parts of a composite);
    - ``modules``: module class, or ``"ParentClass.child"`` (the child attribute ``child``
      of a module of class ``ParentClass``), -> rule name; the rule replaces that module's
      forward. A ``"Parent.child"`` entry wins over the child's class entry;
    - ``methods``: ``"Class.method"`` -> rule name; the rule replaces that method of every
      module of the class (e.g. where a model adds its position embedding);
    - ``plain``: module classes that keep their stock forward, which in gradient x input form is
      the epsilon rule (linears, adds, embeddings, dropout in eval). When given (non-empty),
      every module of the model must be covered by ``modules`` or ``plain``, else the model is
      refused (:class:`UnsupportedModelError`), so that nothing unknown runs with a rule it
      was never checked under.
    """

    name: str
    model_classes: tuple = ()
    modules: Mapping = field(default_factory=dict)
    methods: Mapping[str, str] = field(default_factory=dict)
    plain: tuple = ()
    notes: str = ""
    namespaces: tuple[str, ...] = ()

    @property
    def search(self) -> tuple[str, ...]:
        return (*self.namespaces, "torch.nn")

    def resolve(self, name):
        return resolve_class(name, self.search)

    def _class_set(self, names) -> set:
        return {cls for n in names for cls in self.resolve(n)}

    def unresolved(self) -> list[str]:
        """Names of this map that no namespace defines (for the registry's own test)."""
        names = [*self.model_classes, *self.plain]
        for key in [*self.modules, *self.methods]:
            names.append(key.split(".", 1)[0] if isinstance(key, str) else key)
        return sorted({n for n in names if isinstance(n, str) and not self.resolve(n)})

    def _lookup(self):
        by_class, by_child = {}, {}
        for key, rule in self.modules.items():
            if isinstance(key, str) and "." in key:
                owner, child = key.split(".", 1)
                for cls in self.resolve(owner):
                    by_child[(cls, child)] = rule
            else:
                for cls in self.resolve(key):
                    by_class[cls] = rule
        methods = {}
        for key, rule in self.methods.items():
            owner, method = key.split(".", 1)
            for cls in self.resolve(owner):
                methods.setdefault(cls, []).append((method, rule))
        return by_class, by_child, methods

    def places(self, model: torch.nn.Module, foreign: Callable | None = None):
        """``(module, attribute, rule)`` for every place of ``model`` the map patches, after
        checking that the map covers every module (see ``plain``). ``foreign(module)`` (for a
        composite model) says that a submodule belongs to another family's part: it is
        neither patched nor checked here, and not descended into."""
        by_class, by_child, methods = self._lookup()
        plain = self._class_set(self.plain) | self._class_set(self.model_classes)
        if self.plain:
            plain |= _PLAIN_WRAPPERS
        out, unknown = [], {}

        def visit(module, parent, name, path):
            if parent is not None and foreign is not None and foreign(module):
                return
            cls = type(module)
            rule = by_child.get((type(parent), name)) if parent is not None else None
            if rule is None:
                rule = by_class.get(cls)
            if rule is not None:
                out.append((module, forward_attr(module), rule))
            elif self.plain and cls not in plain:
                unknown.setdefault(cls.__name__, path or "<model>")
            for method, method_rule in methods.get(cls, ()):
                out.append((module, method, method_rule))
            for child_name, child in module.named_children():
                visit(child, module, child_name, f"{path}.{child_name}" if path else child_name)

        visit(model, None, "", "")
        if unknown:
            where = ", ".join(f"{cls} (at {path})" for cls, path in sorted(unknown.items()))
            raise UnsupportedModelError(
                f"the {self.name!r} family map does not cover {where}; this configuration of "
                f"{type(model).__name__} is not supported")
        return out
