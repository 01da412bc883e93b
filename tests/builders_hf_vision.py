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


def clip_dual(seed=0, texts=7):
    """``(CLIPModel, {"pixel_values", "input_ids"}, "right")``: two images and two texts, the
    texts drawn (deterministically) so that each image's best text is its own: the batched ==
    single test then explains each image against its own text, as one image alone does."""
    torch.manual_seed(seed)
    vision = {k: v for k, v in BEIT.items() if k != "num_labels"}
    config = tf.CLIPConfig(vision_config=vision, text_config=CLIP_TEXT, projection_dim=16)
    model = perturbed(tf.CLIPModel(config), seed)
    pixels = images()
    for draw in range(100):
        ids = torch.randint(3, 60, (2, texts), generator=torch.Generator().manual_seed(draw))
        ids[:, -1] = 63
        with torch.no_grad():
            scores = model(input_ids=ids, pixel_values=pixels).logits_per_image
        if torch.equal(scores.argmax(-1), torch.arange(2)):
            return model, {"pixel_values": pixels, "input_ids": ids}, "right"
    raise RuntimeError("no texts found whose best image is their own")


BUILDERS["hf_clip_dual"] = [clip_dual]
BUILDERS["clip_text"] = [clip_dual]
