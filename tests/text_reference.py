"""Slow float64 references for the text families, written from the rules (docs/method.md), not
from any engine: oracles for the text-engine tests.

Each reference re-computes the stock model's forward pass from its state-dict tensors, one
explicit operation at a time, and then propagates relevance backwards with explicit LRP formulas
(ratios ``R / z``), never with autograd and never with ``modules/``. One sample at a time, no
padding. The rules (AttnLRP with the PA-LRP positional rule, docs/method.md):

==========================================  ==================================================
place                                       rule
==========================================  ==================================================
linears (incl. GPT-2's Conv1D), heads       epsilon (0): ``R_x = x * ((R_z / z) @ W)``, bias
                                            absorbs its share
residual and embedding sums                 epsilon on the sum: ``R_a = a * R / (a + b + ...)``
RMSNorm, (1 + w) RMSNorm, q_norm/k_norm     RMS constant: ``R_x = x * (R_y / y) * c * w``
                                            (equal to ``R_y``)
LayerNorm                                   std constant, mean plain:
                                            ``R_x = x * (S - mean(S))``, ``S = R_y / y * w / std``
activations (SiLU, GELU, GELU-tanh/new),    identity: ``R_in = R_out``
attention and final-logit soft-capping,
BERT's pooler tanh
gated product ``act(gate) * up``            uniform: half to each factor
``Q K^T`` and ``A V``                       uniform: each operand gets half of
                                            ``x * dZ/dx * R / Z``
softmax                                     ``R_in = x (R - p sum R)`` (x the score before the
                                            additive mask; masked entries get nothing)
score scale, additive mask                  plain (constant)
rotary ``q cos + rot(q) sin``               sum: epsilon; each product uniform (half to q or k,
                                            half to cos or sin); without PE cos/sin constant
additive positions (GPT-2 ``wpe``, BERT     epsilon on the sum; position relevance
``position_embeddings``; BERT token type)   ``p_i = sum_d R(P_i)[d]``
==========================================  ==================================================

Seed: ``R(target) = logit`` (``seed="logit"``, the NLP evaluations') or ``R(target) = 1``
(``seed="one"``). Relevance of an input is read at the embedding (after Gemma's scale).

Positional relevance is (K, S), the per-sample layout of the shared positional source: RoPE
families ``K = 2 L`` ordered ``cos_0, sin_0, cos_1, sin_1, ...``; absolute families ``K = 1``
(the position embedding). BERT's token-type relevance is returned apart (``token_type``).

The cos/sin constants are taken from the stock rotary module (they are inputs of the model; rope
scaling comes with them). :func:`float64_stock` makes the stock model compute its RMSNorms and
eager softmax in float64 (the stock code upcasts them to float32), so that the reference forward
can be checked against it to ~1e-12; :func:`reference_relevance` with ``autograd=True`` computes
the same relevance a second way, gradient x input through the same forward with the rules as
modified gradients (docs/method.md, conventions), to check the explicit formulas.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

ROTARY_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2")
ABSOLUTE_FAMILIES = ("gpt2", "bert")
FAMILIES = ROTARY_FAMILIES + ABSOLUTE_FAMILIES


@dataclass
class Reference:
    tokens: torch.Tensor                 # (S,) relevance of each token's embedding
    positional: torch.Tensor | None      # (K, S), None without PE attribution
    labels: list                         # K names: cos_0, sin_0, ... or position
    logits: torch.Tensor                 # (C,) the explained row (after any soft-cap)
    target: int
    position: int                        # explained position (pooled token for classifiers)
    token_type: torch.Tensor | None = None  # (S,) BERT only
    checks: dict = field(default_factory=dict)  # facts that hold by construction


# ---------------------------------------------------------------------------------------------
# Explicit relevance formulas.
# ---------------------------------------------------------------------------------------------

def _ratio(r, z):
    """``R / z`` with 0 where R is 0 (the epsilon-0 rule's S = R / z)."""
    return torch.where(r == 0, torch.zeros_like(r), r / torch.where(z == 0, torch.ones_like(z), z))


def _linear_back(x, w, z, r_z):
    """Epsilon rule of ``z = x W^T + b``: ``R_x = x * ((R_z / z) @ W)``."""
    return x * (_ratio(r_z, z) @ w)


def _sum_back(parts, total, r):
    """Epsilon rule on ``total = sum(parts)``: ``R_p = p * R / total``."""
    s = _ratio(r, total)
    return [p * s for p in parts]


def _const_scale_back(x, y, scale, r_y):
    """``y = x * scale`` with ``scale`` constant (RMS-constant norms): ``x * (R/y) * scale``."""
    return x * _ratio(r_y, y) * scale


def _layernorm_back(x, y, w, std, r_y):
    """LayerNorm with the std constant: ``y = (x - mean x) w / std + b``; plain through the
    centring: ``R_x = x * (S - mean S)``, ``S = R_y / y * w / std``."""
    s = _ratio(r_y, y) * w / std
    return x * (s - s.mean(-1, keepdim=True))


def _matmul_uniform_back(a, b, z, r_z):
    """``z = a @ b``, uniform rule: each operand gets half of ``x * dz/dx * R / z``."""
    s = _ratio(r_z, z)
    return 0.5 * a * (s @ b.transpose(-1, -2)), 0.5 * b * (a.transpose(-1, -2) @ s)


def _softmax_back(x, prob, r_prob):
    """AttnLRP softmax rule ``R_x = x (R - p sum R)``."""
    return x * (r_prob - prob * r_prob.sum(-1, keepdim=True))


def _rot(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), -1)


def _unrot(r):
    """Relevance of ``rot(x)`` handed back to x: rot(x)[d] is +-x[(d + half) mod hd]."""
    half = r.shape[-1] // 2
    return torch.cat((r[..., half:], r[..., :half]), -1)


# ---------------------------------------------------------------------------------------------
# Gradient x input versions of the rules (used only with autograd=True): same values, gradients
# modified as docs/method.md states.
# ---------------------------------------------------------------------------------------------

class _Ops:
    def __init__(self, autograd):
        self.autograd = autograd

    def const(self, t):
        """A constant of the rule (RMS, std): detached in the gradient x input forward."""
        return t.detach() if self.autograd else t

    def identity(self, x, y):
        """Identity rule ``R_x = R_y``: value y, gradient ``y / x``."""
        if not self.autograd:
            return y
        return x * _ratio(y, x).detach()

    def mul(self, a, b):
        """Uniform product: value ``a * b``, half of the gradient to each factor."""
        if not self.autograd:
            return a * b
        return 0.5 * (a * b.detach() + a.detach() * b)

    def matmul(self, a, b):
        if not self.autograd:
            return a @ b
        return 0.5 * (a @ b.detach() + a.detach() @ b)


# ---------------------------------------------------------------------------------------------
# Shared pieces.
# ---------------------------------------------------------------------------------------------

def _f64_state(model):
    return {k: v.detach().to(torch.float64) for k, v in model.state_dict().items()}


def _head_kind(model):
    name = type(model).__name__
    if name.endswith("ForSequenceClassification"):
        return "classifier"
    if name.endswith(("ForCausalLM", "LMHeadModel", "ForMaskedLM")):
        return "lm"
    raise TypeError(f"no reference for {name}")


def _attention_allowed(cfg, layer, S, causal):
    """Boolean (S, S) mask of the keys each query sees: causal, plus the layer's sliding window."""
    i = torch.arange(S)[:, None]
    j = torch.arange(S)[None, :]
    allowed = (j <= i) if causal else torch.ones(S, S, dtype=torch.bool)
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if cfg.model_type == "mistral":  # Mistral windows every layer
        types = ["sliding_attention"] * cfg.num_hidden_layers
    if types is not None and window is not None and types[layer] == "sliding_attention":
        allowed = allowed & (j > i - window)  # the stock overlay: kv > q - window
    return allowed


def _attention(ops, q, k, v, scaling, cap, allowed, save):
    """Heads (H, S, hd); k, v already repeated to H heads. Records intermediates in ``save``."""
    raw = ops.matmul(q, k.transpose(-1, -2))
    scaled = raw * scaling
    if cap is not None:
        capped = ops.identity(scaled, torch.tanh(scaled / cap) * cap)
    else:
        capped = scaled
    prob = torch.softmax(capped.masked_fill(~allowed, float("-inf")), -1)
    o = ops.matmul(prob, v)
    save.update(q=q, k=k, v=v, raw=raw, scaled=scaled, capped=capped, prob=prob, o=o,
                allowed=allowed)
    return o


def _attention_back(s, r_o):
    """Explicit backward of :func:`_attention`: returns R(q), R(k), R(v) (H, S, hd)."""
    r_prob, r_v = _matmul_uniform_back(s["prob"], s["v"], s["o"], r_o)
    r_capped = _softmax_back(s["capped"], s["prob"], r_prob)
    r_capped = torch.where(s["allowed"], r_capped, torch.zeros_like(r_capped))
    r_raw = r_capped  # soft-cap identity; the constant scale plain
    r_q, r_kt = _matmul_uniform_back(s["q"], s["k"].transpose(-1, -2), s["raw"], r_raw)
    return r_q, r_kt.transpose(-1, -2), r_v


def _seed(logits, target, seed):
    r = torch.zeros_like(logits)
    r[target] = logits[target] if seed == "logit" else 1.0
    return r


# ---------------------------------------------------------------------------------------------
# Rotary decoders: Llama, Mistral, Qwen2 (qkv bias), Qwen3 (q_norm/k_norm), Gemma 2.
# ---------------------------------------------------------------------------------------------

def _rotary_forward(model, ids, ops, pe, leaves):
    cfg = model.config
    fam = cfg.model_type
    gemma = fam == "gemma2"
    sd = _f64_state(model)
    S = ids.shape[0]
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    G, eps, L = H // KV, cfg.rms_norm_eps, cfg.num_hidden_layers
    scaling = cfg.query_pre_attn_scalar ** -0.5 if gemma else hd ** -0.5
    cap = getattr(cfg, "attn_logit_softcapping", None) if gemma else None
    base = model.model
    emb = sd["model.embed_tokens.weight"][ids]
    if gemma:  # Gemma's scaled word embedding (the stock buffer's value)
        emb = emb * base.embed_tokens.embed_scale.to(torch.float64)
    emb = leaves.setdefault("tokens", emb.clone().requires_grad_(ops.autograd))
    with torch.no_grad():
        cos, sin = base.rotary_emb(emb[None].detach(), torch.arange(S)[None])
    cos, sin = cos[0].to(torch.float64), sin[0].to(torch.float64)  # (S, hd)

    def rms(x, w):
        c = ops.const(torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
        scale = (1.0 + w) if gemma else w
        y = x * c * scale
        return y, dict(x=x, y=y, scale=c * scale)

    def lin(x, prefix):
        w, b = sd[prefix + ".weight"], sd.get(prefix + ".bias")
        z = x @ w.T + (b if b is not None else 0.0)
        return z, w

    x, saved = emb, []
    for l in range(L):
        p = f"model.layers.{l}."
        s = {"h": x}
        n1, s["n1_norm"] = rms(x, sd[p + "input_layernorm.weight"])
        s["n1"] = n1
        proj = {}
        for n in "qkv":
            proj[n] = lin(n1, p + f"self_attn.{n}_proj")
        s["proj"] = proj
        q = proj["q"][0].view(S, H, hd)
        k = proj["k"][0].view(S, KV, hd)
        v = proj["v"][0].view(S, KV, hd)
        if fam == "qwen3":  # per-head RMSNorm before RoPE
            q, s["qn"] = rms(q, sd[p + "self_attn.q_norm.weight"])
            k, s["kn"] = rms(k, sd[p + "self_attn.k_norm.weight"])
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # (heads, S, hd)
        if pe:
            c_l = leaves.setdefault(f"cos_{l}", cos.clone().requires_grad_(ops.autograd))
            s_l = leaves.setdefault(f"sin_{l}", sin.clone().requires_grad_(ops.autograd))
            qc, qs = ops.mul(q, c_l), ops.mul(_rot(q), s_l)
            kc, ks = ops.mul(k, c_l), ops.mul(_rot(k), s_l)
        else:
            qc, qs, kc, ks = q * cos, _rot(q) * sin, k * cos, _rot(k) * sin
        qr, kr = qc + qs, kc + ks
        s.update(q=q, k=k, v=v, qc=qc, qs=qs, kc=kc, ks=ks, qr=qr, kr=kr)
        att = {}
        o = _attention(ops, qr, kr.repeat_interleave(G, 0), v.repeat_interleave(G, 0), scaling,
                       cap, _attention_allowed(cfg, l, S, causal=True), att)
        s["att"] = att
        of = o.transpose(0, 1).reshape(S, H * hd)
        a, wo = lin(of, p + "self_attn.o_proj")
        s.update(of=of, a=a, wo=wo)
        if gemma:
            a2, s["post_attn"] = rms(a, sd[p + "post_attention_layernorm.weight"])
            s["a2"] = a2
            x1 = x + a2
            n2, s["n2_norm"] = rms(x1, sd[p + "pre_feedforward_layernorm.weight"])
        else:
            a2 = a
            s["a2"] = a2
            x1 = x + a
            n2, s["n2_norm"] = rms(x1, sd[p + "post_attention_layernorm.weight"])
        gate, wg = lin(n2, p + "mlp.gate_proj")
        up, wu = lin(n2, p + "mlp.up_proj")
        act_fn = getattr(cfg, "hidden_activation", None) or cfg.hidden_act
        act = ops.identity(gate, _activation(act_fn)(gate))
        m = ops.mul(act, up)
        d, wd = lin(m, p + "mlp.down_proj")
        if gemma:
            d2, s["post_ff"] = rms(d, sd[p + "post_feedforward_layernorm.weight"])
        else:
            d2 = d
        x2 = x1 + d2
        s.update(x1=x1, n2=n2, gate=gate, wg=wg, up=up, wu=wu, act=act, m=m, d=d, wd=wd, d2=d2,
                 x=x2)
        saved.append(s)
        x = x2
    nf, final = rms(x, sd["model.norm.weight"])
    return dict(sd=sd, saved=saved, nf=nf, final=final, emb=emb, S=S, H=H, KV=KV, hd=hd, G=G,
                L=L, cos=cos, sin=sin)


def _rms_back(norm, r_y):
    return _const_scale_back(norm["x"], norm["y"], norm["scale"], r_y)


def _rotary_backward(f, r_nf, pe):
    S, H, KV, hd, G, L = f["S"], f["H"], f["KV"], f["hd"], f["G"], f["L"]
    r_x = _rms_back(f["final"], r_nf)
    positional = torch.zeros(2 * L, S, dtype=torch.float64)
    rope_checks = []
    for l in reversed(range(L)):
        s = f["saved"][l]
        r_x1, r_d2 = _sum_back((s["x1"], s["d2"]), s["x"], r_x)
        r_d = _rms_back(s["post_ff"], r_d2) if "post_ff" in s else r_d2
        r_m = _linear_back(s["m"], s["wd"], s["d"], r_d)
        r_act, r_up = 0.5 * r_m, 0.5 * r_m       # uniform; activation identity
        r_n2 = _linear_back(s["n2"], s["wg"], s["gate"], r_act) \
            + _linear_back(s["n2"], s["wu"], s["up"], r_up)
        r_x1 = r_x1 + _rms_back(s["n2_norm"], r_n2)
        r_h, r_a2 = _sum_back((s["h"], s["a2"]), s["x1"], r_x1)
        r_a = _rms_back(s["post_attn"], r_a2) if "post_attn" in s else r_a2
        r_of = _linear_back(s["of"], s["wo"], s["a"], r_a)
        r_o = r_of.view(S, H, hd).transpose(0, 1)
        r_qr, r_krr, r_vr = _attention_back(s["att"], r_o)
        r_kr = r_krr.view(KV, G, S, hd).sum(1)
        r_v = r_vr.view(KV, G, S, hd).sum(1)
        r_qc, r_qs = _sum_back((s["qc"], s["qs"]), s["qr"], r_qr)
        r_kc, r_ks = _sum_back((s["kc"], s["ks"]), s["kr"], r_kr)
        share = 0.5 if pe else 1.0
        r_q = share * (r_qc + _unrot(r_qs))
        r_k = share * (r_kc + _unrot(r_ks))
        if pe:
            positional[2 * l] = 0.5 * (r_qc.sum((0, 2)) + r_kc.sum((0, 2)))
            positional[2 * l + 1] = 0.5 * (r_qs.sum((0, 2)) + r_ks.sum((0, 2)))
            rope_checks.append((l, float(positional[2 * l:2 * l + 2].sum()),
                                float(0.5 * (r_qr.sum() + r_kr.sum()))))
        r_q, r_k, r_v = r_q.transpose(0, 1), r_k.transpose(0, 1), r_v.transpose(0, 1)
        if "qn" in s:
            r_q = _rms_back(s["qn"], r_q)
            r_k = _rms_back(s["kn"], r_k)
        r_n1 = 0
        for n, r in zip("qkv", (r_q, r_k, r_v)):
            z, w = s["proj"][n]
            r_n1 = r_n1 + _linear_back(s["n1"], w, z, r.reshape(S, -1))
        r_x = r_h + _rms_back(s["n1_norm"], r_n1)
    return r_x.sum(-1), (positional if pe else None), rope_checks


def _activation(name):
    fns = {"silu": F.silu, "swish": F.silu, "gelu": F.gelu,
           "gelu_pytorch_tanh": lambda t: F.gelu(t, approximate="tanh"),
           "gelu_new": lambda t: F.gelu(t, approximate="tanh"),
           "gelu_fast": lambda t: F.gelu(t, approximate="tanh"), "relu": F.relu}
    if name not in fns:
        raise NotImplementedError(f"no reference for activation {name!r}")
    return fns[name]


def _rotary_reference(model, ids, target, pe, position, seed, autograd):
    ops = _Ops(autograd)
    leaves = {}
    f = _rotary_forward(model, ids, ops, pe, leaves)
    cfg, sd, S = model.config, f["sd"], f["S"]
    kind = _head_kind(model)
    pos = S - 1 if position is None or kind == "classifier" else position
    if kind == "lm":
        w = model.get_output_embeddings().weight.detach().to(torch.float64)
    else:
        w = sd["score.weight"]
    z = f["nf"][pos] @ w.T
    final_cap = getattr(cfg, "final_logit_softcapping", None) if kind == "lm" else None
    logits = ops.identity(z, torch.tanh(z / final_cap) * final_cap) if final_cap else z
    target = int(logits.argmax()) if target is None else int(target)
    r_logits = _seed(logits.detach(), target, seed)
    labels = [f"{n}_{l}" for l in range(f["L"]) for n in ("cos", "sin")] if pe else []
    if autograd:
        logits.backward(_ratio(r_logits, logits.detach()))
        tokens = (leaves["tokens"] * leaves["tokens"].grad).sum(-1).detach()
        positional = None
        if pe:
            positional = torch.stack([(leaves[n] * _grad(leaves[n])).sum(-1) for n in labels])
        return Reference(tokens, positional, labels, logits.detach(), target, pos)
    r_nf = torch.zeros_like(f["nf"])
    r_nf[pos] = _linear_back(f["nf"][pos], w, z, r_logits)  # soft-cap identity: R(z) = R(logits)
    tokens, positional, rope_checks = _rotary_backward(f, r_nf, pe)
    return Reference(tokens, positional, labels, logits, target, pos,
                     checks={"rope": rope_checks, "seed": float(r_logits.sum())})


def _grad(t):
    return torch.zeros_like(t) if t.grad is None else t.grad


# ---------------------------------------------------------------------------------------------
# GPT-2: wte + wpe, Conv1D linears, pre-LayerNorm, GELU-new.
# ---------------------------------------------------------------------------------------------

def _gpt2_reference(model, ids, target, pe, position, seed, autograd):
    ops = _Ops(autograd)
    cfg = model.config
    sd = _f64_state(model)
    S, D, H = ids.shape[0], cfg.hidden_size, cfg.num_attention_heads
    hd, eps = D // H, cfg.layer_norm_epsilon
    E = sd["transformer.wte.weight"][ids].clone().requires_grad_(autograd)
    P = sd["transformer.wpe.weight"][:S].clone().requires_grad_(autograd and pe)
    h = E + (P if pe else P.detach())

    def ln(x, prefix):
        w, b = sd[prefix + ".weight"], sd[prefix + ".bias"]
        mu = x.mean(-1, keepdim=True)
        std = ops.const(torch.sqrt((x - mu).pow(2).mean(-1, keepdim=True) + eps))
        y = (x - mu) / std * w + b
        return y, dict(x=x, y=y, w=w, std=std)

    def conv1d(x, prefix):  # Conv1D: y = x @ W + b with W (in, out)
        w, b = sd[prefix + ".weight"], sd[prefix + ".bias"]
        return x @ w + b, w.T

    saved = []
    for l in range(cfg.n_layer):
        p = f"transformer.h.{l}."
        s = {"h": h}
        n1, s["ln1"] = ln(h, p + "ln_1")
        qkv, wqkv = conv1d(n1, p + "attn.c_attn")
        q, k, v = (t.view(S, H, hd).transpose(0, 1) for t in qkv.split(D, -1))
        scaling = 1.0
        if cfg.scale_attn_weights:
            scaling = hd ** -0.5
        if cfg.scale_attn_by_inverse_layer_idx:
            scaling /= float(l + 1)
        att = {}
        o = _attention(ops, q, k, v, scaling, None, _attention_allowed(cfg, l, S, True), att)
        of = o.transpose(0, 1).reshape(S, D)
        a, wproj = conv1d(of, p + "attn.c_proj")
        x1 = a + h
        n2, s["ln2"] = ln(x1, p + "ln_2")
        fc, wfc = conv1d(n2, p + "mlp.c_fc")
        act = ops.identity(fc, _activation(cfg.activation_function)(fc))
        d, wp2 = conv1d(act, p + "mlp.c_proj")
        x2 = x1 + d
        s.update(n1=n1, qkv=qkv, wqkv=wqkv, att=att, of=of, a=a, wproj=wproj, x1=x1, n2=n2,
                 fc=fc, wfc=wfc, act=act, d=d, wp2=wp2, x=x2)
        saved.append(s)
        h = x2
    nf, lnf = ln(h, "transformer.ln_f")
    kind = _head_kind(model)
    pos = S - 1 if position is None or kind == "classifier" else position
    w = (model.get_output_embeddings().weight.detach().to(torch.float64) if kind == "lm"
         else sd["score.weight"])
    logits = nf[pos] @ w.T
    target = int(logits.argmax()) if target is None else int(target)
    r_logits = _seed(logits.detach(), target, seed)
    labels = ["position"] if pe else []
    if autograd:
        logits.backward(_ratio(r_logits, logits.detach()))
        positional = (P * _grad(P)).sum(-1)[None].detach() if pe else None
        return Reference((E * E.grad).sum(-1).detach(), positional, labels, logits.detach(),
                         target, pos)
    r_nf = torch.zeros_like(nf)
    r_nf[pos] = _linear_back(nf[pos], w, logits, r_logits)
    r_h = _layernorm_back(lnf["x"], lnf["y"], lnf["w"], lnf["std"], r_nf)
    for s in reversed(saved):
        r_x1, r_d = _sum_back((s["x1"], s["d"]), s["x"], r_h)
        r_act = _linear_back(s["act"], s["wp2"], s["d"], r_d)
        r_n2 = _linear_back(s["n2"], s["wfc"], s["fc"], r_act)  # GELU identity
        r_x1 = r_x1 + _layernorm_back(s["ln2"]["x"], s["ln2"]["y"], s["ln2"]["w"],
                                      s["ln2"]["std"], r_n2)
        r_a, r_hh = _sum_back((s["a"], s["h"]), s["x1"], r_x1)
        r_of = _linear_back(s["of"], s["wproj"], s["a"], r_a)
        r_q, r_k, r_v = _attention_back(s["att"], r_of.view(S, H, hd).transpose(0, 1))
        r_qkv = torch.cat([t.transpose(0, 1).reshape(S, D) for t in (r_q, r_k, r_v)], -1)
        r_n1 = _linear_back(s["n1"], s["wqkv"], s["qkv"], r_qkv)
        r_h = r_hh + _layernorm_back(s["ln1"]["x"], s["ln1"]["y"], s["ln1"]["w"],
                                     s["ln1"]["std"], r_n1)
    r_E, r_P = _sum_back((E, P), E + P, r_h)
    positional = r_P.sum(-1)[None] if pe else None
    return Reference(r_E.sum(-1), positional, labels, logits, target, pos,
                     checks={"embedding_sum": (r_E + r_P - r_h).abs().max().item(),
                             "seed": float(r_logits.sum())})


# ---------------------------------------------------------------------------------------------
# BERT: word + position + token type, post-LayerNorm, GELU, pooler tanh / LM head.
# ---------------------------------------------------------------------------------------------

def _bert_reference(model, ids, target, pe, position, seed, autograd, token_type_ids):
    ops = _Ops(autograd)
    cfg = model.config
    sd = _f64_state(model)
    root = "bert."
    S, D, H = ids.shape[0], cfg.hidden_size, cfg.num_attention_heads
    hd, eps = D // H, cfg.layer_norm_eps
    tt = torch.zeros(S, dtype=torch.long) if token_type_ids is None else token_type_ids
    E = sd[root + "embeddings.word_embeddings.weight"][ids].clone().requires_grad_(autograd)
    T = sd[root + "embeddings.token_type_embeddings.weight"][tt].clone() \
        .requires_grad_(autograd and pe)
    P = sd[root + "embeddings.position_embeddings.weight"][:S].clone() \
        .requires_grad_(autograd and pe)
    z = E + (T if pe else T.detach()) + (P if pe else P.detach())

    def ln(x, prefix):
        w, b = sd[prefix + ".weight"], sd[prefix + ".bias"]
        mu = x.mean(-1, keepdim=True)
        std = ops.const(torch.sqrt((x - mu).pow(2).mean(-1, keepdim=True) + eps))
        y = (x - mu) / std * w + b
        return y, dict(x=x, y=y, w=w, std=std)

    def lin(x, prefix):
        w, b = sd[prefix + ".weight"], sd[prefix + ".bias"]
        return x @ w.T + b, w

    def ln_back(n, r):
        return _layernorm_back(n["x"], n["y"], n["w"], n["std"], r)

    h, emb_ln = ln(z, root + "embeddings.LayerNorm")
    causal = bool(getattr(cfg, "is_decoder", False))
    saved = []
    for l in range(cfg.num_hidden_layers):
        p = f"{root}encoder.layer.{l}."
        s = {"h": h}
        proj = {n: lin(h, p + f"attention.self.{n}") for n in ("query", "key", "value")}
        q, k, v = (proj[n][0].view(S, H, hd).transpose(0, 1) for n in ("query", "key", "value"))
        att = {}
        o = _attention(ops, q, k, v, hd ** -0.5, None, _attention_allowed(cfg, l, S, causal), att)
        of = o.transpose(0, 1).reshape(S, D)
        a, wo = lin(of, p + "attention.output.dense")
        y1 = a + h
        h1, s["ln1"] = ln(y1, p + "attention.output.LayerNorm")
        fi, wi = lin(h1, p + "intermediate.dense")
        act = ops.identity(fi, _activation(cfg.hidden_act)(fi))
        d, wd = lin(act, p + "output.dense")
        y2 = d + h1
        h2, s["ln2"] = ln(y2, p + "output.LayerNorm")
        s.update(proj=proj, att=att, of=of, a=a, wo=wo, y1=y1, h1=h1, fi=fi, wi=wi, act=act,
                 d=d, wd=wd, y2=y2)
        saved.append(s)
        h = h2
    kind = _head_kind(model)
    head = {}
    if kind == "classifier":
        pos = 0  # the pooler reads the first token
        pz, wp = lin(h[0], root + "pooler.dense")
        pooled = ops.identity(pz, torch.tanh(pz))
        logits, wc = lin(pooled, "classifier")
        head.update(pz=pz, wp=wp, pooled=pooled, wc=wc)
    else:
        pos = S - 1 if position is None else position
        pre = "cls.predictions.transform."
        tz, wt = lin(h[pos], pre + "dense")
        tact = ops.identity(tz, _activation(cfg.hidden_act)(tz))
        tn, tln = ln(tact, pre + "LayerNorm")
        dec = model.get_output_embeddings()
        wdec = dec.weight.detach().to(torch.float64)
        logits = tn @ wdec.T + dec.bias.detach().to(torch.float64)
        head.update(tz=tz, wt=wt, tact=tact, tn=tn, tln=tln, wdec=wdec)
    target = int(logits.argmax()) if target is None else int(target)
    r_logits = _seed(logits.detach(), target, seed)
    labels = ["position"] if pe else []
    if autograd:
        logits.backward(_ratio(r_logits, logits.detach()))
        return Reference((E * E.grad).sum(-1).detach(),
                         (P * _grad(P)).sum(-1)[None].detach() if pe else None, labels,
                         logits.detach(), target, pos,
                         token_type=(T * _grad(T)).sum(-1).detach() if pe else None)
    r_h = torch.zeros_like(h)
    if kind == "classifier":
        r_pooled = _linear_back(head["pooled"], head["wc"], logits, r_logits)
        r_h[0] = _linear_back(h[0], head["wp"], head["pz"], r_pooled)  # tanh identity
    else:
        r_tn = _linear_back(head["tn"], head["wdec"], logits, r_logits)
        r_tact = ln_back(head["tln"], r_tn)
        r_h[pos] = _linear_back(h[pos], head["wt"], head["tz"], r_tact)  # activation identity
    for s in reversed(saved):
        r_y2 = ln_back(s["ln2"], r_h)
        r_d, r_h1 = _sum_back((s["d"], s["h1"]), s["y2"], r_y2)
        r_act = _linear_back(s["act"], s["wd"], s["d"], r_d)
        r_h1 = r_h1 + _linear_back(s["h1"], s["wi"], s["fi"], r_act)  # GELU identity
        r_y1 = ln_back(s["ln1"], r_h1)
        r_a, r_hh = _sum_back((s["a"], s["h"]), s["y1"], r_y1)
        r_of = _linear_back(s["of"], s["wo"], s["a"], r_a)
        rs = _attention_back(s["att"], r_of.view(S, H, hd).transpose(0, 1))
        for n, r in zip(("query", "key", "value"), rs):
            zq, w = s["proj"][n]
            r_hh = r_hh + _linear_back(s["h"], w, zq, r.transpose(0, 1).reshape(S, D))
        r_h = r_hh
    r_z = ln_back(emb_ln, r_h)
    r_E, r_T, r_P = _sum_back((E, T, P), z, r_z)
    return Reference(r_E.sum(-1), r_P.sum(-1)[None] if pe else None, labels, logits, target,
                     pos, token_type=r_T.sum(-1) if pe else None,
                     checks={"embedding_sum": (r_E + r_T + r_P - r_z).abs().max().item(),
                             "seed": float(r_logits.sum())})


# ---------------------------------------------------------------------------------------------
# Entry points.
# ---------------------------------------------------------------------------------------------

def reference_relevance(model, ids, target=None, *, pe=True, position=None, seed="logit",
                        token_type_ids=None, autograd=False) -> Reference:
    """float64 reference relevance of one unpadded sample ``ids`` (S,) for ``target`` (default
    the argmax) at ``position`` (causal/LM heads; default the last token; classifiers pool the
    stock way: decoders the last token, BERT the first through the pooler).

    ``pe``: attribute the positional encodings (PA-LRP) or keep them constant (AttnLRP).
    ``autograd=True`` computes the same numbers as gradient x input (a check of the formulas).
    """
    if seed not in ("logit", "one"):
        raise ValueError("seed must be 'logit' or 'one'")
    ids = torch.as_tensor(ids).reshape(-1)
    fam = model.config.model_type
    with torch.enable_grad() if autograd else torch.no_grad():
        if fam in ROTARY_FAMILIES:
            return _rotary_reference(model, ids, target, pe, position, seed, autograd)
        if fam == "gpt2":
            return _gpt2_reference(model, ids, target, pe, position, seed, autograd)
        if fam == "bert":
            return _bert_reference(model, ids, target, pe, position, seed, autograd,
                                   token_type_ids)
    raise NotImplementedError(f"no reference for family {fam!r}; have {', '.join(FAMILIES)}")


@contextlib.contextmanager
def float64_stock(model):
    """Make the stock model compute its RMSNorms and eager softmax in the input dtype (the
    stock code upcasts them to float32, which limits a float64 comparison to ~1e-7): the same
    formulas, no cast. Test-only; restores everything on exit."""
    patched = []
    for module in model.modules():
        name = type(module).__name__
        if not name.endswith("RMSNorm"):
            continue
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        plus_one = name.startswith("Gemma")

        def forward(x, _m=module, _eps=eps, _plus_one=plus_one):
            w = _m.weight.to(x.dtype)
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + _eps)
            return y * (1.0 + w) if _plus_one else y * w

        module.forward = forward
        patched.append(module)
    original_softmax = torch.nn.functional.softmax

    def softmax(input, dim=None, _stacklevel=3, dtype=None):
        if dtype is not None and input.dtype == torch.float64:
            dtype = None
        return original_softmax(input, dim=dim, dtype=dtype)

    torch.nn.functional.softmax = softmax
    try:
        yield model
    finally:
        torch.nn.functional.softmax = original_softmax
        for module in patched:
            del module.forward


def stock_logits(model, ids, position=None, token_type_ids=None):
    """The stock model's logits of the explained row for one sample (S,)."""
    ids = torch.as_tensor(ids).reshape(1, -1)
    kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids.reshape(1, -1)}
    with torch.no_grad():
        out = model(ids, **kwargs).logits[0]
    if out.dim() == 1:
        return out
    return out[ids.shape[1] - 1 if position is None else position]


def relative_error(a, b):
    """max |a - b| / max |b|."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))



# ---------------------------------------------------------------------------------------------
# Tiny random models (no downloads), shared by the reference checks and the engine tests.
# ---------------------------------------------------------------------------------------------

VOCAB, PAD = 61, 0


def tiny_config(family, **overrides):
    """A small config of ``family`` that exercises every part the rules treat: GQA, a head dim
    unequal to hidden/heads where the family allows it, sliding windows shorter than the test
    sequences, soft-caps small enough to bend the scores."""
    import transformers as tf
    common = dict(vocab_size=VOCAB, pad_token_id=PAD, num_labels=3)
    rotary = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  tie_word_embeddings=False)
    cfgs = {
        "llama": lambda: tf.LlamaConfig(**common, **rotary),
        "mistral": lambda: tf.MistralConfig(**common, **rotary, sliding_window=4),
        "qwen2": lambda: tf.Qwen2Config(**common, **rotary),  # q/k/v biases
        "qwen3": lambda: tf.Qwen3Config(**common, **rotary, head_dim=12),
        "gemma2": lambda: tf.Gemma2Config(**common, **rotary, head_dim=12,
                                          query_pre_attn_scalar=10, attn_logit_softcapping=4.0,
                                          final_logit_softcapping=3.0, sliding_window=3,
                                          hidden_activation="gelu_pytorch_tanh"),
        "gpt2": lambda: tf.GPT2Config(**common, bos_token_id=1, eos_token_id=1, n_positions=64,
                                      n_embd=32, n_layer=2, n_head=4, n_inner=48,
                                      tie_word_embeddings=True),
        "bert": lambda: tf.BertConfig(**common, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=48,
                                      max_position_embeddings=64, type_vocab_size=2),
    }
    if family not in cfgs:
        raise NotImplementedError(f"no tiny config for {family!r}; have {', '.join(cfgs)}")
    cfg = cfgs[family]()
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def model_class(family, head):
    """The stock class for ``head`` in ``("causal", "classifier")`` (BERT's causal head is
    ``BertLMHeadModel`` with ``is_decoder``)."""
    import transformers as tf
    names = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3",
             "gemma2": "Gemma2", "gpt2": "GPT2", "bert": "Bert"}
    stem = names[family]
    if head == "classifier":
        return getattr(tf, f"{stem}ForSequenceClassification")
    if family == "gpt2":
        return tf.GPT2LMHeadModel
    if family == "bert":
        return tf.BertLMHeadModel
    return getattr(tf, f"{stem}ForCausalLM")


def tiny_model(family, head="causal", dtype=torch.float64, seed=0, std=0.25, **overrides):
    """A tiny random ``family`` model with weights larger than the default init (attention far
    from uniform, every rule matters); norm weights random around their neutral value."""
    cfg = tiny_config(family, **overrides)
    if family == "bert" and head == "causal":
        cfg.is_decoder = True
    torch.manual_seed(seed)
    model = model_class(family, head)(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                neutral = 0.0 if family == "gemma2" else 1.0  # Gemma scales by (1 + w)
                p.copy_(neutral + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    return model.to(dtype).eval()


def random_ids(seq, seed=1):
    """(seq,) ids without the pad id (the classifiers pool at the last non-pad token)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (seq,), generator=g)
