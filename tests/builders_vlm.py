"""Tiny vision-language models (hidden 32, 2 layers, small images, perturbed random weights) for
the registry-wide tests of tests/test_engine.py: Qwen2-VL and Qwen2.5-VL (packed patch rows,
M-RoPE; 2.5: window attention)."""
import torch
import transformers as tf

#: The tiny Qwen2-VL's special tokens (vocabulary 64).
QWEN_IMAGE, QWEN_VIDEO, QWEN_VISION_START = 63, 62, 61


def tiny_qwen2_vl(seed=0, version="2"):
    """A Qwen2-VL (or 2.5) model: a vision tower of patch 4, 2 frames, 2 x 2 merge, 2 blocks,
    head 8 (2-D RoPE: 2 + 2 frequencies), and a language model of head 8 with M-RoPE sections
    1 / 1 / 2."""
    torch.manual_seed(seed)
    vision = dict(depth=2, hidden_size=32, num_heads=4, patch_size=4, temporal_patch_size=2,
                  spatial_merge_size=2, in_channels=3)
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                pad_token_id=0, eos_token_id=2, bos_token_id=1,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [1, 1, 2]})
    if version == "2":
        vision.update(embed_dim=32, mlp_ratio=2)
        config_class, model_class = tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration
    else:
        vision.update(intermediate_size=48, out_hidden_size=32, window_size=16,
                      fullatt_block_indexes=[1])
        config_class = tf.Qwen2_5_VLConfig
        model_class = tf.Qwen2_5_VLForConditionalGeneration
    config = config_class(vision_config=vision, text_config=text, image_token_id=QWEN_IMAGE,
                          video_token_id=QWEN_VIDEO, vision_start_token_id=QWEN_VISION_START)
    from family_models import perturbed      # (family_models imports this module)
    return perturbed(model_class(config), seed)


def qwen_vl_inputs(batch=2, side=16, seed=1, length=14):
    """One ``side`` px image per sample as packed rows (grid side / 4, merged 2 x 2) and a
    prompt with the vision-start token and the image placeholders after two text tokens."""
    g = torch.Generator().manual_seed(seed)
    cells = side // 4
    tokens = (cells // 2) ** 2
    ids = torch.randint(3, 60, (batch, length), generator=g)
    ids[:, 2] = QWEN_VISION_START
    ids[:, 3:3 + tokens] = QWEN_IMAGE
    rows = torch.randn(batch * cells * cells, 3 * 2 * 4 * 4, generator=g)
    return {"input_ids": ids, "pixel_values": rows,
            "image_grid_thw": torch.tensor([[1, cells, cells]] * batch),
            "mm_token_type_ids": (ids == QWEN_IMAGE).int()}


def _qwen2_vl():
    return tiny_qwen2_vl(), qwen_vl_inputs(), "left"


def _qwen2_5_vl():
    # 32 px: a 8 x 8 grid, windows of 16 px (2 x 2 merged tokens), block 1 attends globally
    return tiny_qwen2_vl(version="2.5"), qwen_vl_inputs(side=32, length=22), "left"


BUILDERS = {
    "qwen2_5_vl": [_qwen2_5_vl],
    "qwen2_5_vl_vision": [_qwen2_5_vl],
    "qwen2_5_vl_text": [_qwen2_5_vl],
    "qwen2_vl": [_qwen2_vl],
    "qwen2_vl_vision": [_qwen2_vl],
    "qwen2_vl_text": [_qwen2_vl],
}


def _word_tokenizer(special: dict[str, int]):
    """A word-level tokenizer of 64 entries: a few words, fillers ``w<i>``, and ``special``
    tokens at the model's ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "<s>", "</s>"] + ("the a cat dog is on in picture what this of color red "
                                        "blue green sky").split()
    vocab = {w: i for i, w in enumerate(words)}
    vocab.update({f"w{i}": i for i in range(len(words), 59)})
    vocab.update({"[UNK]": 59, **special})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                      bos_token="<s>", eos_token="</s>",
                                      additional_special_tokens=list(special))


def save_tiny_llava(folder):
    """tests/family_models.py's tiny LLaVA and its processor (CLIP's image processor at 32 px,
    16 image tokens for the 4 x 4 patches, the class token dropped) into ``folder``."""
    from family_models import tiny_llava

    images = tf.CLIPImageProcessor(size={"shortest_edge": 32},
                                   crop_size={"height": 32, "width": 32})
    tf.LlavaProcessor(image_processor=images, tokenizer=_word_tokenizer({"<image>": 63}),
                      patch_size=8, vision_feature_select_strategy="default",
                      num_additional_image_tokens=1).save_pretrained(folder)
    tiny_llava().save_pretrained(folder)
    return folder


def save_tiny_qwen2_vl(folder):
    """A tiny Qwen2-VL and its processor (a word-level tokenizer whose special tokens have the
    model's ids; the image processor cuts 4 px patches, 2 frames, 2 x 2 merge, images scaled
    to at most 32 x 32 px) written with ``save_pretrained`` into ``folder``."""
    tokenizer = _word_tokenizer({"<|vision_end|>": 60, "<|vision_start|>": QWEN_VISION_START,
                                 "<|video_pad|>": QWEN_VIDEO, "<|image_pad|>": QWEN_IMAGE})
    images = tf.Qwen2VLImageProcessor(patch_size=4, temporal_patch_size=2, merge_size=2,
                                      min_pixels=16 * 16, max_pixels=32 * 32)
    videos = tf.Qwen2VLVideoProcessor(patch_size=4, temporal_patch_size=2, merge_size=2)
    tf.Qwen2VLProcessor(image_processor=images, tokenizer=tokenizer,
                        video_processor=videos).save_pretrained(folder)
    tiny_qwen2_vl().save_pretrained(folder)
    return folder


#: SigLIP towers of the tiny SigLIP-based models: 32 px, patch 8 (a 4 x 4 grid), no pooling head.
SIGLIP = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              image_size=32, patch_size=8, vision_use_head=False)
#: The image placeholder of the SigLIP-based tiny models, and Gemma 3's begin / end of image.
IMAGE, BOI, EOI = 63, 61, 60


def tiny_gemma3_vlm(seed=0):
    """Gemma 3 with images: the SigLIP tower, 4 image tokens (the 4 x 4 grid pooled 2 x 2), a
    Gemma 3 LM of head 8 with a sliding window of 4 (local and global layers)."""
    torch.manual_seed(seed)
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                max_position_embeddings=128, pad_token_id=0, sliding_window=4,
                layer_types=["sliding_attention", "full_attention"])
    config = tf.Gemma3Config(vision_config=SIGLIP, text_config=text, mm_tokens_per_image=4,
                             image_token_index=IMAGE, boi_token_index=BOI, eoi_token_index=EOI)
    from family_models import perturbed
    return perturbed(tf.Gemma3ForConditionalGeneration(config), seed)


def image_prompt_inputs(tokens, batch=2, seed=1, length=12, side=32, start=2, marks=None):
    """Ids with ``tokens`` image placeholders after ``start`` text tokens (between the begin /
    end marks ``marks``, if given), ``token_type_ids`` 1 on them, and ``side`` px images."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 59, (batch, length), generator=g)
    at = start
    if marks:
        ids[:, at] = marks[0]
        at += 1
    ids[:, at:at + tokens] = IMAGE
    if marks:
        ids[:, at + tokens] = marks[1]
    pixels = torch.randn(batch, 3, side, side, generator=g)
    return {"input_ids": ids, "pixel_values": pixels, "token_type_ids": (ids == IMAGE).long()}


def _gemma3_vlm():
    return tiny_gemma3_vlm(), image_prompt_inputs(4, marks=(BOI, EOI)), "left"


BUILDERS.update({"gemma3_vlm": [_gemma3_vlm]})
#: SigLIP's tower as a part of a VLM too (its first tiny models are the dual encoder's)
MORE_BUILDERS = {"siglip_vision": [_gemma3_vlm]}


def tiny_paligemma(seed=0):
    """PaliGemma: the SigLIP tower (16 image tokens, one per patch), a linear projector, a Gemma
    LM of head 8."""
    torch.manual_seed(seed)
    text = dict(model_type="gemma", vocab_size=64, hidden_size=32, intermediate_size=48,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                max_position_embeddings=128, pad_token_id=0)
    config = tf.PaliGemmaConfig(vision_config={**SIGLIP, "projection_dim": 32},
                                text_config=text, image_token_index=IMAGE, projection_dim=32)
    from family_models import perturbed
    return perturbed(tf.PaliGemmaForConditionalGeneration(config), seed)


def _paligemma():
    inputs = image_prompt_inputs(16, length=22, start=2)
    inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])     # all prefix
    return tiny_paligemma(), inputs, "left"


BUILDERS["paligemma"] = [_paligemma]


def tiny_idefics3(seed=0, smolvlm=False):
    """Idefics3 (or SmolVLM): the SigLIP-like tower at 32 px, patch 8 (4 x 4 patches per
    sub-image), pixel shuffle 2 (4 tokens per sub-image), a Llama LM of head 8."""
    torch.manual_seed(seed)
    vision = {k: v for k, v in SIGLIP.items() if k != "vision_use_head"}
    text = dict(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=48,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=128, pad_token_id=0)
    config_class, model_class = ((tf.SmolVLMConfig, tf.SmolVLMForConditionalGeneration)
                                 if smolvlm else
                                 (tf.Idefics3Config, tf.Idefics3ForConditionalGeneration))
    config = config_class(vision_config=vision, text_config=text, image_token_id=IMAGE,
                          scale_factor=2, pad_token_id=0)
    from family_models import perturbed
    return perturbed(model_class(config), seed)


def tiles_inputs(tiles=2, batch=2, seed=1, length=16):
    """``tiles`` sub-images per sample (4 image tokens each) after two text tokens."""
    inputs = image_prompt_inputs(4 * tiles, batch=batch, seed=seed, length=length)
    g = torch.Generator().manual_seed(seed + 1)
    inputs["pixel_values"] = torch.randn(batch, tiles, 3, 32, 32, generator=g)
    del inputs["token_type_ids"]
    return inputs


def _idefics3():
    return tiny_idefics3(), tiles_inputs(), "left"


def _smolvlm():
    return tiny_idefics3(smolvlm=True), tiles_inputs(), "left"


BUILDERS.update({
    "idefics3": [_idefics3], "idefics3_vision": [_idefics3],
    "smolvlm": [_smolvlm], "smolvlm_vision": [_smolvlm],
})
