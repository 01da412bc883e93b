"""Slow, explicit LRP formulas written from SPEC, shared by the tests (not used by the engine)."""
import torch
import torch.nn.functional as F


def _zennit_stabilize(d, eps):
    return d + ((d == 0).to(d) + d.sign()) * eps


def slow_gamma_linear(x, weight, bias, relevance, gamma, eps=1e-6):
    """SPEC section 2 written out literally, one sample row at a time."""
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
    """Conv Gamma via explicit unfolding into a linear map on patches, then the SPEC formula;
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


def slow_palrp_deit(model, image, target):
    """PA-LRP of SPEC section 2 for ONE image, layer by layer, relprop style (float64).

    Forward with explicit ops, storing every activation; then relevance flows backwards with the
    rule of each place written as a formula: Gamma (0.05) on head/fc1/fc2, identity on GELU,
    epsilon on LayerNorm (std constant), residual adds, proj, the V rows of qkv and ``x + pos``;
    attention probabilities constant with the relevance reaching V halved; Gamma (100) on the
    patch-embedding conv via explicit unfolding. Relevance 1 is seeded at ``target``.
    Returns (pixel relevance (H, W), PE relevance per patch position (N,)).
    """
    cfg = model.cfg
    ph, pw = cfg.patch_size
    dim, heads = cfg.embed_dim, cfg.num_heads
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
        rel_v = 0.5 * split(v) * (attn.transpose(1, 2) @ ratio)           # A constant, halved
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
