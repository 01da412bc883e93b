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
