"""Family maps of the text engine, as data (docs/text_families.md; the vision maps are
:mod:`palrp.modules.families`).

One small file per transformers family defines ``FAMILY``, a :class:`TextFamily`: which module
class gets which rule (a :class:`palrp.modules.patching.RuleMap`), where position enters the model,
which head classes it explains and how they pool. :func:`family_of` finds the family of a model
and refuses anything no map covers with one line naming the supported families.

Adding a family is one file here, one line in ``_FAMILY_MODULES`` and one test parameter
(docs/text_families.md, "Adding a family").
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Mapping

from ..patching import RuleMap, UnsupportedModelError

__all__ = ["TextFamily", "family_of", "families", "ACTIVATIONS", "PLAIN", "rotary_family",
           "UnsupportedModelError"]

#: Elementwise activations of ``transformers.activations`` (and torch's): the identity rule
#: (for ReLU it equals the gradient). Any other activation class makes the model refused.
ACTIVATIONS: Mapping[str, str] = {
    name: "identity" for name in (
        "SiLUActivation", "SiLU", "GELUTanh", "PytorchGELUTanh", "NewGELUActivation",
        "GELUActivation", "FastGELUActivation", "QuickGELUActivation", "GELU", "ReLU")
}

#: Module classes that keep their stock forward in every family (plain autograd: the epsilon
#: rule for linears, embeddings and sums; containers; dropout, off in eval).
PLAIN = ("Linear", "Embedding", "ModuleList", "Dropout", "Identity")


@dataclass(frozen=True)
class TextFamily:
    """One family's map.

    - ``rules``: module class (or ``"Owner.child"``) -> rule; the rules are those of
      :mod:`palrp.modules.text_engine` (``rms_norm``, ``layer_norm``, ``identity``, ``halve_input``,
      ``attention``, ``rotary_qk``, ``rotary_qkv``);
    - ``heads``: head class name -> ``"causal_lm"`` or ``"classifier"``;
    - ``position``: ``"rotary"`` (cos/sin of each layer, read where the attention module gets
      them) or ``"absolute"`` (a learned table added to the token embeddings);
    - ``position_module``: for absolute PE, the path (from the base model) of the position
      embedding module whose output is the positional leaf; ``token_type_module`` likewise for a
      token-type embedding (BERT), whose relevance is reported on its own;
    - ``position_ids``: ``"from_mask"`` (the engine passes ``cumsum(mask) - 1``, so a padded
      sample sees the positions it has alone) or ``"stock"`` (the stock code makes them, e.g.
      RoBERTa's padding-offset ids from the input ids);
    - ``pooling``: where a classifier head reads: ``"last"`` (last non-pad token) or
      ``"first"`` (the first token, BERT's pooler);
    - ``identity_functions``: torch functions the stock code calls inline (not as modules)
      that get the identity rule while the model runs (``"tanh"``: soft-capping, RoBERTa's
      classification head);
    - ``kernels_checked``: the attention kernels the tests compare (eager == sdpa); a kernel
      not listed still runs through the same wrapper.

    The rule map's ``plain`` list names every other module class such a model holds, so that a
    configuration with a module nobody checked (an unknown activation, say) is refused.
    """

    rules: RuleMap
    heads: Mapping[str, str]
    position: str
    position_module: str | None = None
    token_type_module: str | None = None
    position_ids: str = "from_mask"
    pooling: str = "last"
    identity_functions: tuple[str, ...] = ()
    kernels_checked: tuple[str, ...] = ("eager", "sdpa")

    @property
    def name(self) -> str:
        return self.rules.name

    def head_kind(self, model) -> str | None:
        return self.heads.get(type(model).__name__)

    def __post_init__(self):
        if self.position not in ("rotary", "absolute"):
            raise ValueError(f"position must be 'rotary' or 'absolute', got {self.position!r}")
        if self.position == "absolute" and not self.position_module:
            raise ValueError("an absolute-PE family names its position_module")
        if self.position_ids not in ("from_mask", "stock"):
            raise ValueError(f"position_ids must be 'from_mask' or 'stock', got {self.position_ids!r}")
        if self.pooling not in ("last", "first"):
            raise ValueError(f"pooling must be 'last' or 'first', got {self.pooling!r}")


_FAMILY_MODULES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "gpt2",
                   "bert", "roberta")


def families() -> list[TextFamily]:
    """Every family map, in the order of the docs' table."""
    return [importlib.import_module(f".{name}", __name__).FAMILY for name in _FAMILY_MODULES]


def _supported_line() -> str:
    return "; ".join(f"{f.name} ({', '.join(f.heads)})" for f in families())


def family_of(model) -> tuple[TextFamily, str]:
    """``(family, head_kind)`` of a transformers model; :class:`UnsupportedModelError` (one
    line naming the supported families) for anything else."""
    for family in families():
        kind = family.head_kind(model)
        if kind is not None:
            return family, kind
    raise UnsupportedModelError(
        f"{type(model).__name__} is not a model the text engine explains; supported: "
        f"{_supported_line()} (for a PEFT model pass model.get_base_model())")


def rotary_family(name: str, prefix: str, *, extra: Mapping[str, str] | None = None,
                  fused: bool = False, heads: Mapping[str, str] | None = None,
                  **kwargs) -> TextFamily:
    """The map of a Llama-like decoder (``{prefix}ForCausalLM`` / ``...ForSequenceClassification``,
    ``{prefix}RMSNorm``, ``{prefix}MLP`` with a gated product into ``down_proj``,
    ``{prefix}Attention`` with q/k projections, RoPE), shared by the rotary family files."""
    modules = dict(ACTIVATIONS)
    modules.update({
        f"{prefix}RMSNorm": "rms_norm",
        f"{prefix}MLP.down_proj": "halve_input",
        f"{prefix}Attention": "attention",
    })
    if fused:
        modules[f"{prefix}Attention.qkv_proj"] = "rotary_qkv"
    else:
        modules[f"{prefix}Attention.q_proj"] = "rotary_qk"
        modules[f"{prefix}Attention.k_proj"] = "rotary_qk"
    modules.update(extra or {})
    heads = heads or {f"{prefix}ForCausalLM": "causal_lm",
                      f"{prefix}ForSequenceClassification": "classifier"}
    plain = PLAIN + tuple(f"{prefix}{part}" for part in (
        "Model", "TextModel", "DecoderLayer", "MLP", "RotaryEmbedding", "TextScaledWordEmbedding"))
    return TextFamily(rules=RuleMap(name=name, model_classes=tuple(heads), modules=modules,
                                    plain=plain),
                      heads=heads, position="rotary", **kwargs)
