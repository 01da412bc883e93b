"""Shared maps of the Qwen2-VL and Qwen2.5-VL families (not a family: the registry skips ``_``
modules): the composite, its packed vision tower and its M-RoPE language model."""
from __future__ import annotations

from typing import Mapping

from ..family import Family
from ..patching import RuleMap
from ..positional import TEXT_PAPER, VISION_PAPER
from ._transformers import ACTIVATIONS, PLAIN, namespaces

#: M-RoPE's sections, in the order of ``mrope_section``.
MROPE = ("temporal", "height", "width")
#: The vision tower's 2-D RoPE: the first half of the frequencies rotate by the patch row.
AXIAL = ("height", "width")


def composite(name: str, prefix: str, model_type: str, *, order: int, examples: str) -> Family:
    """``{prefix}ForConditionalGeneration``: the vision tower and the language model are parts;
    the glue is the LM head (plain) and the merge of image features into the placeholders."""
    tasks = {f"{prefix}ForConditionalGeneration": "causal_lm", f"{prefix}Model": "part"}
    return Family(
        name=name, library="transformers",
        rules=RuleMap(name=name, model_classes=tuple(tasks), modules=dict(ACTIVATIONS),
                      plain=PLAIN, namespaces=namespaces(model_type)),
        tasks=tasks, stream=None, baselines=frozenset(), _order=order, examples=examples)


def vision_tower(name: str, model_class: str, model_type: str, *, attention: str,
                 order: int, plain: tuple[str, ...], norm: tuple[str, str] = ("LayerNorm",
                                                                              "layer_norm"),
                 extra: Mapping[str, str] | None = None) -> Family:
    """A packed Qwen vision tower: flattened patch rows (Conv3d patch embedding, plain), 2-D
    RoPE computed once by ``rotary_pos_emb`` and shared by every block (its output the
    positional leaves, one per section), a fused ``qkv`` whose q and k are rotated over the
    whole head (their gradient halved), attention on the stock kernel per image (or per
    window), norms, identity activations, and the patch merger (norm, linears plain)."""
    modules = {**ACTIVATIONS, norm[0]: norm[1], attention: "attention",
               f"{attention}.qkv": "halve_qk_of_qkv", **(extra or {})}
    return Family(
        name=name, library="transformers",
        rules=RuleMap(name=name, model_classes=(model_class,), modules=modules,
                      plain=PLAIN + ("Conv3d", "Sequential") + plain,
                      namespaces=namespaces(model_type)),
        tasks={model_class: "part"}, stream="pixel_values", position="rotary",
        rope_sections=AXIAL, rotary_module="rotary_pos_emb", pixel_layout="patches",
        combination=VISION_PAPER, baselines=frozenset(), _order=order,
        examples=f"{model_class} (a vision tower)")


def mrope_text(name: str, prefix: str, model_type: str, *, order: int, mlp: str) -> Family:
    """The M-RoPE language model ``{prefix}TextModel``: a Llama-like decoder (RMSNorm identity
    rule, gated MLP halved at ``down_proj``, uniform attention, q/k rotary dims halved) whose
    cos/sin are split into the temporal, height and width sections, each a positional leaf
    per layer. Position ids are the model's own (M-RoPE indices from ``get_rope_index``,
    which skips padding)."""
    modules = {**ACTIVATIONS, f"{prefix}RMSNorm": "rms_norm", f"{mlp}.down_proj": "halve_input",
               f"{prefix}Attention": "attention", f"{prefix}Attention.q_proj": "rotary_qk",
               f"{prefix}Attention.k_proj": "rotary_qk"}
    tasks = {f"{prefix}TextModel": "part"}
    return Family(
        name=name, library="transformers",
        rules=RuleMap(name=name, model_classes=tuple(tasks), modules=modules,
                      plain=PLAIN + (f"{prefix}DecoderLayer", mlp, f"{prefix}RotaryEmbedding"),
                      namespaces=namespaces(model_type)),
        tasks=tasks, stream="input_ids", position="rotary", rope_sections=MROPE,
        position_ids="stock", combination=TEXT_PAPER, baselines=frozenset(), _order=order,
        examples=f"{prefix}TextModel (the language model of {prefix})")
