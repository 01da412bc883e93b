"""Shared pieces of the timm family files (not a family: the registry skips ``_`` modules)."""

#: Where timm keeps the layers every vision family shares.
SHARED = ("timm.layers",)

#: The baseline groups defined for a timm ViT-style family (baselines/: attention maps,
#: Chefer's LRP, gradients).
ALL_BASELINES = frozenset({"attention", "chefer", "gradient"})


def image_family(name: str, library: str, model_class: str, rules, *, position: str, order: int,
                 examples: str, notes: str = "", default_rules=None,
                 rule_sets: tuple[str, ...] = ("uniform", "custom"),
                 baselines: frozenset = frozenset({"gradient"})):
    """The :class:`Family` of a timm or torchvision image classifier (one model class, the
    ``pixel_values`` stream, the paper's vision map): the fields that differ are given, the rest
    are those every such family shares. ``default_rules``: the uniform (AttnLRP) set unless
    given."""
    from ..family import Family
    from ..positional import VISION_PAPER
    from ..rules import UNIFORM_RULES

    return Family(name=name, library=library, rules=rules,
                  tasks={model_class: "image_classifier"}, stream="pixel_values",
                  position=position, default_rules=default_rules or UNIFORM_RULES,
                  rule_sets=rule_sets, combination=VISION_PAPER, baselines=baselines,
                  _order=order, examples=examples, notes=notes)


def vision_rules(head: str, **more: str) -> dict:
    """The rules of a timm ViT-style map that every family shares (the paper's vision rules,
    docs/method.md section 4): the patch-embedding conv Gamma 100, the MLP linears and the
    classifier ``head`` Gamma 0.05, LayerNorm std constant, GELU identity; ``more``: the
    family's own places (its attention)."""
    return {"PatchEmbed.proj": "gamma_conv", "Mlp.fc1": "gamma_linear",
            "Mlp.fc2": "gamma_linear", head: "gamma_linear", "LayerNorm": "layer_norm",
            "GELU": "identity", **more}
