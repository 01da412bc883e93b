"""PEFT models (``peft.PeftModel`` and its task classes) with unmerged LoRA adapters
(docs/method.md, section 12).

A LoRA layer computes ``base(x) + s * B(A(x))`` (dropout is off in eval): a sum of linear maps
of the same input, i.e. the linear map with the merged weight ``W + s B A`` (and the base
bias). Its epsilon rule is plain autograd, and the gradient of the sum is the merged layer's
gradient, so the explanation of the model with its adapters in place equals that of
``merge_and_unload()``, without a merged copy and without touching the adapters. The engine
therefore explains the PEFT model's base model (``get_base_model()``: the transformers model
with the LoRA layers inside), whose family map then accepts peft's LoRA ``Linear`` as a plain
module (:func:`palrp.modules.patching.register_plain`; its ``base_layer``, ``lora_A``/``lora_B``
linears and ``lora_dropout`` plain too), and
keeps the rule its place has (a ``q_proj`` LoRA layer gets the rotary halving of its output,
a ``down_proj`` the halving of its input). Other adapter kinds (prompt tuning, IA3, ...) and
LoRA variants whose layers are not linear in x (DoRA's magnitude vector, LoRA embeddings,
convolutions) are refused: their classes are in no map, or the adapter type is named.
"""
from __future__ import annotations

import sys

import torch

from ..patching import UnsupportedModelError, register_plain

__all__ = ["explained_model"]


def explained_model(model):
    """``model``, or for a PEFT model its base model with the LoRA adapters in place (see the
    module); a PEFT model with another kind of adapter is refused by name."""
    if "peft" not in sys.modules:
        return model
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model
    kinds = sorted({str(getattr(cfg.peft_type, "value", cfg.peft_type))
                    for cfg in model.peft_config.values()})
    if kinds != ["LORA"]:
        raise UnsupportedModelError(
            f"{type(model).__name__} with {', '.join(kinds)} adapters: only LoRA adapters are "
            "explained (as the merged model); merge_and_unload() the model or pass a LoRA one")
    from peft.tuners.lora.layer import Linear as LoraLinear

    # the LoRA linear and the containers of its A, B and dropout modules
    register_plain(LoraLinear, torch.nn.ModuleDict, torch.nn.ParameterDict)
    return model.get_base_model()
