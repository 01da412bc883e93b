"""The transformers adapter: how the engine reaches released ``transformers`` models (text
decoders and encoders, vision towers); the only module that knows their internals.

Rules it implements for the transformers family maps (docs/method.md; tables in
docs/text_families.md):

| place                                   | rule                   | how                              |
|-----------------------------------------|------------------------|----------------------------------|
| linears (incl. Conv1D, fused projections), residual adds, embeddings sums | epsilon | plain autograd |
| RMSNorm (incl. (1 + w), q_norm/k_norm)  | RMS constant           | identity rule ``g * y / x``       |
| LayerNorm                               | std constant           | :func:`rules.layer_norm_const_std` |
| SiLU, GELU, GELU-tanh, tanh (pooler, soft-capping) | identity    | :func:`rules.identity_act`       |
| gated product ``act(gate) * up``        | uniform                | gradient halved at ``down_proj``'s input |
| ``Q K^T``                               | uniform                | q and k gradients halved at the kernel |
| ``A V``                                 | uniform                | kernel output gradient halved    |
| softmax, scale, mask                    | plain                  | the stock kernel (eager, sdpa, flash) |
| RoPE ``q cos + rot(q) sin`` (and k)     | uniform on each product (PA-LRP) | cos/sin leaves' gradient halved, rotary dims of q/k halved |
| absolute PE ``E + P (+ T)``             | epsilon on the sum     | the P (and T) embedding outputs are leaves |
| vision PE table ``z = E + P`` (a Parameter, maybe resampled) | epsilon on the sum | the addend ``P`` as added is the leaf |
| relative position bias ``s = q.k / sqrt(d) + b`` (BEiT, Swin) | epsilon on the score sum | the bias, per sample (and window), is the leaf (:mod:`.hf_relative_bias`) |
| ``nn.MultiheadAttention`` pooling (SigLIP's head) | uniform on ``Q K^T`` and ``A V`` | the stock module, its query, key and output gradients halved (:mod:`.multihead_attention`) |
| patchified images (SigLIP 2), the table resized per image | epsilon on the sum | the resized table as added is the leaf (:mod:`.patch_sequence`) |
| Swin V2's inline cosine window attention | norms constant, uniform on both products, the bias a leaf | a torch function mode in its forward (:mod:`.cosine_window_attention`) |

Decoders whose modelling code is not Llama's (inline attention with ALiBi or its own eager and
SDPA code, per-head fused projections, GPT-J's ``(sin, cos)``, parameter-free LayerNorms) get
their rules from :mod:`palrp.modules.adapters.decoders`, mixtures of experts from
:mod:`palrp.modules.adapters.moe`; a PEFT model is explained as its merged model
(:mod:`palrp.modules.adapters.peft`).

The attention itself is never re-implemented: the model's attention modules see an
implementation name registered in transformers' ``AttentionInterface`` that wraps the stock
kernel the model was loaded with (``config._attn_implementation``: eager, sdpa,
flash_attention_2, ...). The wrapper halves the gradients reaching q, k and the kernel's output
and lets the stock kernel do the rest, so sliding windows, sinks, soft-capping, GQA and the
stock masks stay the stock code's and memory stays that of the kernel (linear in S for
sdpa/flash). Query rows that the mask blocks entirely (a left-padded sample's pad positions
under a causal mask) are given their own key, so no kernel in any dtype turns them into NaN;
real positions never see pad keys, so no number at a real position changes. The wrapper's name
is registered only while an ``lrp()`` context needs it (it is reached through the per-instance
config views this adapter installs, removed on exit); the last context to exit removes it from
transformers' global mapping.

Per part, the adapter makes the stream's leaves: the token embeddings (``part.token_leaf``)
of a text stream, the positional leaves in ``part.source`` (two per layer, cos and sin, for
RoPE; one for a learned table), a token-type embedding (``part.token_type_leaf``).

A vision family's learned table may be an ``nn.Parameter`` added inside its owner's forward
(``Family.position_parameter``: ViT, DeiT, DINOv2) instead of a module whose output is added.
While the owner's stock forward runs, a torch function mode (:class:`_PositionTableAdd`)
replaces the addend of the addition that is the table by a per-sample leaf with its values: the
table is recognised by identity, either the parameter itself or the tensor the owner's
``interpolate_pos_encoding`` returned (wrapped per instance to record it), so the leaf is the
table *as added*, after any resampling to the input's grid (DINOv2 always calls it; ViT and DeiT
when ``interpolate_pos_encoding=True``). The parameter is never replaced or modified, so the
resampling itself reads the stock table, and both wrappers are undone on exit.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import sys

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import checkpoint

from ..rules import identity_act, layer_norm_const_std, scale_grad
from .decoders import INLINE_ATTENTION_RULES, decoder_factories
from .moe import moe_factories
from . import cosine_window_attention, hf_relative_bias, multihead_attention, patch_sequence
from . import rope_sections

__all__ = ["factories", "check", "install", "logits_to_keep_kwargs", "open_empty_rows",
           "geometry", "forward_context"]


def logits_to_keep_kwargs(model, positions: torch.Tensor) -> dict:
    """Keyword asking a causal LM for the logits at ``positions`` only (1-D tensor of sequence
    positions, the same for every sample); empty when the head has no such option."""
    # the class's forward: inside lrp() the instance forward is the rule wrapper (*args)
    params = inspect.signature(type(model).forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: positions}
    return {}


# =========================================================================================
# Masks: no fully masked query row.
# =========================================================================================

def open_empty_rows(mask):
    """The 4-D attention mask (bool: True = attend; float: additive) with every query row that
    attends to nothing opened on its own key (the diagonal, offset for a longer key range).

    Such rows are padding queries (left padding under a causal mask); every kernel turns them
    into NaN in some dtype (an all ``-inf`` softmax, or a float64 minimum cast to float32), and
    NaN spreads through the backward. Real queries never attend to pad keys, so opening a pad
    row's own key changes nothing at any real position. Other masks (``None``, 2-D padding
    masks of the flash path, block masks) are returned as they are."""
    if not torch.is_tensor(mask) or mask.dim() != 4:
        return mask
    if mask.dtype == torch.bool:
        allowed = mask
    else:
        allowed = mask > torch.finfo(mask.dtype).min / 2
    empty = ~allowed.any(dim=-1, keepdim=True)
    if not bool(empty.any()):
        return mask
    q_len, kv_len = mask.shape[-2:]
    rows = torch.arange(q_len, device=mask.device)[:, None] + (kv_len - q_len)
    own = rows == torch.arange(kv_len, device=mask.device)[None, :]
    opened = empty & own
    if mask.dtype == torch.bool:
        return mask | opened
    return mask.masked_fill(opened, 0.0)


# =========================================================================================
# The attention kernel wrapper, registered in transformers' AttentionInterface.
# =========================================================================================

_PREFIX = "palrp_"


@functools.lru_cache(maxsize=None)
def _eager_kernel(module_file: str):
    kernel = getattr(sys.modules[module_file], "eager_attention_forward", None)
    if kernel is None:
        raise RuntimeError(f"{module_file} has no eager_attention_forward; the text engine "
                           "needs the attention-interface modelling code of transformers >= 5")
    return kernel


def _stock_kernel(module, impl: str):
    if impl == "eager":
        return _eager_kernel(type(module).__module__)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    return ALL_ATTENTION_FUNCTIONS[impl]


class _ConfigView:
    """A model config as one attention module sees it: every attribute delegated, except the
    attention implementation, which names the LRP wrapper of the stock kernel."""

    def __init__(self, config, impl: str):
        self.__dict__["_base"] = config
        self.__dict__["_attn_implementation"] = _PREFIX + impl
        self.__dict__["stock_impl"] = impl

    def __getattr__(self, name):
        return getattr(self.__dict__["_base"], name)

    def __setattr__(self, name, value):
        setattr(self.__dict__["_base"], name, value)


def _lrp_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """The stock kernel with the uniform rule on ``Q K^T`` (q and k gradients halved) and on
    ``A V`` (the output gradient halved, which halves A's and V's shares alike); the softmax is
    plain gradient x input (the AttnLRP softmax rule)."""
    view = module.config
    impl = view.stock_impl
    kernel = _stock_kernel(module, impl)
    # the stock kernel reads the stock name (e.g. flash picks its variant by it)
    view.__dict__["_attn_implementation"] = impl
    try:
        out, weights = kernel(module, scale_grad(query, 0.5), scale_grad(key, 0.5), value,
                              open_empty_rows(attention_mask), *args, **kwargs)
    finally:
        view.__dict__["_attn_implementation"] = _PREFIX + impl
    return scale_grad(out, 0.5), weights


_REGISTERED: dict[str, int] = {}


def _register(patcher, impl: str) -> None:
    """Register the LRP wrapper of kernel ``impl`` in transformers' ``AttentionInterface``
    for as long as an ``lrp()`` context needs it: removed from the global mapping when the last
    context that registered it exits."""
    from transformers.modeling_utils import AttentionInterface
    name = _PREFIX + impl
    if not _REGISTERED.get(name):
        AttentionInterface.register(name, _lrp_attention)
    _REGISTERED[name] = _REGISTERED.get(name, 0) + 1

    def release():
        _REGISTERED[name] -= 1
        if not _REGISTERED[name]:
            getattr(AttentionInterface, "_global_mapping", {}).pop(name, None)

    patcher.on_exit(release)


# =========================================================================================
# Inline elementwise functions with the identity rule.
# =========================================================================================

_INLINE = {
    "tanh": (torch.tanh, torch.Tensor.tanh, F.tanh),
    "gelu": (F.gelu,),
}


class _IdentityFunctions(TorchFunctionMode):
    """While active, the named torch functions (called inline by the stock code, e.g. Gemma 2's
    soft-capping ``cap * tanh(x / cap)``) get the identity rule ``R_x = R_y``."""

    def __init__(self, names):
        super().__init__()
        self.funcs = {f for name in names for f in _INLINE[name]}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.funcs and torch.is_grad_enabled() and torch.is_tensor(args[0]) \
                and args[0].requires_grad:
            rest = args[1:]
            return identity_act(args[0], lambda t: func(t, *rest, **kwargs))
        return func(*args, **kwargs)


def _single_tensor_forward(rule):
    """Adapt ``rule(x, call)`` to a module forward whose first argument is the tensor."""

    def make(module, original):
        def forward(x, *args, **kwargs):
            return rule(x, lambda t: original(t, *args, **kwargs), module)
        return forward
    return make


def _rms_norm(x, call, module):
    # y = x * w / rms(x) with rms constant is elementwise-linear: R_x = R_y, g_x = g_y * y / x
    return identity_act(x, call)


def _layer_norm(x, call, module):
    if not isinstance(module, torch.nn.LayerNorm) or len(module.normalized_shape) != 1:
        raise RuntimeError(f"layer_norm rule expects a LayerNorm over the last dim, got "
                           f"{type(module).__name__}")
    return layer_norm_const_std(x, module.weight, module.bias, module.eps)


def _identity(x, call, module):
    return identity_act(x, call)


def _halve_input(x, call, module):
    # the only consumer of the gated product: halving here is the uniform rule on both factors
    return call(scale_grad(x, 0.5))


def _rotary_scale(width: int, head_dim: int, rotary_dim: int, parts, device, dtype):
    """Per-channel gradient scale of a q/k (or fused q/k/v) projection output: 1/2 on the
    rotary dims of each q/k head (the uniform rule's share of q, k in ``q cos``,
    ``rot(q) sin``), 1 on partial-rotary pass-through dims and on v."""
    head = torch.ones(head_dim, device=device, dtype=dtype)
    head[:rotary_dim] = 0.5
    pieces = []
    for kind, heads in parts:
        pieces.append(head.repeat(heads) if kind == "qk" else
                      torch.ones(heads * head_dim, device=device, dtype=dtype))
    scale = torch.cat(pieces)
    if scale.numel() != width:
        raise RuntimeError(f"projection width {width} does not match {parts} x {head_dim}")
    return scale




# =========================================================================================
# The adapter's interface to the engine.
# =========================================================================================

def _attention_rule(part, sin_first: bool = False, pair_width: int = 1):
    """The family's attention module: the stock forward, with this layer's rotary cos/sin
    made positional leaves (halved gradients: the uniform rule on the rotary products). A layer
    whose ``family.rope_gate`` attribute is false applies no RoPE (a NoPE layer): it gets no
    leaves and its q/k projections are not halved. ``sin_first``: the module receives
    ``(sin, cos)`` (GPT-J); ``pair_width``: q/k channels per cos/sin entry (GPT-J: 2, its cos
    and sin are repeated over each interleaved pair inside the attention)."""
    family = part.family

    def make(module, original):
        def forward(*args, **kwargs):
            if family.rope_gate and not getattr(module, family.rope_gate):
                # a NoPE layer: no rotary products, so no positional leaves, and q/k keep all
                part.rotary_width[module] = 0
            elif family.position == "rotary":
                if "position_embeddings" in kwargs:
                    cos, sin = kwargs["position_embeddings"]
                else:
                    cos, sin = args[1]
                if sin_first:
                    cos, sin = sin, cos
                part.rotary_width[module] = cos.shape[-1] * pair_width
                if part.source.attribute and not family.rotary_module:
                    pair = part.cache.get(module)
                    if pair is None:  # first call this pass (not a checkpoint recompute)
                        batch = (kwargs.get("hidden_states", args[0] if args else None)).shape[0]
                        index = getattr(module, "layer_idx", len(part.cache))
                        pair = (_rotary_leaf(part, cos, batch, f"cos_{index}"),
                                _rotary_leaf(part, sin, batch, f"sin_{index}"))
                        part.cache[module] = pair
                    pair = tuple(rope_sections.assemble(leaf) for leaf in pair)
                    halved = (scale_grad(pair[0], 0.5), scale_grad(pair[1], 0.5))
                    if sin_first:
                        halved = halved[::-1]
                    if "position_embeddings" in kwargs:
                        kwargs["position_embeddings"] = halved
                    else:
                        args = (args[0], halved, *args[2:])
            return original(*args, **kwargs)
        return forward
    return make


def _rotary_leaf(part, tensor, batch: int, label: str):
    """A layer's cos or sin as positional leaves: one, or one per rotary section
    (``Family.rope_sections``, :mod:`.rope_sections`: a ``Sectioned``, rebuilt at each use)."""
    names = part.family.rope_sections
    if not names:
        return part.source.leaf(tensor, batch, label)
    sizes = rope_sections.section_sizes(part.module.config, names, tensor.shape[-1])
    return rope_sections.sectioned_leaf(part.source, tensor, batch, label, names, sizes)


def _rotary_projection(part, fused: bool):
    def make(module, original):
        owner = part.parents[module]

        def forward(x, *args, **kwargs):
            out = original(x, *args, **kwargs)
            if not part.source.attribute:
                return out
            head_dim = owner.head_dim
            rotary_dim = part.rotary_width.get(owner, head_dim)
            if fused:
                cfg = owner.config
                # no num_key_value_heads (ModernBERT): as many k/v heads as q heads
                kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
                parts = (("qk", cfg.num_attention_heads), ("qk", kv_heads), ("v", kv_heads))
            else:
                parts = (("qk", out.shape[-1] // head_dim),)
            scale = _rotary_scale(out.shape[-1], head_dim, rotary_dim, parts, out.device,
                                  out.dtype)
            return scale_grad(out, scale)
        return forward
    return make


#: Rules of attention modules that call their kernel through transformers' AttentionInterface
#: (they see the LRP kernel wrapper through a config view).
_KERNEL_RULES = ("attention", "attention_sin_cos", "attention_no_clip")


def factories(part) -> dict:
    """Rule name -> ``make(module, original)`` for one part."""
    if part.rules.attention != "uniform":
        raise ValueError(f"the {part.family.name} family implements AttnLRP's uniform attention "
                         f"rule only; got the rule set {part.rules.name!r}")
    from .disentangled import factories as disentangled
    return {
        **disentangled(part),
        **hf_relative_bias.factories(part),
        **multihead_attention.factories(part),
        **cosine_window_attention.factories(part),
        **patch_sequence.factories(part),
        "rms_norm": _single_tensor_forward(_rms_norm),
        "layer_norm": _single_tensor_forward(_layer_norm),
        "identity": _single_tensor_forward(_identity),
        "halve_input": _single_tensor_forward(_halve_input),
        "attention": _attention_rule(part),
        "rotary_qk": _rotary_projection(part, fused=False),
        "rotary_qkv": _rotary_projection(part, fused=True),
        "attention_sin_cos": _attention_rule(part, sin_first=True, pair_width=2),
        **moe_factories(),
        **decoder_factories(part),
        "halve_qk_of_qkv": rope_sections.halve_qk_of_fused_qkv(part),
    }


def check(module) -> None:
    """Nothing to refuse beyond what the family map does not cover."""


def kernel_name(config) -> str:
    """The attention kernel the rules wrap: the model's own, except eager for soft-capped
    attention logits (the identity rule on the capping tanh is reachable only there)."""
    impl = getattr(config, "_attn_implementation", None) or "eager"
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return "eager"
    return impl


def base_of(root):
    """The base model of a head class (``model.model``, ``model.bert``), or the root itself."""
    prefix = getattr(root, "base_model_prefix", "")
    base = getattr(root, prefix, None) if prefix else None
    return base if isinstance(base, torch.nn.Module) else root


def install(patcher, part, counts: dict) -> None:
    """Everything of a transformers part beyond its rule map: the attention modules' config
    views (so they call the LRP kernel wrapper), the leaves of the stream (token embeddings,
    the learned position and token-type tables) and the checkpointing switch."""
    family, root = part.family, part.module
    config = root.config
    impl = kernel_name(config)
    _register(patcher, impl)
    if impl != (getattr(config, "_attn_implementation", None) or "eager"):
        # masks are built for the kernel that runs (eager: additive, never "is_causal")
        patcher.set_value(config, "_attn_implementation", impl)
    if family.composite:
        if "image_text" in family.tasks.values():
            # a dual encoder's score glue (norms constant, the product uniform)
            from ..family import part_family
            from . import dual_encoder
            towers = [m for m in root.modules() if m is not root and part_family(m) is not None]
            dual_encoder.install(patcher, part, towers)
        return          # the glue of a composite (projector, head): its map alone
    if not any(counts.get(rule) for rule in
               (*_KERNEL_RULES, *INLINE_ATTENTION_RULES, "disentangled_attention",
                "cosine_window_attention")):
        raise RuntimeError(f"no {family.name} attention module found in "
                           f"{type(root).__name__}; the family map does not match this "
                           "transformers release")
    for rule in _KERNEL_RULES:
        for module in part.places_of(rule):
            patcher.set_attr(module, "config", _ConfigView(module.config, impl))
    base = base_of(root)
    if family.decoder_stream:
        from .seq2seq import install_streams
        install_streams(patcher, part, _token_embedding, _position_embedding)
    elif family.stream == "input_ids":
        patcher.wrap_forward(root.get_input_embeddings(), _token_embedding(part))
    if family.position_module and "additive" in family.position and not family.decoder_stream:
        patcher.wrap_forward(base.get_submodule(family.position_module),
                             _position_embedding(part))
        _install_resampled_table(patcher, part, base)
    elif family.position_module and family.position == "relative" and not family.decoder_stream:
        # an absolute table beside relative scores, where the config has one (DeBERTa-v2's
        # position_biased_input; None in DeBERTa-v3)
        table = base.get_submodule(family.position_module.rpartition(".")[0])
        table = getattr(table, family.position_module.rpartition(".")[2], None)
        if table is not None:
            patcher.wrap_forward(table, _position_embedding(part))
    if family.position_parameter and "additive" in family.position:
        _install_position_parameter(patcher, part, base)
    if family.rotary_module:
        rope_sections.install_shared_rotary(patcher, part)
    if family.token_type_module:
        patcher.wrap_forward(base.get_submodule(family.token_type_module),
                             _token_type_embedding(part))
    from transformers.modeling_layers import GradientCheckpointingLayer
    others = {id(m) for sibling in part.siblings if sibling is not part
              and sibling.module is not root for m in sibling.module.modules()}
    for module in root.modules():
        if id(module) in others:
            continue        # another part of the family (an encoder-decoder's decoder)
        if hasattr(module, "gradient_checkpointing"):
            # transformers' own (reentrant by default) checkpointing would drop the
            # gradients of leaves that are not layer inputs; the engine's replaces it
            patcher.set_attr(module, "gradient_checkpointing", False)
        if part.gradient_checkpointing and isinstance(module, GradientCheckpointingLayer):
            patcher.wrap_forward(module, _checkpointed(part))


def _token_embedding(part):
    def make(original):
        def forward(*args, **kwargs):
            out = original(*args, **kwargs)
            leaf = out.detach().requires_grad_(True)
            # a token embedding shared by two parts (an encoder-decoder) feeds the active one
            reader = next((p for p in part.siblings if p.active), part)
            reader.token_leaf, reader.batch_size = leaf, leaf.shape[0]
            return leaf
        return forward
    return make


def _position_embedding(part):
    label = part.family.position_module.rsplit(".", 1)[-1]
    if part.stream_name:
        label = f"decoder_{label}"

    def make(original):
        def forward(*args, **kwargs):
            out = original(*args, **kwargs)
            if out.dim() == 2:          # a table looked up without a batch dim
                out = out.unsqueeze(0)
            return part.source.leaf(out, part.batch_size or out.shape[0], label)
        return forward
    return make


#: The method by which transformers' vision embeddings resample a learned position table to the
#: input's patch grid (``(embeddings, height, width) -> (1, n, D)``).
_RESAMPLE = "interpolate_pos_encoding"

_IN_PLACE = frozenset({torch.Tensor.add_, torch.Tensor.__iadd__})
_ADDITIONS = frozenset({torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__,
                        *_IN_PLACE})


class _PositionTableAdd(TorchFunctionMode):
    """Active while the owner of a parameter position table runs its stock forward: the addend
    of an addition that *is* the table (by identity: the parameter, or a table the owner's
    resampling returned, see :meth:`watch`) is replaced by a per-sample positional leaf with
    the same values, shaped like the other addend's batch. Every other call runs unchanged."""

    def __init__(self, part, table: torch.Tensor, label: str):
        super().__init__()
        self.part, self.label = part, label
        self.tables = [table]

    def watch(self, tensor) -> None:
        """Treat ``tensor`` (what the resampling returned) as the table from now on."""
        if torch.is_tensor(tensor):
            self.tables.append(tensor)

    def _is_table(self, value) -> bool:
        return torch.is_tensor(value) and any(value is table for table in self.tables)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _ADDITIONS and len(args) >= 2:
            args = list(args)
            # an in-place sum may only have the table as its addend, never as its target
            places = ((1, args[0]),) if func in _IN_PLACE else ((1, args[0]), (0, args[1]))
            for at, other in places:
                if self._is_table(args[at]) and torch.is_tensor(other) and other.dim() == 3:
                    args[at] = self.part.source.leaf(args[at], other.shape[0], self.label)
                    break
        return func(*args, **kwargs)


def _install_position_parameter(patcher, part, base) -> None:
    """Make the family's parameter position table (``Family.position_parameter``) a
    per-sample leaf where its owner adds it: the owner's forward runs under
    :class:`_PositionTableAdd`, and its ``interpolate_pos_encoding`` (if it has one) reports
    the table it returns, so a resampled table is the leaf."""
    path = part.family.position_parameter
    owner_path, _, name = path.rpartition(".")
    owner = base.get_submodule(owner_path) if owner_path else base
    table = owner._parameters.get(name)
    if table is None and getattr(owner, name, None) is None:
        return      # an optional table this model has none of (BEiT's, Swin's absolute table)
    if not isinstance(table, torch.nn.Parameter) or table.dim() != 3 or table.shape[0] != 1:
        raise RuntimeError(f"{type(owner).__name__}.{name} is not a (1, N, D) position table "
                           f"parameter; the {part.family.name} family map does not match this "
                           "transformers release")
    active: list[_PositionTableAdd] = []

    def make_forward(original):
        def forward(*args, **kwargs):
            mode = _PositionTableAdd(part, owner._parameters[name], name)
            active.append(mode)
            try:
                with mode:
                    return original(*args, **kwargs)
            finally:
                active.pop()
        return forward

    patcher.wrap_forward(owner, make_forward)
    resample = getattr(owner, _RESAMPLE, None)
    if callable(resample):
        def resampled(*args, **kwargs):
            out = resample(*args, **kwargs)
            if active:
                active[-1].watch(out)
            return out
        patcher.set_attr(owner, _RESAMPLE, resampled)


def _install_resampled_table(patcher, part, base) -> None:
    """A table module's owner that resamples the table to the input's grid
    (``interpolate_pos_encoding``, CLIP's and SigLIP's vision embeddings, called instead of the
    table module at another input size): the table it returns, as added, is the positional leaf
    (the same label as the module's). A table the resampling got from the (already wrapped)
    module itself is that leaf already and is returned as it is."""
    owner_path, _, name = part.family.position_module.rpartition(".")
    owner = base.get_submodule(owner_path) if owner_path else base
    resample = getattr(owner, _RESAMPLE, None)
    if not callable(resample):
        return

    def resampled(embeddings, *args, **kwargs):
        out = resample(embeddings, *args, **kwargs)
        if any(out is leaf for leaf in part.source.leaves()) or not torch.is_tensor(out):
            return out
        return part.source.leaf(out, embeddings.shape[0], name)

    patcher.set_attr(owner, _RESAMPLE, resampled)


def _token_type_embedding(part):
    def make(original):
        def forward(*args, **kwargs):
            out = original(*args, **kwargs)
            leaf = out.detach().expand(part.batch_size or out.shape[0], *out.shape[1:])
            leaf = leaf.clone().requires_grad_(True)
            part.token_type_leaf = leaf
            return leaf
        return forward
    return make


def forward_context(part):
    """Entered around every forward of the explained model (and every recompute)."""
    if part.family.identity_functions:
        return _IdentityFunctions(part.family.identity_functions)
    return contextlib.nullcontext()


def _checkpointed(part):
    def make(original):
        def run(*args, **kwargs):
            with forward_context(part):  # also while recomputing in the backward
                return original(*args, **kwargs)

        def forward(*args, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(run, *args, use_reentrant=False, **kwargs)
            return original(*args, **kwargs)
        return forward
    return make


def geometry(part, images: torch.Tensor) -> dict:
    """An image stream's layout in a transformers vision model (``part``: the engine's part
    reading the stream): the patch size of its config
    (a composite config's ``vision_config``), the grid of these images, and the prefix: the
    position table's length minus the configured grid (CLIP's and ViT's class token; DeiT's
    class and distillation tokens; none for SigLIP). The positional sinks follow the table's
    layout, so DINOv2's register tokens, inserted after the position add, are not in it."""
    root = part.module
    config = root.config
    config = getattr(config, "vision_config", None) or config
    patch = config.patch_size
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    relative = hf_relative_bias.geometry(part, images, (ph, pw))
    if relative is not None:        # relative position biases (BEiT, Swin)
        return relative
    patches = patch_sequence.geometry(part, images, (ph, pw))
    if patches is not None:         # patchified images (SigLIP 2)
        return patches
    height, width = images.shape[-2:]
    size = config.image_size
    sh, sw = (size, size) if isinstance(size, int) else tuple(size)
    return {"patch_size": (ph, pw), "grid": (height // ph, width // pw),
            "prefix": position_table_length(root, part.family) - (sh // ph) * (sw // pw)}


def position_table_length(root, family) -> int:
    """N, the number of positions of the learned table of ``root`` (of ``family``): a module
    (``position_module``, an ``nn.Embedding``) or a (1, N, D) parameter
    (``position_parameter``)."""
    base = base_of(root)
    if family.position_parameter:
        return base.get_parameter(family.position_parameter).shape[1]
    return base.get_submodule(family.position_module).num_embeddings
