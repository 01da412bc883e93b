"""Tiny random timm and torchvision models of the vision families beyond timm's ViT and EVA
(tests/family_models.py merges ``BUILDERS`` into the registry-wide table).

Every parameter is perturbed (relative-position tables, layer-scale gammas and some position
tables start at zero or near it in a fresh model: positional relevance would be zero by
construction)."""
import timm
import torch


def perturb(model, seed=0, scale=0.1):
    """``model`` in eval mode with every parameter moved by ``scale`` N(0, 1) noise."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn_like(param))
    return model.eval()


def images(side, batch=2, seed=1):
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def timm_model(name, side, seed=0, **config):
    """``(model, images, None)``: a tiny random timm model by name and two images."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=5, **config)
    return perturb(model, seed), images(side), None


def tiny_swin():
    """Three stages (16x16, 8x8, 4x4 tokens; window 4): shifted windows in the first two,
    two patch mergings (input patches covered by a token: 1, 4, 16)."""
    return timm_model("swin_tiny_patch4_window7_224", 32, img_size=32, patch_size=2,
                      embed_dim=12, depths=(2, 2, 2), num_heads=(2, 2, 4), window_size=4)


def tiny_rope_vit(name):
    """A timm RoPE ViT (an ``Eva`` with ``AttentionRope`` blocks): ``"rope"`` (axial RoPE),
    ``"rope_mixed_ape"`` (learned per-head RoPE and an absolute table), ... at 32 px, patch 8."""
    return lambda: timm_model(f"vit_small_patch16_{name}_224", 32, img_size=32, patch_size=8,
                              embed_dim=24, depth=2, num_heads=3)


#: The RoPE ViTs are timm ``Eva`` models: variants of the eva family.
ROPE_VITS = [tiny_rope_vit("rope"), tiny_rope_vit("rope_mixed_ape")]


def tiny_map_vit():
    """A SigLIP-style ViT: no class token, attention-pool head (``global_pool='map'``)."""
    return timm_model("vit_base_patch16_siglip_224", 32, img_size=32, patch_size=8,
                      embed_dim=24, depth=2, num_heads=3)

def tiny_swin_v2():
    """Swin V2 with the same three-stage layout as :func:`tiny_swin`."""
    return timm_model("swinv2_tiny_window8_256", 32, img_size=32, patch_size=2, embed_dim=12,
                      depths=(2, 2, 2), num_heads=(2, 2, 4), window_size=4)


def tiny_beit(**config):
    """BEiT at 32 px, patch 8 (16 patches and the class token), layer-scale gammas."""
    return lambda: timm_model("beit_base_patch16_224", 32, img_size=32, patch_size=8,
                              embed_dim=24, depth=2, num_heads=3, **config)


def tiny_cait():
    """CaiT at 32 px, patch 8: two talking-heads blocks, two class-attention blocks."""
    return timm_model("cait_xxs24_224", 32, img_size=32, patch_size=8, embed_dim=24, depth=2,
                      num_heads=3, depth_token_only=2)


def tiny_tv_vit():
    """torchvision ViT at 32 px, patch 8, two layers."""
    from torchvision.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                              hidden_dim=16, mlp_dim=32, num_classes=5)
    return perturb(model), images(32), None


def tiny_tv_swin(v2=False):
    """torchvision Swin (V1 or V2) at 32 px (or ``side``), patch 2, window 4: three stages
    (16x16 shifted, 8x8 shifted, 4x4)."""
    def build(side=32):
        from torchvision.models import swin_transformer as tv
        torch.manual_seed(0)
        extra = dict(block=tv.SwinTransformerBlockV2, downsample_layer=tv.PatchMergingV2) if v2 else {}
        model = tv.SwinTransformer(patch_size=[2, 2], embed_dim=12, depths=[2, 2, 2],
                                   num_heads=[2, 2, 4], window_size=[4, 4], num_classes=5, **extra)
        return perturb(model), images(side), None
    return build


#: Variants of families whose first tiny model is defined elsewhere (tests/family_models.py).
MORE_BUILDERS = {"eva": ROPE_VITS, "vit": [tiny_map_vit]}

BUILDERS = {
    "swin": [tiny_swin],
    "swin_v2": [tiny_swin_v2],
    "beit": [tiny_beit(),                                     # a bias per block, average pool
             tiny_beit(use_rel_pos_bias=False, use_shared_rel_pos_bias=True,
                       use_abs_pos_emb=True, global_pool="token")],
    "cait": [tiny_cait],
    "tv_vit": [tiny_tv_vit],
    "tv_swin": [tiny_tv_swin(), tiny_tv_swin(v2=True)],
}
