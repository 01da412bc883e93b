"""One tiny random model (or a few variants) per registered family, built from configs: the test
parameter a new family brings (docs/adding_a_family.md): an entry of ``BUILDERS`` here or of
the ``BUILDERS`` of a ``tests/builders_<kind>.py`` module (merged in below). tests/test_engine.py runs every
registered family through the same contract, parity, restore, padding and kernel tests, and
fails when a family has no entry here.

Each builder returns ``(model, inputs, padding)``: an eval-mode model, the inputs of
``palrp.explain`` for a batch of 2, and how a text batch may be padded (``"left"``,
``"right"`` or ``None`` for images).
"""
import importlib
import pathlib

import timm
import torch
import transformers as tf

from text_families_fixtures import FAMILY_CONFIGS, pad_id, random_ids, tiny

TIMM = dict(pretrained=False, embed_dim=24, depth=2, num_heads=3, num_classes=5)


def _timm(name, side, seed=0, **overrides):
    torch.manual_seed(seed)
    model = timm.create_model(name, **{**TIMM, **overrides}).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    return model, images, None


def _text(family, kind):
    from palrp.modules.family import family_named

    def build():
        kernels = family_named(family).kernels_checked   # a kernel the stock model runs
        model = tiny(family, kind, impl="sdpa" if "sdpa" in kernels else kernels[0])
        ids = random_ids(family, 2, 7)
        first = family in ("bert", "roberta") and kind == "classifier"
        return model, {"input_ids": ids}, "right" if first else "left"
    return build


def tiny_llava(seed=0, feature_layer=-2):
    """A LLaVA-style model: a CLIP vision tower (32 px, patch 8: 16 patches + class token), a
    GELU projector and a Llama; image placeholders are token 63."""
    torch.manual_seed(seed)
    vision = tf.CLIPVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, image_size=32, patch_size=8,
                                 projection_dim=16)
    text = tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=128, pad_token_id=0)
    config = tf.LlavaConfig(vision_config=vision, text_config=text, image_token_index=63,
                            projector_hidden_act="gelu", vision_feature_layer=feature_layer)
    return perturbed(tf.LlavaForConditionalGeneration(config), seed)


def llava_inputs(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 60, (batch, 24), generator=g)
    ids[:, 3:3 + 16] = 63
    pixels = torch.randn(batch, 3, 32, 32, generator=g)
    return {"input_ids": ids, "pixel_values": pixels}


def _llava():
    return tiny_llava(), llava_inputs(), "left"


#: The tiny transformers vision classifiers: hidden 32, 2 layers, 4 heads, 32 px, patch 8.
HF_VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 image_size=32, patch_size=8, num_labels=5)


def perturbed(model, seed=0):
    """Every parameter of ``model`` moved far from its initial value (norm weights around 1,
    everything else N(0, 0.2)), in eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and param.dim() == 1 and not name.endswith("bias"):
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
            else:
                param.normal_(0.0, 0.2)
    return model.eval()


def hf_vision(model_class, config_class, side=32, seed=0, **overrides):
    """``(model, images, None)``: a tiny random transformers vision classifier and two images of
    ``side`` px, the plain tensor (``palrp.explain`` makes it ``{"pixel_values": images}``;
    tests/test_vision_hf.py checks that the mapping gives the same)."""
    torch.manual_seed(seed)
    config = {**HF_VISION, **overrides}
    if config_class in (tf.CLIPConfig, tf.SiglipConfig):
        labels = config.pop("num_labels")
        vision = {tf.CLIPConfig: tf.CLIPVisionConfig, tf.SiglipConfig: tf.SiglipVisionConfig}
        text = dict(vocab_size=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
        config = config_class(vision_config=vision[config_class](**config).to_dict(),
                              text_config=text, num_labels=labels)
    else:
        config = config_class(**config)
    model = perturbed(model_class(config), seed)
    images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    return model, images, None


#: family name -> builders of its tiny models (the first is the one the contract tests use).
BUILDERS = {
    "vit": [lambda: _timm("deit_tiny_patch16_224", 32, img_size=32, patch_size=8),
            lambda: _timm("deit_tiny_distilled_patch16_224", 32, img_size=32, patch_size=8),
            lambda: _timm("vit_small_patch14_reg4_dinov2", 28, img_size=28, patch_size=14)],
    "eva": [lambda: _timm("eva02_tiny_patch14_224", 28, img_size=28, patch_size=14)],
    **{family: [_text(family, kind) for kind, head in (("causal", causal), ("classifier", head2))
                if head is not None]
       for family, (_, causal, head2, _) in FAMILY_CONFIGS.items()},
    "clip_vision": [_llava],
    "llava": [_llava],
    "hf_vit": [lambda: hf_vision(tf.ViTForImageClassification, tf.ViTConfig)],
    "hf_deit": [lambda: hf_vision(tf.DeiTForImageClassification, tf.DeiTConfig),
                lambda: hf_vision(tf.DeiTForImageClassificationWithTeacher, tf.DeiTConfig)],
    "hf_dinov2": [lambda: hf_vision(tf.Dinov2ForImageClassification, tf.Dinov2Config,
                                    mlp_ratio=2),
                  lambda: hf_vision(tf.Dinov2ForImageClassification, tf.Dinov2Config, side=40,
                                    mlp_ratio=2),
                  lambda: hf_vision(tf.Dinov2ForImageClassification, tf.Dinov2Config,
                                    mlp_ratio=2, use_swiglu_ffn=True)],
    "hf_dinov2_registers": [lambda: hf_vision(tf.Dinov2WithRegistersForImageClassification,
                                              tf.Dinov2WithRegistersConfig, side=40,
                                              mlp_ratio=2, num_register_tokens=2)],
    "hf_clip_classifier": [lambda: hf_vision(tf.CLIPForImageClassification, tf.CLIPConfig)],
    "hf_siglip": [lambda: hf_vision(tf.SiglipForImageClassification, tf.SiglipConfig)],
}

# Each tests/builders_*.py (one per kind of model: its own tiny models) adds its BUILDERS here,
# and its MORE_BUILDERS (family -> further builders) after the families defined elsewhere.
_MORE_HEADS: list = []
for _path in sorted(pathlib.Path(__file__).parent.glob("builders_*.py")):
    _module = importlib.import_module(_path.stem)
    _more = _module.BUILDERS
    _clash = set(_more) & set(BUILDERS)
    if _clash:
        raise RuntimeError(f"{_path.name} redefines the tiny models of {sorted(_clash)}")
    BUILDERS.update(_more)
    # more tiny models (another head, another variant) of a family whose first ones are defined elsewhere
    _MORE_HEADS.append(getattr(_module, "MORE_BUILDERS", {}))
for _heads in _MORE_HEADS:
    for _name, _builders in _heads.items():
        BUILDERS[_name] = [*BUILDERS[_name], *_builders]

__all__ = ["BUILDERS", "tiny_llava", "llava_inputs", "pad_id", "hf_vision", "perturbed"]
