"""An independent float64 implementation of ALUM's Algorithm 1, the tests' oracle.

Written from docs/algorithm.md alone, row by row with plain Python loops and NumPy,
sharing no code with ``alum``: softmax, KL, the update rules and the projection
are all spelled out here again.
"""
from __future__ import annotations

import numpy as np


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def kl(p, q):
    """KL(p ‖ q) per row, over the last axis."""
    return (p * (np.log(p) - np.log(q))).sum(axis=-1)


def _norm(v, norm):
    v = np.asarray(v, dtype=np.float64).ravel()
    if norm == "inf":
        return float(np.abs(v).max()) if v.size else 0.0
    if norm == "l2":
        return float(np.sqrt((v * v).sum()))
    return float(np.abs(v).sum())


def _rows(shape, level, mask):
    """Index lists of the rows: one per valid token, or one per sequence."""
    B, T = shape[0], shape[1]
    valid = np.ones((B, T), bool) if mask is None else np.asarray(mask).astype(bool)
    if level == "token":
        return [[(b, t)] for b in range(B) for t in range(T) if valid[b, t]]
    return [[(b, t) for t in range(T) if valid[b, t]] for b in range(B)]


def update(delta, grad, cfg, mask=None, scale=None):
    """The new δ by the rule of cfg (project or normalize), row by row.

    ``scale``: dict mapping a row's first index (b, t) to its embedding-norm multiplier.
    """
    delta = np.asarray(delta, np.float64)
    grad = np.asarray(grad, np.float64)
    out = np.zeros_like(delta)
    for rows in _rows(delta.shape, cfg["level"], mask):
        if not rows:
            continue
        d = np.stack([delta[b, t] for b, t in rows])
        g = np.stack([grad[b, t] for b, t in rows])
        s = 1.0 if scale is None else scale[rows[0]]
        eta = cfg["step_size"] * s
        if cfg["update"] == "project":
            gn = _norm(g, cfg["norm"])
            u = d + (eta * g / gn if gn > 0 else 0.0)
            eps = cfg["epsilon"] * s
            if cfg["norm"] == "inf":
                new = np.clip(u, -eps, eps)
            else:
                n = _norm(u, "l2")
                new = u * (eps / n) if n > eps else u
        else:
            u = d + eta * g
            r = cfg["normalize_radius"] * s
            if cfg["norm"] == "l1":
                new = r * np.sign(u)
            else:
                un = _norm(u, cfg["norm"])
                new = r * u / un if un > 0 else np.zeros_like(u)
        for i, (b, t) in enumerate(rows):
            out[b, t] = new[i]
    return out


def embed_scale(embeds, cfg, mask=None):
    """Per-row ‖embedding‖ for epsilon_scale='relative' (L-inf for the sign rule)."""
    norm = "inf" if cfg["norm"] == "l1" else cfg["norm"]
    scale = {}
    for rows in _rows(embeds.shape, cfg["level"], mask):
        if rows:
            scale[rows[0]] = _norm(np.stack([embeds[b, t] for b, t in rows]), norm)
    return scale
