"""DINOv2 with registers (transformers ``Dinov2WithRegistersForImageClassification``): as DINOv2
(the table, always through ``interpolate_pos_encoding``, as added is the positional leaf), with
register tokens inserted after the class token *after* the position add: they carry no position,
so the positional sinks follow the table's layout (prefix = the class token, then the patches).
The head reads ``[class token, mean of the patch tokens]`` (registers excluded)."""
from ._hf_vision import vit_like_family

FAMILY = vit_like_family(
    "hf_dinov2_registers", "Dinov2WithRegisters", "dinov2_with_registers", order=15,
    tasks={"Dinov2WithRegistersForImageClassification": "image_classifier",
           "Dinov2WithRegistersModel": "part"},
    extra={"Dinov2WithRegistersSwiGLUFFN.down_proj": "halve_input"},
    plain_extra=("Encoder", "LayerScale", "DropPath", "SwiGLUFFN"),
    examples="transformers Dinov2WithRegistersForImageClassification (any input size)")
