"""PaliGemma (transformers ``PaliGemmaForConditionalGeneration``): a composite of SigLIP's vision
tower (``siglip_vision``) and a Gemma language model (``gemma``, or ``gemma2`` for PaliGemma 2),
in one patch and one backward; the glue, a linear projector and the LM head, is plain. The
prompt is a prefix: the stock mask lets the image and prompt tokens (``token_type_ids`` 0)
attend to each other both ways (prefix-LM attention), which the engine keeps (the kernel wrapper
sees the stock mask). Positions count from 1 (``first_position=1``: the engine passes
``cumsum(mask)``, what the stock forward uses without padding). The next token is explained
over the image patches (pixels, the tower's position table) and the tokens (embeddings, RoPE
placing the image tokens too); image placeholders carry no token relevance."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"PaliGemmaForConditionalGeneration": "causal_lm", "PaliGemmaModel": "part"}

FAMILY = Family(
    name="paligemma", library="transformers",
    rules=RuleMap(name="paligemma", model_classes=tuple(_TASKS), modules=dict(ACTIVATIONS),
                  plain=PLAIN + ("PaliGemmaMultiModalProjector",),
                  namespaces=namespaces("paligemma")),
    tasks=_TASKS, stream=None, first_position=1, baselines=frozenset(), _order=152,
    examples="PaliGemmaForConditionalGeneration (SigLIP tower + Gemma)")
