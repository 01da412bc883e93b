"""How the library reports a bad option without knowing how the caller spells it.

The library takes typed options (dataclasses such as
:class:`palrp.nlp.pert_driver.PerturbationOptions` or :class:`palrp.nlp.imdb_train.TrainOptions`)
and never a command line. When a value is wrong, the message should still tell a command-line
user which flag to change: :class:`OptionError` keeps the message as a template whose
``{name}`` placeholders are option names (the dataclass fields, ``max_length``), and the caller
fills them in its own spelling -- the command lines with their flags
(:func:`palrp.runtime.cli.flag`: ``--max-length``), a Python caller with the field names
(``str(exc)``).
"""
from __future__ import annotations

from typing import Callable

__all__ = ["OptionError"]


class OptionError(ValueError):
    """A bad option value or combination; one line naming the problem and the fix.

    ``template`` names options as ``{field}`` placeholders for each of ``options``; everything
    else in it is literal text (values are formatted in beforehand, braces and all).
    ``str(exc)`` spells the options as their field names; :meth:`spelled` in any other way."""

    def __init__(self, template: str, *options: str):
        self.template = template
        self.options = tuple(options)
        super().__init__(self.spelled())

    def spelled(self, spell: Callable[[str], str] | None = None) -> str:
        """The message with each ``{option}`` replaced by ``spell(option)`` (default: the
        option's name as it is)."""
        text = self.template
        for name in self.options:
            text = text.replace("{" + name + "}", spell(name) if spell else name)
        return text

    def __reduce__(self):
        return type(self), (self.template, *self.options)
