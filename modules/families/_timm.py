"""Shared pieces of the timm family files (not a family: the registry skips ``_`` modules)."""

#: Where timm keeps the layers every vision family shares.
SHARED = ("timm.layers",)

#: The baseline groups defined for a timm ViT-style family (baselines/: attention maps,
#: Chefer's LRP, gradients).
ALL_BASELINES = frozenset({"attention", "chefer", "gradient"})
