"""explain_image.py takes the timm models of the vision families beyond the ViT by name
(``--timm-model NAME --model weights``; the weights' config in the safetensors metadata):
a tiny Swin (its classifier is ``head.fc``) and a RoPE ViT with learned per-head RoPE."""
import json

import numpy as np
import pytest
import timm
from PIL import Image
from safetensors.torch import save_file

import explain_image

CASES = {
    "swin_tiny_patch4_window7_224": dict(img_size=32, patch_size=2, embed_dim=12,
                                         depths=[2, 2], num_heads=[2, 2], window_size=4),
    "vit_small_patch16_rope_mixed_ape_224": dict(img_size=32, patch_size=8, embed_dim=24,
                                                 depth=1, num_heads=3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_explain_image_takes_the_timm_name(name, tmp_path, capsys, monkeypatch):
    drawn = {}
    # the figure itself is tested in tests/test_explain_image_cli.py; here: what it is given
    monkeypatch.setattr(explain_image, "save_map_grid",
                        lambda output, image, columns, **kw: drawn.update(columns, image=image))
    config = CASES[name]
    model = timm.create_model(name, pretrained=False, num_classes=4, **config)
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights),
              metadata={"config": json.dumps(config)})
    image = tmp_path / "photo.png"
    Image.fromarray((np.random.RandomState(0).rand(40, 52, 3) * 255).astype("uint8")).save(image)
    output = tmp_path / "map.png"
    assert explain_image.main(["--timm-model", name, "--model", str(weights), "--image",
                               str(image), "--output", str(output)]) == 0
    assert "predicted:" in capsys.readouterr().out
    assert {"PA-LRP", "AttnLRP", "PE-only"} <= set(drawn)
    for name in ("PA-LRP", "AttnLRP", "PE-only"):
        assert drawn[name].shape[-2:] == drawn["image"].shape[-2:]
        assert drawn[name].isfinite().all() and drawn[name].abs().sum() > 0
