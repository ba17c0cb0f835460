"""A straightforward float64 CREPS generator, written from docs/model.md.

Independent of creps.model on purpose: it reads a state dict (original keys) and a
config dict, materialises the textbook per-sample weights W' = weight * s (demodulated
where the spec says so), keeps line tensors as [N, C, L, R] per half, indexes ws the
way the original's `narrow` windows do, and builds its own Fourier features. Slow and
plain; only the tests and the benchmark use it.
"""

from __future__ import annotations

import math

import torch

SQRT2 = math.sqrt(2.0)


def _f64(state, key):
    return state[key].detach().to("cpu", torch.float64)


def lrelu(x):
    return torch.where(x >= 0, x, 0.2 * x) * SQRT2


def fc(state, key, x, act=False, lr_mul=1.0):
    """FullyConnectedLayer on the last axis of x."""
    weight, bias = _f64(state, f"{key}.weight"), _f64(state, f"{key}.bias")
    y = x @ (weight * (lr_mul / math.sqrt(weight.shape[1]))).T + bias * lr_mul
    return lrelu(y) if act else y


def modulated_textbook(weight, bias, s, x, demodulate, act, clamp):
    """Per-sample weights W'[n] = weight * s[n], applied at every position of x [N, I, ...]."""
    wp = weight.unsqueeze(0) * s.unsqueeze(1)  # (N, O, I)
    if demodulate:
        wp = wp / torch.sqrt((wp * wp).sum(dim=2, keepdim=True) + 1e-8)
    y = torch.einsum("noi,ni...->no...", wp, x)  # (N, O, ...)
    y = y + bias.reshape(1, -1, *([1] * (x.dim() - 2)))
    if act:
        y = lrelu(y)
    return y.clamp(-clamp, clamp) if clamp is not None else y


def synthesis_layer(state, key, x, w, clamp):
    s = fc(state, f"{key}.affine", w)  # (N, I)
    return modulated_textbook(_f64(state, f"{key}.weight"), _f64(state, f"{key}.bias"), s, x, True, True, clamp)


def tores_layer(state, key, x, w, clamp):
    weight = _f64(state, f"{key}.weight")
    s = fc(state, f"{key}.affine", w) / math.sqrt(weight.shape[1])  # (N, I)
    return modulated_textbook(weight, _f64(state, f"{key}.bias"), s, x, False, False, clamp)


def mapping(state, cfg, z, psi=1.0, cutoff=None):
    """z (N, z_dim) -> ws (N, num_ws, w_dim), float64."""
    x = torch.as_tensor(z, dtype=torch.float64)
    x = x / torch.sqrt((x * x).mean(dim=1, keepdim=True) + 1e-8)
    for i in range(cfg["mapping_layers"]):
        x = fc(state, f"mapping.fc{i}", x, act=True, lr_mul=0.01)
    ws = [x.clone() for _ in range(num_ws(cfg))]
    w_avg = _f64(state, "mapping.w_avg")
    for j in range(num_ws(cfg) if cutoff is None else cutoff):
        ws[j] = w_avg + psi * (ws[j] - w_avg)
    return torch.stack(ws, dim=1)


def resolutions(cfg):
    res, out = 4, []
    while res <= cfg["img_resolution"]:
        out.append(res)
        res *= 2
    return out


def num_ws(cfg):
    return 2 + 2 * (len(resolutions(cfg)) - 1) + 1


def block_ws(cfg):
    """Per block the ws indices it reads, as the original's narrow windows: b4 gets 3 starting at
    0 and moves the cursor by 1, later blocks get 3 and move it by 2."""
    cursor, out = 0, {}
    for res in resolutions(cfg):
        out[res] = [cursor, cursor + 1, cursor + 2]
        cursor += 1 if res == 4 else 2
    return out


def fourier_half(state, t, w, half, rank):
    """b4.input for one half at coordinates t (L,) -> (N, C, L, R)."""
    freqs = _f64(state, "synthesis.b4.input.freqs")[0]  # (C/2*R,)
    weight = _f64(state, "synthesis.b4.input.weight")  # (1, C, 1, 2R)
    C = weight.shape[1]
    N, L = w.shape[0], t.shape[0]
    styles = fc(state, "synthesis.b4.input.affine", w).reshape(N, C, 2 * rank)
    feat = torch.zeros(C, L, rank, dtype=torch.float64)
    for c in range(C // 2):
        for k in range(rank):
            phase = 2 * math.pi * t * freqs[c * rank + k]  # (L,)
            feat[c, :, k] = torch.sin(phase)
            feat[C // 2 + c, :, k] = torch.sin(phase + math.pi / 2)
    out = torch.zeros(N, C, L, rank, dtype=torch.float64)
    for k in range(rank):
        j = half * rank + k
        mod = weight[0, :, 0, j].unsqueeze(0) * styles[:, :, j] / math.sqrt(C)  # (N, C)
        out[:, :, :, k] = feat[:, :, k].unsqueeze(0) * mod.unsqueeze(2)
    return out


def decoder(state, key, f):
    for i in range(4):
        f = fc(state, f"{key}.{i}", f, act=True)
    return f


def generate(state, cfg, z, psi, cutoff, ys, xs):
    """The image (N, 3, H, W) float64 for latents z at column coordinates ys and row coordinates xs."""
    ws = mapping(state, cfg, z, psi, cutoff)
    return synthesis(state, cfg, ws, ys, xs)


def synthesis(state, cfg, ws, ys, xs):
    ys = torch.as_tensor(ys, dtype=torch.float64)
    xs = torch.as_tensor(xs, dtype=torch.float64)
    clamp = cfg.get("fc_clamp", 256.0)
    rank = cfg["rank"]
    idx = block_ws(cfg)
    halves = []
    for half, t in ((0, ys), (1, xs)):
        x = fourier_half(state, t, ws[:, idx[4][0]], half, rank)  # (N, C, L, R)
        x = synthesis_layer(state, "synthesis.b4.fc1", x, ws[:, idx[4][1]], clamp)
        skip, per_block = None, []
        for res in resolutions(cfg)[1:]:
            a, b, c = idx[res]
            x = synthesis_layer(state, f"synthesis.b{res}.fc0", x, ws[:, a], clamp)
            x = synthesis_layer(state, f"synthesis.b{res}.fc1", x, ws[:, b], clamp)
            y = tores_layer(state, f"synthesis.b{res}.tores", x, ws[:, c], clamp)
            skip = y if skip is None else skip + y
            per_block.append(skip * math.sqrt(0.5))
        halves.append(per_block)
    skips = list(zip(*halves))  # per entangled block: (A (N, 32, H, R), B (N, 32, W, R))
    feats = [torch.einsum("ncyk,ncxk->nyxc", A, B) for A, B in skips]  # (N, H, W, 32) each
    f = feats[0]
    for res, feat in zip(resolutions(cfg)[2:], feats[1:]):
        f = decoder(state, f"synthesis.decoder_{res}", f) + feat
    f = decoder(state, "synthesis.decoder_last", f)
    img = fc(state, "synthesis.decoder_img", f)  # (N, H, W, 3)
    f = f.permute(0, 3, 1, 2)  # (N, 32, H, W)
    img = img.permute(0, 3, 1, 2)  # (N, 3, H, W)
    w_last = ws[:, -1]
    for name in ("block0", "block1"):
        f = synthesis_layer(state, f"synthesis.{name}.fc0", f, w_last, 256.0)
        f = synthesis_layer(state, f"synthesis.{name}.fc1", f, w_last, 256.0)
        img = img + tores_layer(state, f"synthesis.{name}.tores", f, w_last, 256.0)
    return img
