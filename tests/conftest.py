"""Shared fixtures: tiny DeiT models built from timm configs (nothing is downloaded)."""
import pytest
import timm
import torch

from modules.deit import load_deit

# Tiny models run faster on one thread than split over two (and CI shares its cores).
torch.set_num_threads(1)


def make_timm_vit(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=3,
                  num_classes=5, seed=0):
    """A random timm VisionTransformer in DeiT form (CLS token, no distillation)."""
    torch.manual_seed(seed)
    model = timm.create_model(
        "deit_tiny_patch16_224", pretrained=False, img_size=img_size, patch_size=patch_size,
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, num_classes=num_classes)
    # Non-trivial biases and LayerNorm affine parameters, so every rule is exercised.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_timm():
    return make_timm_vit()


@pytest.fixture(scope="session")
def tiny_deit(tiny_timm):
    return load_deit(tiny_timm.state_dict(), num_heads=3)
