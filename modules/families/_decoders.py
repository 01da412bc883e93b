"""Shared piece of the decoder family files whose modules are not Llama's (GPT-NeoX, GPT-J,
Phi, StarCoder2, OLMo, BLOOM, Falcon, MPT): the map spelled out from its parts (not a family:
the registry skips ``_`` modules)."""
from __future__ import annotations

from typing import Mapping

from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces


def decoder_family(name: str, prefix: str, model_type: str, *, order: int,
                   modules: Mapping[str, str], parts: tuple[str, ...],
                   tasks: Mapping[str, str] | None = None, position: str = "rotary",
                   **kwargs) -> Family:
    """A transformers decoder family: ``modules`` (class or ``Owner.child`` -> rule) on top of
    the activations' identity rule; ``parts``: the ``{prefix}...`` classes that keep their stock
    forward (with the plain linears, embeddings, containers); ``tasks`` default to
    ``{prefix}ForCausalLM``, ``{prefix}ForSequenceClassification`` and ``{prefix}Model``."""
    tasks = tasks or {f"{prefix}ForCausalLM": "causal_lm",
                      f"{prefix}ForSequenceClassification": "classifier",
                      f"{prefix}Model": "part"}
    examples = ", ".join(k for k, v in tasks.items() if v != "part")
    return Family(name=name, library="transformers",
                  rules=RuleMap(name=name, model_classes=tuple(tasks),
                                modules={**ACTIVATIONS, **modules},
                                plain=PLAIN + tuple(f"{prefix}{p}" for p in parts),
                                namespaces=namespaces(model_type)),
                  tasks=tasks, stream="input_ids", position=position, baselines=frozenset(),
                  _order=order, examples=kwargs.pop("examples", examples), **kwargs)
