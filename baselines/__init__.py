"""Vision baselines of the PA-LRP benchmarks (docs/method.md, section 6) and the one method registry.

- :mod:`palrp.baselines.attention`: rollout, raw attention, attention GradCAM;
- :mod:`palrp.baselines.chefer_lrp`: Chefer's LRP rules giving each block's attention relevance R_A;
- :mod:`palrp.baselines.attribution`: partial LRP, Transformer Attribution, gradient x input,
  integrated gradients;
- :mod:`palrp.baselines.registry`: ``METHODS``, ``available_methods()``, ``explain_batch()`` for every
  method, PA-LRP, AttnLRP and PE-only included.
"""
from .registry import METHODS, MethodSpec, available_methods, display_name, explain_batch

__all__ = ["METHODS", "MethodSpec", "available_methods", "display_name", "explain_batch"]
