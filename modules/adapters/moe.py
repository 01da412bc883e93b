"""Rules of a mixture-of-experts block (docs/method.md, "Mixture of experts"), for the
transformers adapter.

- ``moe_experts`` (the ``...Experts`` module of transformers' ``@use_experts_implementation``
  classes: Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE): the routing weights it receives are
  detached, constants of the backward as AttnLRP's attention probabilities are, so the weighted
  sum of the chosen experts' outputs is a linear combination with constant weights: the epsilon
  rule, which plain autograd is. Inside each expert the gated product ``act(gate) * up`` gets the
  uniform rule; the backward from the block's output to its input is linear in the incoming
  gradient (constant weights, identity rule on ``act``, linear projections), so halving the
  gradient at the experts' input equals halving it at every expert's product: that is where it
  is halved. The stock forward of the experts implementation the model was loaded with
  (``config._experts_implementation``: eager loop, ``batched_mm``, ``grouped_mm``) runs
  unchanged; the wrapper only touches the gradients.
- ``constant_output``: a module whose output is a constant of the backward (Qwen2-MoE's
  ``shared_expert_gate``: the sigmoid gate of the shared expert is treated like the routing
  weights, so ``sigmoid(gate(x)) * shared(x)`` is the shared expert scaled by a constant: the
  epsilon rule).
"""
from __future__ import annotations

from ..rules import scale_grad

__all__ = ["moe_factories"]


def _experts(module, original):
    def forward(hidden_states, top_k_index, top_k_weights, *args, **kwargs):
        return original(scale_grad(hidden_states, 0.5), top_k_index, top_k_weights.detach(),
                        *args, **kwargs)
    return forward


def _constant_output(module, original):
    def forward(*args, **kwargs):
        return original(*args, **kwargs).detach()
    return forward


def moe_factories() -> dict:
    """Rule name -> ``make(module, original)``: the mixture-of-experts rules."""
    return {"moe_experts": _experts, "constant_output": _constant_output}
