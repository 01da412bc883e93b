"""Qwen2.5-VL's vision tower (``Qwen2_5_VisionTransformerPretrainedModel``), a part of
Qwen2.5-VL: Qwen2-VL's packed tower (docs of ``qwen2_vl_vision``) with RMSNorms (identity rule,
RMS constant), a gated SiLU MLP (the uniform rule on the gated product: gradient halved at
``down_proj``'s input) and window attention: the stock code permutes the patches into windows
after the patch embedding and after the rotary module (whose output, in the images' order, is
the positional leaf: its relevance lands on each patch whatever window it is attended in),
attends per window in most blocks and per image in ``fullatt_block_indexes``, and undoes the
permutation after the merger; every kernel call is the stock one with the uniform rule."""
from ._qwen_vl import vision_tower

FAMILY = vision_tower("qwen2_5_vl_vision", "Qwen2_5_VisionTransformerPretrainedModel",
                      "qwen2_5_vl", attention="Qwen2_5_VLVisionAttention", order=65,
                      norm=("Qwen2_5_VLRMSNorm", "rms_norm"),
                      extra={"Qwen2_5_VLMLP.down_proj": "halve_input"},
                      plain=("Qwen2_5_VisionPatchEmbed", "Qwen2_5_VLPatchMerger",
                             "Qwen2_5_VLMLP", "Qwen2_5_VLVisionBlock",
                             "Qwen2_5_VLVisionRotaryEmbedding"))
