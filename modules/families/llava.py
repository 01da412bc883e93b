"""LLaVA (transformers ``LlavaForConditionalGeneration``): a composite. Its vision tower and
language model are parts explained by their own families (CLIP vision, Llama, ... whatever
registered families they are), in the same patch and the same backward; the glue is the
projector (linears plain, its GELU identity) and the LM head (plain). The next token is explained
over the image patches (``pixel_values``: the tower's pixels and its position table) and the text
tokens (``input_ids``: the token embeddings and the language model's RoPE, which also places the
image tokens); the image placeholder tokens carry no token relevance (their embeddings are
replaced by the projected image features)."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"LlavaForConditionalGeneration": "causal_lm", "LlavaModel": "part"}

FAMILY = Family(
    name="llava", library="transformers",
    rules=RuleMap(name="llava", model_classes=tuple(_TASKS), modules=dict(ACTIVATIONS),
                  plain=PLAIN + ("LlavaMultiModalProjector",), namespaces=namespaces("llava")),
    tasks=_TASKS, stream=None, baselines=frozenset(), _order=60,
    examples="LlavaForConditionalGeneration (any registered vision tower and language model)")
