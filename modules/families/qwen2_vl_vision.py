"""Qwen2-VL's vision tower (``Qwen2VisionTransformerPretrainedModel``), a part of Qwen2-VL:
packed patch rows (``Family.pixel_layout = "patches"``) embedded by a Conv3d (plain, epsilon),
pre-norm LayerNorms (std constant), quick-GELU identity, attention per image on the stock
kernel with AttnLRP's uniform rule, and a 2-D RoPE (height, width sections) computed once by
``rotary_pos_emb``: its cos/sin are the positional leaves, split per section
(docs/method.md, "M-RoPE sections"), the uniform rule on the rotary products halving their
gradient and that of q and k (fused ``qkv``). The patch merger (LayerNorm, linears, GELU)
concatenates each 2 x 2 block: plain linears, no rule of its own."""
from ._qwen_vl import vision_tower

FAMILY = vision_tower("qwen2_vl_vision", "Qwen2VisionTransformerPretrainedModel", "qwen2_vl",
                      attention="VisionAttention", order=62,
                      plain=("PatchEmbed", "PatchMerger", "VisionMlp", "Qwen2VLVisionBlock",
                             "Qwen2VLVisionRotaryEmbedding"))
