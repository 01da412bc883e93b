"""Shared pieces of the transformers family files (not a family: the registry skips ``_``
modules): the activations with the identity rule, the plain module classes, and the map of a
Llama-like rotary decoder."""
from __future__ import annotations

from typing import Mapping

from ..family import Family
from ..patching import RuleMap
from ..positional import TEXT_PAPER

#: Where transformers keeps the classes every family shares (activations, GPT-2's Conv1D).
SHARED = ("transformers.activations", "transformers.pytorch_utils")

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


def namespaces(model_type: str) -> tuple[str, ...]:
    """The modelling module of a transformers model type, then the shared ones."""
    return (f"transformers.models.{model_type}.modeling_{model_type}", *SHARED)


def rotary_family(name: str, prefix: str, model_type: str, *, order: int,
                  extra: Mapping[str, str] | None = None, fused: bool = False,
                  tasks: Mapping[str, str] | None = None, examples: str = "",
                  plain_extra: tuple[str, ...] = (), mlp: bool = True, **kwargs) -> Family:
    """The map of a Llama-like decoder (``{prefix}ForCausalLM`` / ``...ForSequenceClassification``,
    ``{prefix}RMSNorm``, ``{prefix}MLP`` with a gated product into ``down_proj``,
    ``{prefix}Attention`` with q/k projections, RoPE), shared by the rotary family files.
    ``plain_extra``: further ``{prefix}...`` classes of the family that keep their forward;
    ``mlp=False``: the family has no ``{prefix}MLP`` class (a mixture of experts in its place,
    mapped through ``extra``)."""
    modules = dict(ACTIVATIONS)
    modules.update({f"{prefix}RMSNorm": "rms_norm", f"{prefix}Attention": "attention"})
    if mlp:
        modules[f"{prefix}MLP.down_proj"] = "halve_input"
    if fused:
        modules[f"{prefix}Attention.qkv_proj"] = "rotary_qkv"
    else:
        modules[f"{prefix}Attention.q_proj"] = "rotary_qk"
        modules[f"{prefix}Attention.k_proj"] = "rotary_qk"
    modules.update(extra or {})
    tasks = tasks or {f"{prefix}ForCausalLM": "causal_lm",
                      f"{prefix}ForSequenceClassification": "classifier",
                      f"{prefix}Model": "part"}
    plain = PLAIN + tuple(f"{prefix}{part}" for part in (
        "Model", "DecoderLayer", *(("MLP",) if mlp else ()), "RotaryEmbedding", *plain_extra))
    return Family(name=name, library="transformers",
                  rules=RuleMap(name=name, model_classes=tuple(tasks), modules=modules,
                                plain=plain, namespaces=namespaces(model_type)),
                  tasks=tasks, stream="input_ids", position="rotary",
                  combination=TEXT_PAPER, baselines=frozenset(), _order=order,
                  examples=examples or f"{prefix}ForCausalLM, {prefix}ForSequenceClassification",
                  **kwargs)


def bert_like_family(name: str, prefix: str, model_type: str, *, order: int,
                     causal_head: str | None, parts: tuple[str, ...],
                     masked_head: str | None = "ForMaskedLM",
                     attention: str = "SelfAttention", unprefixed: tuple[str, ...] = (),
                     position_module: str | None = "embeddings.position_embeddings",
                     token_type_module: str | None = "embeddings.token_type_embeddings",
                     **kwargs) -> Family:
    """The map of a BERT-like encoder (``{prefix}Model``, ``{prefix}SelfAttention`` on the
    attention interface, post-LayerNorms, word + token-type + learned position embeddings
    summed): LayerNorm std constant, activations and the pooler's ``tanh`` identity, the
    position table's output the positional leaf, the token-type output a stream of its own; the
    classifier reads the first token. ``causal_head``: the ``{prefix}...`` causal-LM head class;
    ``parts``: the ``{prefix}...`` module classes that keep their stock forward;
    ``masked_head``: the ``{prefix}...`` masked-LM head class (task ``masked_lm``: one position
    per sample explained, ``palrp.explain(..., position=)``); ``attention``: the
    ``{prefix}...`` class calling the attention kernel; ``unprefixed``: plain classes named
    without the prefix; ``position_module`` / ``token_type_module``: the tables' paths (None:
    no such table)."""
    heads = {causal_head: "causal_lm", masked_head: "masked_lm",
             "ForSequenceClassification": "classifier", "Model": "part"}
    tasks = {f"{prefix}{head}": task for head, task in heads.items() if head}
    return Family(
        name=name, library="transformers",
        rules=RuleMap(name=name, model_classes=tuple(tasks),
                      modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                               f"{prefix}{attention}": "attention", "Tanh": "identity"},
                      plain=PLAIN + tuple(prefix + part for part in ("Model", *parts))
                      + unprefixed,
                      namespaces=namespaces(model_type)),
        tasks=tasks, stream="input_ids", position="additive",
        position_module=position_module, token_type_module=token_type_module,
        pooling="first", baselines=frozenset(), _order=order,
        examples=", ".join(t for t, task in tasks.items() if task != "part"), **kwargs)


def encoder_decoder_family(name: str, prefix: str, model_type: str, *, order: int,
                           head: str = "ForConditionalGeneration",
                           plain_extra: tuple[str, ...] = (), examples: str = "",
                           **kwargs) -> Family:
    """The map of a BART-like encoder-decoder (``{prefix}Encoder`` / ``{prefix}Decoder`` of
    ``{prefix}EncoderLayer`` / ``{prefix}DecoderLayer``, ``{prefix}Attention`` on the attention
    interface for self, causal self and cross attention, LayerNorm, a learned or sinusoidal
    position table ``embed_positions`` in each stack): LayerNorm std constant, activations
    identity, the attention kernel wrapper, each stack's position table output the positional
    leaf of its stream (``input_ids`` for the encoder, ``decoder_input_ids`` for the decoder).
    ``plain_extra``: further ``{prefix}...`` classes that keep their forward."""
    tasks = {f"{prefix}{head}": "seq2seq_lm", f"{prefix}Model": "part"}
    return Family(
        name=name, library="transformers",
        rules=RuleMap(name=name, model_classes=tuple(tasks),
                      modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                               f"{prefix}Attention": "attention"},
                      plain=PLAIN + tuple(prefix + part for part in (
                          "Model", "Encoder", "Decoder", "EncoderLayer", "DecoderLayer",
                          *plain_extra)),
                      namespaces=namespaces(model_type)),
        tasks=tasks, stream="input_ids", decoder_stream="decoder_input_ids",
        position="additive", position_module="embed_positions", position_ids="stock",
        baselines=frozenset(), _order=order,
        examples=examples or f"{prefix}{head}", **kwargs)


def t5_like_family(name: str, prefix: str, model_type: str, *, order: int, examples: str = "",
                   **kwargs) -> Family:
    """The map of a T5-like encoder-decoder (``{prefix}ForConditionalGeneration`` of two
    ``{prefix}Stack``s, ``{prefix}LayerNorm`` RMS, ``{prefix}Attention`` on the attention
    interface with a relative-position bias, ReLU or gated-GELU feed-forward): RMS constant,
    activations identity, the gated product halved at ``wo``, the attention kernel wrapper,
    each stack's relative bias the positional leaf of its stream (see t5.py)."""
    tasks = {f"{prefix}ForConditionalGeneration": "seq2seq_lm", f"{prefix}Model": "part",
             f"{prefix}EncoderModel": "part"}
    return Family(
        name=name, library="transformers",
        rules=RuleMap(
            name=name, model_classes=tuple(tasks),
            modules={**ACTIVATIONS, f"{prefix}LayerNorm": "rms_norm",
                     f"{prefix}Attention": "attention",
                     f"{prefix}DenseGatedActDense.wo": "halve_input"},
            plain=PLAIN + tuple(prefix + part for part in (
                "Stack", "Block", "LayerSelfAttention", "LayerCrossAttention", "LayerFF",
                "DenseActDense", "DenseGatedActDense")),
            namespaces=namespaces(model_type)),
        tasks=tasks, stream="input_ids", decoder_stream="decoder_input_ids",
        position="relative", position_ids="stock", baselines=frozenset(), _order=order,
        examples=examples or f"{prefix}ForConditionalGeneration", **kwargs)


def text_tower_family(name: str, prefix: str, model_type: str, *, order: int) -> Family:
    """The map of a dual encoder's text tower, a part (``{prefix}TextModel``: token embeddings
    plus a learned position table ``embeddings.position_embedding``, an ``nn.Embedding`` whose
    output is the positional leaf, K = 1; pre-norm layers, LayerNorm std constant, activations
    identity, ``{prefix}Attention`` AttnLRP's uniform rule on the stock kernel; the readout and
    the projection plain)."""
    tasks = {f"{prefix}TextModel": "part"}
    return Family(
        name=name, library="transformers",
        rules=RuleMap(name=name, model_classes=tuple(tasks),
                      modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                               f"{prefix}Attention": "attention"},
                      plain=PLAIN + tuple(prefix + part for part in (
                          "TextEmbeddings", "Encoder", "EncoderLayer", "MLP")),
                      namespaces=namespaces(model_type)),
        tasks=tasks, stream="input_ids", position="additive",
        position_module="embeddings.position_embedding", baselines=frozenset(), _order=order,
        examples=f"{prefix}TextModel (a text tower)")
