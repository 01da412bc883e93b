"""Gemma 3 with images (transformers ``Gemma3ForConditionalGeneration``): a composite of SigLIP's
vision tower (``siglip_vision``) and the Gemma 3 language model (``gemma3``: local and global
RoPE, q/k norms, soft-capping identity), in one patch and one backward. The glue is the
projector: a 2-D average pool of the patch grid to ``mm_tokens_per_image`` tokens (linear,
plain), an RMSNorm (identity rule, RMS constant) and a matrix product with the projection
weight (plain), then the LM head (plain). The next token is explained over the image patches
(``pixel_values``: pixels and the tower's learned position table) and the tokens
(``input_ids``: embeddings and the LM's RoPE, which also places the image tokens; the
``token_type_ids`` the processor gives open bidirectional attention among an image's tokens,
the stock mask). Image placeholders carry no token relevance."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"Gemma3ForConditionalGeneration": "causal_lm", "Gemma3Model": "part"}

FAMILY = Family(
    name="gemma3_vlm", library="transformers",
    rules=RuleMap(name="gemma3_vlm", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "Gemma3RMSNorm": "rms_norm"},
                  plain=PLAIN + ("Gemma3MultiModalProjector", "AvgPool2d"),
                  namespaces=namespaces("gemma3")),
    tasks=_TASKS, stream=None, baselines=frozenset(), _order=151,
    examples="Gemma3ForConditionalGeneration (SigLIP tower + Gemma 3)")
