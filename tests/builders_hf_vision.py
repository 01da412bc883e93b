"""Tiny transformers vision models of issue 21 beyond the ViT-like classifiers (Swin, BEiT, ...),
for the registry-wide tests (tests/family_models.py merges ``BUILDERS``). Relative position
tables and layer-scale lambdas start at zero / 0.1 in these configs: ``perturbed`` gives every
parameter random values, so positional relevance is nonzero."""
import torch
import transformers as tf


def perturbed(model, seed=0):
    # imported when called: tests/family_models.py imports this module while it loads
    from family_models import perturbed as perturb
    return perturb(model, seed)

#: Swin: 32 px, patch 4 (an 8 x 8 grid), windows of 4, two stages (the second merged 2 x 2).
SWIN = dict(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4],
            window_size=4, mlp_ratio=2.0, num_labels=5)


def images(side=32, batch=2, seed=1, height=None):
    return torch.randn(batch, 3, height or side, side, generator=torch.Generator().manual_seed(seed))


def swin(seed=0, side=32, height=None, **overrides):
    torch.manual_seed(seed)
    model = perturbed(tf.SwinForImageClassification(tf.SwinConfig(**{**SWIN, **overrides})), seed)
    return model, images(side, height=height), None


BUILDERS = {
    "hf_swin": [swin, lambda: swin(use_absolute_embeddings=True)],
}

#: BEiT: the shared ViT-like size (32 px, patch 8), mean pooling.
BEIT = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8, num_labels=5)


def beit(seed=0, side=32, **overrides):
    torch.manual_seed(seed)
    config = tf.BeitConfig(**{**BEIT, **overrides})
    model = perturbed(tf.BeitForImageClassification(config), seed)
    return model, images(side), None


BUILDERS["hf_beit"] = [
    lambda: beit(use_relative_position_bias=True),
    lambda: beit(use_shared_relative_position_bias=True, use_absolute_position_embeddings=True,
                 use_mean_pooling=False),
]

#: CLIP dual encoder: the shared vision size, a 2-layer causal text tower (vocabulary 64; the
#: legacy ``eos_token_id=2`` pooling reads the highest id, 63, put at each text's end).
CLIP_TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=16, bos_token_id=1,
                 eos_token_id=2, pad_token_id=0)


def own_best_texts(model, draw, padding, short=2, image_inputs=None, first=0):
    """``(model, {"pixel_values", "input_ids"}, padding)`` with two images and the first texts
    ``draw(seed)`` gives for which each image's best text is its own, also when the second text
    loses ``short`` tokens to padding (tests/test_engine.py's batched == single test explains
    each image against its own text, as one image alone does). ``image_inputs``: the image
    keywords (default ``{"pixel_values": images()}``); ``first``: the text seed to start from
    (the first that fits with this transformers release: one check instead of a search)."""
    image_inputs = image_inputs or {"pixel_values": images()}
    for seed in range(first, first + 200):
        ids = draw(seed)
        mask = torch.ones_like(ids)
        padded = ids.clone()
        cut = slice(0, short) if padding == "left" else slice(ids.shape[1] - short, None)
        mask[1, cut], padded[1, cut] = 0, 0
        with torch.no_grad():
            full = model(input_ids=ids, **image_inputs).logits_per_image
            part = model(input_ids=padded, attention_mask=mask, **image_inputs,
                         position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits_per_image
        if all(torch.equal(s.argmax(-1), torch.arange(2)) for s in (full, part)):
            return model, {**image_inputs, "input_ids": ids}, padding
    raise RuntimeError("no texts found whose best image is their own")


def clip_dual(seed=0, texts=7):
    """``(CLIPModel, {"pixel_values", "input_ids"}, "right")``: two images and two texts
    (:func:`own_best_texts`)."""
    torch.manual_seed(seed)
    vision = {k: v for k, v in BEIT.items() if k != "num_labels"}
    config = tf.CLIPConfig(vision_config=vision, text_config=CLIP_TEXT, projection_dim=16)
    model = perturbed(tf.CLIPModel(config), seed)

    def draw(text_seed):
        ids = torch.randint(3, 60, (2, texts), generator=torch.Generator().manual_seed(text_seed))
        ids[:, -1] = 63
        return ids
    return own_best_texts(model, draw, "right")


BUILDERS["hf_clip_dual"] = [clip_dual]
BUILDERS["clip_text"] = [clip_dual]

SIGLIP_TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                   num_attention_heads=4, max_position_embeddings=16, pad_token_id=0,
                   projection_size=32, bos_token_id=1, eos_token_id=2)


def siglip_dual(seed=0, texts=7):
    """``(SiglipModel, {"pixel_values", "input_ids"}, "left")``: two images and two texts
    (:func:`own_best_texts`); SigLIP's text tower reads the last position, so texts are padded
    on the left."""
    torch.manual_seed(seed)
    vision = {k: v for k, v in BEIT.items() if k != "num_labels"}
    config = tf.SiglipConfig(vision_config=vision, text_config=SIGLIP_TEXT)
    model = perturbed(tf.SiglipModel(config), seed)

    def draw(text_seed):
        return torch.randint(3, 60, (2, texts),
                             generator=torch.Generator().manual_seed(text_seed))
    return own_best_texts(model, draw, "left", first=26)


BUILDERS["hf_siglip_dual"] = [siglip_dual]
BUILDERS["siglip_text"] = [siglip_dual]
BUILDERS["siglip_vision"] = [siglip_dual]


def swinv2(seed=0, side=32, **overrides):
    torch.manual_seed(seed)
    config = tf.Swinv2Config(**{**SWIN, **overrides})
    model = perturbed(tf.Swinv2ForImageClassification(config), seed)
    return model, images(side), None


BUILDERS["hf_swinv2"] = [swinv2]


def patchify(images01: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, rows * cols, P * P * C) in SigLIP 2's processor order."""
    batch, channels, height, width = images01.shape
    rows, cols = height // patch, width // patch
    patches = images01.reshape(batch, channels, rows, patch, cols, patch)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch * patch * channels)


def siglip2_inputs(shapes=((4, 4), (4, 4)), patch=8, length=16, seed=1):
    """NaFlex inputs: images of ``shapes`` (rows, cols) patchified and padded to ``length``."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.zeros(len(shapes), length, 3 * patch * patch)
    mask = torch.zeros(len(shapes), length, dtype=torch.long)
    for b, (rows, cols) in enumerate(shapes):
        image = torch.randn(1, 3, rows * patch, cols * patch, generator=g)
        pixels[b, :rows * cols] = patchify(image, patch)[0]
        mask[b, :rows * cols] = 1
    return {"pixel_values": pixels, "pixel_attention_mask": mask,
            "spatial_shapes": torch.tensor(shapes)}


def siglip2(seed=0, **inputs):
    torch.manual_seed(seed)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, patch_size=8, num_patches=16)
    config = tf.Siglip2Config(vision_config=vision, text_config=dict(vocab_size=64),
                              num_labels=5)
    model = perturbed(tf.Siglip2ForImageClassification(config), seed)
    return model, siglip2_inputs(**inputs), None


BUILDERS["hf_siglip2"] = [siglip2]
BUILDERS["siglip2_vision"] = [siglip2]


def siglip2_dual(seed=0, texts=7):
    """``(Siglip2Model, NaFlex image inputs + input_ids, "left")`` (:func:`own_best_texts`)."""
    torch.manual_seed(seed)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, patch_size=8, num_patches=16)
    config = tf.Siglip2Config(vision_config=vision, text_config=SIGLIP_TEXT)
    model = perturbed(tf.Siglip2Model(config), seed)

    def draw(text_seed):
        return torch.randint(3, 60, (2, texts),
                             generator=torch.Generator().manual_seed(text_seed))
    return own_best_texts(model, draw, "left", image_inputs=siglip2_inputs(), first=91)


BUILDERS["hf_siglip2_dual"] = [siglip2_dual]
BUILDERS["siglip2_text"] = [siglip2_dual]
