"""Encoder-decoder streams and relative-position biases for the transformers adapter
(docs/method.md, section 3 and "Encoders, masked LMs and encoder-decoders").

An encoder-decoder family (``Family.decoder_stream``) is explained as two parts of one family in
one backward: the root part reads ``input_ids`` through the encoder stack, the decoder part
(``root.get_decoder()``) reads ``decoder_input_ids``. Each stack's token embedding output is its
part's token leaf (transformers 5 gives each stack its own embedding module, weights tied);
where both stacks call one module, the decoder part is *active* while its stack runs, and the
embedding's output becomes the leaf of the part whose stack called it. Each stack's own
positional encoding is its part's positional source:

- an additive table (BART's and MBART's learned positions with their offset of 2, Marian's fixed
  sinusoidal table): the stack's ``position_module`` output is the leaf (the epsilon rule on ``E
  + P``, section 3), like any learned table;
- a relative-position bias (T5's bucketed ``relative_attention_bias``, ``Family.position ==
  "relative"``): the (1, heads, queries, keys) bias that the stack's first layer computes and
  every layer adds to its attention scores is the leaf, read per key position
  (:meth:`PositionalSource.leaf` with ``position_dim=3``): its relevance is ``bias * grad``, the
  epsilon rule on the sum ``QK^T + bias`` (M15), summed over heads and queries and over the
  layers that share the bias.

Under ``attn_lrp`` every one of these tensors is a constant (the source returns it detached)."""
from __future__ import annotations

import torch

__all__ = ["stack_of", "install_streams", "install_relative_bias"]


def stack_of(part) -> torch.nn.Module:
    """The stack that reads ``part``'s stream: the decoder part's own module, or the root's
    encoder."""
    return part.module if part.stream_name else part.module.get_encoder()


def _active_while_running(part):
    def make(original):
        def forward(*args, **kwargs):
            previous, part.active = part.active, True
            try:
                return original(*args, **kwargs)
            finally:
                part.active = previous
        return forward
    return make


def install_streams(patcher, part, token_embedding, position_embedding) -> None:
    """The leaves of one stream of an encoder-decoder: each part wraps its stack's token
    embedding (``token_embedding(part)``; one module shared by both stacks is wrapped once, and
    routes to the active part), the decoder part marks itself active while its stack runs;
    each part's positional leaves come from its own stack (``position_embedding(part)`` wraps
    an additive table)."""
    family = part.family
    stack = stack_of(part)
    embedding = stack.get_input_embeddings()
    if part.stream_name:
        patcher.wrap_forward(stack, _active_while_running(part))
        encoder = next(p for p in part.siblings if not p.stream_name)
        if embedding is stack_of(encoder).get_input_embeddings():
            embedding = None        # one module: the encoder part's wrapper routes to us
    if embedding is not None:
        patcher.wrap_forward(embedding, token_embedding(part))
    if family.position == "relative":
        install_relative_bias(patcher, part, stack)
    elif family.position_module:
        patcher.wrap_forward(stack.get_submodule(family.position_module),
                             position_embedding(part))


def install_relative_bias(patcher, part, stack) -> None:
    """Make the relative-position bias of each attention module of ``stack`` that owns one
    (``relative_attention_bias`` and ``compute_bias``, T5's first layer) a per-sample leaf of
    ``part``'s source, read per key position."""
    owners = [m for m in stack.modules()
              if isinstance(getattr(m, "relative_attention_bias", None), torch.nn.Module)
              and callable(getattr(m, "compute_bias", None))]
    if not owners:
        raise RuntimeError(f"no relative attention bias found in {type(stack).__name__}; the "
                           f"{part.family.name} family map does not match this transformers "
                           "release")
    for index, owner in enumerate(owners):
        original = owner.compute_bias
        label = "relative_bias" if len(owners) == 1 else f"relative_bias_{index}"

        def compute_bias(*args, original=original, label=label, owner=owner, **kwargs):
            bias = original(*args, **kwargs)
            if not part.source.attribute:
                return bias.detach()
            leaf = part.cache.get(("bias", owner))
            if leaf is None:        # first call this pass (not a checkpoint recompute)
                leaf = part.source.leaf(bias, part.batch_size or bias.shape[0], label,
                                        position_dim=3)
                part.cache[("bias", owner)] = leaf
            return leaf
        patcher.set_attr(owner, "compute_bias", compute_bias)
