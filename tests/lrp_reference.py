"""Slow, explicit LRP formulas written from docs/method.md, shared by the tests (not used by the engine)."""
import torch
import torch.nn.functional as F


def _zennit_stabilize(d, eps):
    return d + ((d == 0).to(d) + d.sign()) * eps


def slow_gamma_linear(x, weight, bias, relevance, gamma, eps=1e-6):
    """The generalized Gamma rule (docs/method.md, M7) written out literally, one sample row at a time."""
    wa = weight + gamma * weight.clamp(min=0)
    wb = weight + gamma * weight.clamp(max=0)
    ba = bias + gamma * bias.clamp(min=0)
    bb = bias + gamma * bias.clamp(max=0)
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        xp, xn = x[n].clamp(min=0), x[n].clamp(max=0)
        z = weight @ x[n] + bias
        d_pos = _zennit_stabilize(wa @ xp + ba + wb @ xn, eps)
        d_neg = _zennit_stabilize(wb @ xp + bb + wa @ xn, eps)
        s_pos = torch.where(z > 0, relevance[n] / d_pos, torch.zeros_like(z))
        s_neg = torch.where(z < 0, relevance[n] / d_neg, torch.zeros_like(z))
        out[n] = xp * (wa.T @ s_pos + wb.T @ s_neg) + xn * (wb.T @ s_pos + wa.T @ s_neg)
    return out


def slow_gamma_conv(x, weight, bias, relevance, gamma, stride, padding):
    """Conv Gamma via explicit unfolding into a linear map on patches, then the formula (M7);
    overlapping windows accumulate with fold."""
    n, c, h, w = x.shape
    k = weight.shape[-1]
    cols = F.unfold(x, k, stride=stride, padding=padding)          # (n, c*k*k, L)
    out_h = (h + 2 * padding - k) // stride + 1
    out_w = (w + 2 * padding - k) // stride + 1
    rows = cols.transpose(1, 2).reshape(-1, c * k * k)
    rel_rows = relevance.flatten(2).transpose(1, 2).reshape(-1, weight.shape[0])
    rel_cols = slow_gamma_linear(rows, weight.reshape(weight.shape[0], -1), bias, rel_rows, gamma)
    rel_cols = rel_cols.reshape(n, out_h * out_w, -1).transpose(1, 2)
    return F.fold(rel_cols, (h, w), k, stride=stride, padding=padding)


def _eps_split(parts, total, relevance):
    """Epsilon rule (epsilon 0) on ``total = sum(parts)``: each part gets ``part * R / total``."""
    return [part * relevance / total for part in parts]


def _eps_layer_norm(x, weight, relevance, y, eps):
    """Epsilon rule on LayerNorm with its standard deviation constant: an affine map
    ``y = diag(w / std) (I - 11^T / D) x + b``, so ``R_x = x * M^T (R / y)``."""
    dim = x.shape[-1]
    std = (x.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
    centring = torch.eye(dim, dtype=x.dtype) - torch.full((dim, dim), 1.0 / dim, dtype=x.dtype)
    return x * (((relevance / y) * weight / std) @ centring)


def slow_palrp_deit(model, image, target, v_scale=0.5):
    """PA-LRP of docs/method.md, section 4, for ONE image, layer by layer, relprop style (float64).

    Forward with explicit ops, storing every activation; then relevance flows backwards with the
    rule of each place written as a formula: Gamma (0.05) on head/fc1/fc2, identity on GELU,
    epsilon on LayerNorm (std constant), residual adds, proj, the V rows of qkv and ``x + pos``;
    attention probabilities constant with the relevance reaching V scaled by ``v_scale`` (the
    paper's 1/2; 1.0 is the conservative variant); Gamma (100) on the
    patch-embedding conv via explicit unfolding. Relevance 1 is seeded at ``target``.
    Returns (pixel relevance (H, W), PE relevance per patch position (N,)).
    """
    ph, pw = model.patch_embed.proj.kernel_size
    dim, heads = model.cls_token.shape[-1], model.blocks[0].attn.num_heads
    hd = dim // heads
    conv_w = model.patch_embed.proj.weight
    rows = F.unfold(image, (ph, pw), stride=(ph, pw))[0].T            # (N, C*ph*pw)
    tokens = rows @ conv_w.reshape(dim, -1).T + model.patch_embed.proj.bias
    emb = torch.cat((model.cls_token[0], tokens), 0)                  # E: (N+1, D)
    pos = model.pos_embed[0]                                          # P
    x = emb + pos
    cache = []
    for blk in model.blocks:
        h1 = F.layer_norm(x, (dim,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        qkv = h1 @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
        q, k, v = qkv.split(dim, -1)
        split = lambda t: t.reshape(-1, heads, hd).transpose(0, 1)     # (heads, N, hd)
        attn = torch.softmax(split(q) @ split(k).transpose(1, 2) * hd ** -0.5, -1)
        o = (attn @ split(v)).transpose(0, 1).reshape(-1, dim)
        a = o @ blk.attn.proj.weight.T + blk.attn.proj.bias
        x2 = x + a
        h2 = F.layer_norm(x2, (dim,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        f1 = h2 @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias
        g = F.gelu(f1)
        f2 = g @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
        x3 = x2 + f2
        cache.append((blk, x, h1, v, attn, o, a, x2, h2, f1, g, f2, x3))
        x = x3
    hn = F.layer_norm(x, (dim,), model.norm.weight, model.norm.bias, model.norm.eps)
    cls = hn[0]
    logits = model.head.weight @ cls + model.head.bias

    rel_logits = torch.zeros_like(logits)
    rel_logits[target] = 1.0
    rel_cls = slow_gamma_linear(cls[None], model.head.weight, model.head.bias,
                                rel_logits[None], 0.05)[0]
    rel_hn = torch.zeros_like(hn)
    rel_hn[0] = rel_cls
    rel = _eps_layer_norm(x, model.norm.weight, rel_hn, hn, model.norm.eps)
    for blk, x, h1, v, attn, o, a, x2, h2, f1, g, f2, x3 in reversed(cache):
        rel_x2, rel_f2 = _eps_split((x2, f2), x3, rel)
        rel_g = slow_gamma_linear(g, blk.mlp.fc2.weight, blk.mlp.fc2.bias, rel_f2, 0.05)
        rel_f1 = rel_g                                                  # GELU: identity
        rel_h2 = slow_gamma_linear(h2, blk.mlp.fc1.weight, blk.mlp.fc1.bias, rel_f1, 0.05)
        rel_x2 = rel_x2 + _eps_layer_norm(x2, blk.norm2.weight, rel_h2, h2, blk.norm2.eps)
        rel_x, rel_a = _eps_split((x, a), x2, rel_x2)
        rel_o = o * ((rel_a / a) @ blk.attn.proj.weight)
        split = lambda t: t.reshape(-1, heads, hd).transpose(0, 1)
        ratio = split(rel_o / o)
        rel_v = v_scale * split(v) * (attn.transpose(1, 2) @ ratio)       # A constant, V scaled
        rel_v = rel_v.transpose(0, 1).reshape(-1, dim)
        wv = blk.attn.qkv.weight[2 * dim:]
        rel_h1 = h1 * ((rel_v / v) @ wv)
        rel = rel_x + _eps_layer_norm(x, blk.norm1.weight, rel_h1, h1, blk.norm1.eps)
    rel_emb, rel_pos = _eps_split((emb, pos), emb + pos, rel)
    rel_rows = slow_gamma_linear(rows, conv_w.reshape(dim, -1), model.patch_embed.proj.bias,
                                 rel_emb[1:], 100.0)
    _, c, height, width = image.shape
    pixels = F.fold(rel_rows.T[None], (height, width), (ph, pw), stride=(ph, pw))[0]
    return pixels.sum(0), rel_pos[1:].sum(-1)


def _uniform_matmul(a, b, relevance):
    """Uniform rule on ``z = a @ b`` (epsilon on the sum over the inner index): each operand
    gets half of ``sum a_ik b_kj R_ij / z_ij``."""
    ratio = relevance / (a @ b)
    return 0.5 * a * (ratio @ b.transpose(-1, -2)), 0.5 * b * (a.transpose(-1, -2) @ ratio)


def _swap_pairs(r):
    """Relevance of ``rot(x)`` (``[-x1, x0, -x3, x2, ...]``) handed back to x's entries."""
    return torch.stack((r[..., 1::2], r[..., ::2]), -1).reshape(r.shape)


def slow_palrp_eva(model, image, target):
    """PA-LRP of an EVA-02 (timm ``Eva``: class token, ``pos_embed`` with its class entry,
    axial RoPE on the patch tokens, packed SwiGLU ``GluMlp``, average pool, ``fc_norm``) for ONE
    image, layer by layer from the formulas (float64), with the uniform (AttnLRP) attention rule:

    - head, fc1, fc2: Gamma 0.05; patch conv: Gamma 100 (explicit unfolding);
    - every LayerNorm: epsilon with the std constant; residual adds, qkv, proj, the average
      pool, ``x + pos``: epsilon;
    - ``silu(a) * b``: uniform, then SiLU identity;
    - ``A V`` and ``Q K^T``: uniform; softmax: ``R_x = x (R - s sum R)`` (gradient x input);
    - RoPE ``q' = q cos + rot(q) sin``: epsilon on the sum, uniform on each product (half to q,
      half to cos / sin); the class token is not rotated.

    Relevance 1 at ``target``. Returns pixel relevance (H, W), pos_embed relevance per token
    (N,) and, per block, (cos, sin) relevance per patch token: a list of ((Np,), (Np,)).
    """
    ph, pw = model.patch_embed.proj.kernel_size
    dim = model.cls_token.shape[-1]
    npt = model.num_prefix_tokens
    conv_w = model.patch_embed.proj.weight
    rows = F.unfold(image, (ph, pw), stride=(ph, pw))[0].T
    tokens = rows @ conv_w.reshape(dim, -1).T + model.patch_embed.proj.bias
    emb = torch.cat((model.cls_token[0], tokens), 0)
    pos = model.pos_embed[0]
    x = emb + pos
    sin, cos = model.rope.get_embed().to(x.dtype).chunk(2, -1)          # (Np, hd)
    cache = []
    for blk in model.blocks:
        attn = blk.attn
        heads = attn.num_heads
        h1 = F.layer_norm(x, (dim,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        qkv = h1 @ attn.qkv.weight.T + bias
        split = lambda t: t.reshape(t.shape[0], heads, -1).transpose(0, 1)   # (heads, N, hd)
        q, k, v = (split(t) for t in qkv.split(dim, -1))
        rot = lambda t: torch.stack((-t[..., 1::2], t[..., ::2]), -1).reshape(t.shape)
        qa, qb = q[:, npt:] * cos, rot(q[:, npt:]) * sin
        ka, kb = k[:, npt:] * cos, rot(k[:, npt:]) * sin
        qr = torch.cat((q[:, :npt], qa + qb), 1)
        kr = torch.cat((k[:, :npt], ka + kb), 1)
        scores = (qr * attn.scale) @ kr.transpose(1, 2)
        probs = torch.softmax(scores, -1)
        o = probs @ v
        a = o.transpose(0, 1).reshape(-1, dim) @ attn.proj.weight.T + attn.proj.bias
        x2 = x + a
        h2 = F.layer_norm(x2, (dim,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        f1 = h2 @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias
        gate, val = f1.chunk(2, -1)
        act = F.silu(gate)
        prod = act * val
        f2 = prod @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
        x3 = x2 + f2
        cache.append(dict(blk=blk, x=x, h1=h1, q=q, k=k, v=v, qa=qa, qb=qb, ka=ka, kb=kb,
                          qr=qr, kr=kr, scores=scores, probs=probs, o=o, a=a, x2=x2, h2=h2,
                          f1=f1, gate=gate, val=val, act=act, prod=prod, f2=f2, x3=x3))
        x = x3
    patches = x[npt:]
    pooled = patches.mean(0)
    hn = F.layer_norm(pooled, (dim,), model.fc_norm.weight, model.fc_norm.bias, model.fc_norm.eps)
    logits = model.head.weight @ hn + model.head.bias

    rel_logits = torch.zeros_like(logits)
    rel_logits[target] = 1.0
    rel_hn = slow_gamma_linear(hn[None], model.head.weight, model.head.bias, rel_logits[None],
                               0.05)[0]
    rel_pooled = _eps_layer_norm(pooled[None], model.fc_norm.weight, rel_hn[None], hn[None],
                                 model.fc_norm.eps)[0]
    rel = torch.zeros_like(x)
    rel[npt:] = (patches / patches.shape[0]) * (rel_pooled / pooled)   # epsilon on the mean
    rope_rel = []
    for c in reversed(cache):
        blk, attn = c["blk"], c["blk"].attn
        heads = attn.num_heads
        rel_x2, rel_f2 = _eps_split((c["x2"], c["f2"]), c["x3"], rel)
        rel_prod = slow_gamma_linear(c["prod"], blk.mlp.fc2.weight, blk.mlp.fc2.bias, rel_f2, 0.05)
        rel_gate = 0.5 * rel_prod                       # uniform; SiLU identity
        rel_val = 0.5 * rel_prod
        rel_f1 = torch.cat((rel_gate, rel_val), -1)
        rel_h2 = slow_gamma_linear(c["h2"], blk.mlp.fc1.weight, blk.mlp.fc1.bias, rel_f1, 0.05)
        rel_x2 = rel_x2 + _eps_layer_norm(c["x2"], blk.norm2.weight, rel_h2, c["h2"], blk.norm2.eps)
        rel_x, rel_a = _eps_split((c["x"], c["a"]), c["x2"], rel_x2)
        flat_o = c["o"].transpose(0, 1).reshape(-1, dim)
        rel_o = flat_o * ((rel_a / c["a"]) @ attn.proj.weight)
        rel_o = rel_o.reshape(-1, heads, dim // heads).transpose(0, 1)
        rel_probs, rel_v = _uniform_matmul(c["probs"], c["v"], rel_o)
        s = c["probs"]
        rel_scores = c["scores"] * (rel_probs - s * rel_probs.sum(-1, keepdim=True))
        # Q K^T (the constant scale folded into q): uniform
        rel_qr, rel_kt = _uniform_matmul(c["qr"] * attn.scale, c["kr"].transpose(1, 2), rel_scores)
        rel_kr = rel_kt.transpose(1, 2)
        rel_cos = torch.zeros_like(cos)
        rel_sin = torch.zeros_like(sin)
        rel_q, rel_k = rel_qr.clone(), rel_kr.clone()
        for name, rel_r, rel_out in (("q", rel_qr, rel_q), ("k", rel_kr, rel_k)):
            pa, pb = c[name + "a"], c[name + "b"]
            ra, rb = _eps_split((pa, pb), pa + pb, rel_r[:, npt:])
            rel_out[:, npt:] = 0.5 * ra + _swap_pairs(0.5 * rb)
            rel_cos = rel_cos + (0.5 * ra).sum(0)       # summed over heads
            rel_sin = rel_sin + (0.5 * rb).sum(0)
        rope_rel.append((rel_cos.sum(-1), rel_sin.sum(-1)))
        merge = lambda r: r.transpose(0, 1).reshape(-1, dim)
        rel_qkv = torch.cat((merge(rel_q), merge(rel_k), merge(rel_v)), -1)
        qkv = torch.cat((merge(c["q"]), merge(c["k"]), merge(c["v"])), -1)
        rel_h1 = c["h1"] * ((rel_qkv / qkv) @ attn.qkv.weight)
        rel = rel_x + _eps_layer_norm(c["x"], blk.norm1.weight, rel_h1, c["h1"], blk.norm1.eps)
    rel_emb, rel_pos = _eps_split((emb, pos), emb + pos, rel)
    rel_rows = slow_gamma_linear(rows, conv_w.reshape(dim, -1), model.patch_embed.proj.bias,
                                 rel_emb[npt:], 100.0)
    _, _, height, width = image.shape
    pixels = F.fold(rel_rows.T[None], (height, width), (ph, pw), stride=(ph, pw))[0]
    return pixels.sum(0), rel_pos.sum(-1), list(reversed(rope_rel))
