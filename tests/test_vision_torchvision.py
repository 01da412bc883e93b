"""torchvision's ViT and Swin against timm's: the same architecture with the same weights is
explained the same (float64), so the torchvision adapter (its ``nn.MultiheadAttention`` rule,
its window attention) applies exactly the rules the timm adapter applies (uniform rule set)."""
import timm
import torch

from builders_vision import tiny_swin, tiny_tv_swin, tiny_tv_vit
from palrp.modules.engine import explain


def _timm_twin(tv):
    """timm's VisionTransformer with the weights of the tiny torchvision ViT."""
    encoder = tv.encoder
    depth = len(encoder.layers)
    width = tv.hidden_dim
    twin = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=tv.image_size,
                             patch_size=tv.patch_size, embed_dim=width, depth=depth,
                             num_heads=encoder.layers[0].self_attention.num_heads,
                             mlp_ratio=tv.mlp_dim / width, num_classes=tv.num_classes).eval()
    state = {"cls_token": tv.class_token, "pos_embed": encoder.pos_embedding,
             "patch_embed.proj.weight": tv.conv_proj.weight,
             "patch_embed.proj.bias": tv.conv_proj.bias,
             "norm.weight": encoder.ln.weight, "norm.bias": encoder.ln.bias,
             "head.weight": tv.heads.head.weight, "head.bias": tv.heads.head.bias}
    for i, layer in enumerate(encoder.layers):
        block = f"blocks.{i}."
        attn = layer.self_attention
        state.update({
            block + "norm1.weight": layer.ln_1.weight, block + "norm1.bias": layer.ln_1.bias,
            block + "attn.qkv.weight": attn.in_proj_weight, block + "attn.qkv.bias": attn.in_proj_bias,
            block + "attn.proj.weight": attn.out_proj.weight,
            block + "attn.proj.bias": attn.out_proj.bias,
            block + "norm2.weight": layer.ln_2.weight, block + "norm2.bias": layer.ln_2.bias,
            block + "mlp.fc1.weight": layer.mlp[0].weight, block + "mlp.fc1.bias": layer.mlp[0].bias,
            block + "mlp.fc2.weight": layer.mlp[3].weight, block + "mlp.fc2.bias": layer.mlp[3].bias,
        })
    twin.load_state_dict(state)
    return twin


def test_torchvision_vit_is_explained_as_its_timm_twin():
    tv, pixels, _ = tiny_tv_vit()
    tv, pixels = tv.double(), pixels.double()
    twin = _timm_twin(tv).double()
    with torch.no_grad():
        torch.testing.assert_close(tv(pixels), twin(pixels), rtol=1e-10, atol=1e-12)
    ours, theirs = explain(tv, pixels), explain(twin, pixels, rules="uniform")
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-10, atol=1e-12)
    a, b = ours.streams["pixel_values"], theirs.streams["pixel_values"]
    torch.testing.assert_close(a.pixels, b.pixels, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(a.sinks, b.sinks, rtol=1e-9, atol=1e-12)
    assert a.sinks.abs().sum() > 0


def _timm_swin_twin(tv):
    """The tiny timm Swin (same layout as the tiny torchvision Swin) with the torchvision
    weights."""
    twin, _, _ = tiny_swin()
    features = tv.features
    state = {"patch_embed.proj.weight": features[0][0].weight,
             "patch_embed.proj.bias": features[0][0].bias,
             "patch_embed.norm.weight": features[0][2].weight,
             "patch_embed.norm.bias": features[0][2].bias,
             "norm.weight": tv.norm.weight, "norm.bias": tv.norm.bias,
             "head.fc.weight": tv.head.weight, "head.fc.bias": tv.head.bias}
    for stage in range(len(twin.layers)):
        if stage:
            merge = features[2 * stage]
            state.update({f"layers.{stage}.downsample.norm.weight": merge.norm.weight,
                          f"layers.{stage}.downsample.norm.bias": merge.norm.bias,
                          f"layers.{stage}.downsample.reduction.weight": merge.reduction.weight})
        for j, block in enumerate(features[1 + 2 * stage]):
            at = f"layers.{stage}.blocks.{j}."
            pairs = {"norm1": block.norm1, "norm2": block.norm2, "attn.qkv": block.attn.qkv,
                     "attn.proj": block.attn.proj, "mlp.fc1": block.mlp[0],
                     "mlp.fc2": block.mlp[3]}
            for name, module in pairs.items():
                state[at + name + ".weight"] = module.weight
                state[at + name + ".bias"] = module.bias
            state[at + "attn.relative_position_bias_table"] = \
                block.attn.relative_position_bias_table
    twin.load_state_dict(state, strict=False)
    missing = {k for k in twin.state_dict() if k not in state and "relative_position_index" not in k
               and "attn_mask" not in k}
    assert not missing, missing
    return twin.eval()


def test_torchvision_swin_is_explained_as_its_timm_twin():
    tv, pixels, _ = tiny_tv_swin()()
    tv, pixels = tv.double(), pixels.double()
    twin = _timm_swin_twin(tv).double()
    with torch.no_grad():
        torch.testing.assert_close(tv(pixels), twin(pixels), rtol=1e-10, atol=1e-12)
    ours, theirs = explain(tv, pixels), explain(twin, pixels)
    a, b = ours.streams["pixel_values"], theirs.streams["pixel_values"]
    torch.testing.assert_close(a.pixels, b.pixels, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(a.sinks, b.sinks, rtol=1e-9, atol=1e-12)
    assert a.sinks.abs().sum() > 0
