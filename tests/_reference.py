"""A float64 convolution a reader can check at a glance: the oracle for every test.

Padding maps each out-of-range index back into the input (or to zero); then the output is
a sum, over kernel offsets u, of the strided input window at offset dilation*u contracted
with weight[..., u] over input channels. Slow, simple, independent of numbaconv.
"""

import itertools
import math

import numpy as np


def _source_index(i, size, mode):
    """Input index read at padded position i (i may be out of range), or None for zero."""
    if 0 <= i < size:
        return i
    if mode == "zeros":
        return None
    if mode == "replicate":
        return min(max(i, 0), size - 1)
    if mode == "circular":
        return i % size
    if mode == "reflect":  # mirror without repeating the edge: -1 -> 1, size -> size - 2
        return -i if i < 0 else 2 * (size - 1) - i
    raise ValueError(mode)


def _pad(x, pads, mode):
    """Pad the trailing len(pads) axes of x (N, C, *spatial) by (before, after) pairs."""
    spatial = x.shape[2:]
    out = np.zeros(x.shape[:2] + tuple(s + lo + hi for s, (lo, hi) in zip(spatial, pads)))
    for pos in itertools.product(*(range(s) for s in out.shape[2:])):
        src = [_source_index(p - lo, s, mode) for p, (lo, _), s in zip(pos, pads, spatial)]
        if None not in src:
            out[(...,) + pos] = x[(...,) + tuple(src)]
    return out


def _per_axis(value, d):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * d


def reference_pads(spatial, kernel, stride, dilation, padding):
    """Padding as (before, after) pairs, "same" per SPEC.md."""
    d = len(spatial)
    if padding == "valid":
        return [(0, 0)] * d
    if padding == "same":
        pads = []
        for size, k, s, dil in zip(spatial, kernel, stride, dilation):
            total = max((math.ceil(size / s) - 1) * s + dil * (k - 1) + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        return pads
    padding = _per_axis(padding, d)
    return [p if isinstance(p, (tuple, list)) else (p, p) for p in padding]


def conv_reference(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                   padding_mode="zeros"):
    """float64 cross-correlation, shapes as torch.nn.functional.conv{1,2,3}d."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    d = weight.ndim - 2
    unbatched = x.ndim == d + 1
    if unbatched:
        x = x[None]
    kernel = weight.shape[2:]
    stride, dilation = _per_axis(stride, d), _per_axis(dilation, d)
    pads = reference_pads(x.shape[2:], kernel, stride, dilation, padding)
    xp = _pad(x, pads, padding_mode)
    out = [(p - dil * (k - 1) - 1) // s + 1
           for p, k, s, dil in zip(xp.shape[2:], kernel, stride, dilation)]
    n, c_out = x.shape[0], weight.shape[0]
    cg, og = x.shape[1] // groups, c_out // groups
    y = np.zeros((n, c_out, *out))
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        for u in itertools.product(*(range(k) for k in kernel)):
            window = tuple(slice(dil * ui, dil * ui + s * (o - 1) + 1, s)
                           for ui, dil, s, o in zip(u, dilation, stride, out))
            w_u = weight[(slice(g * og, (g + 1) * og), slice(None)) + u]
            y[:, g * og:(g + 1) * og] += np.einsum("nc...,oc->no...", xs[(...,) + window], w_u)
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64).reshape((1, c_out) + (1,) * d)
    return y[0] if unbatched else y
