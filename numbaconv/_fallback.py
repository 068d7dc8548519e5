"""A convolution that needs no compiled kernel: one NumPy GEMM per kernel tap.

``method="auto"`` runs it while the kernel it chose is still compiling in the background
(:mod:`numbaconv._compile`), unless the FFT path, which needs no compilation either, is
estimated faster. For each tap, the inputs it reads form a strided view of the
zero-padded input; copied into ``(N, G, Cg, P)`` they multiply the tap's weights
``(G, COg, Cg)`` in one stacked ``np.matmul`` (one BLAS call per sample and group), and
the products add up in the output. Depthwise taps (one input and output channel per
group) are a broadcast multiply-add instead. A NaN or Inf reaches only the outputs whose
taps read it, as on the compiled paths.
"""

from __future__ import annotations

import math

import numpy as np


def conv_taps(x6, w6, bias2, out, stride, dilation, pad):
    """Run the convolution on normalised arrays, writing ``out``.

    Arrays and tuples as for :func:`numbaconv._direct.conv_direct`.
    """
    N, G, Cg = x6.shape[:3]
    COg = w6.shape[1]
    acc = out.reshape(N, G, COg, -1)
    acc[...] = bias2[None, :, :, None]
    product = np.empty_like(acc)
    for tap, columns in _tap_columns(x6, w6.shape[3:], stride, dilation, pad,
                                     out.shape[3:]):
        weights = w6[(Ellipsis,) + tap]  # (G, COg, Cg)
        if Cg == 1 and COg == 1:
            np.multiply(columns, weights[None], out=product)  # (N, G, 1, P) * (1, G, 1, 1)
        else:
            np.matmul(weights, columns, out=product)
        acc += product
    return out


def weight_grad_taps(x6, g6, kernel, stride, dilation, pad):
    """The weight gradient ``(G, COg, Cg, KD, KH, KW)`` from the input ``x6`` and the
    output gradient ``g6`` ``(N, G, COg, OD, OH, OW)``: per tap, the output gradient
    times the columns' transpose, summed over samples."""
    N, G, COg = g6.shape[:3]
    Cg = x6.shape[2]
    g4 = g6.reshape(N, G, COg, -1)
    gw = np.empty((G, COg, Cg) + tuple(kernel), dtype=g6.dtype)
    for tap, columns in _tap_columns(x6, kernel, stride, dilation, pad, g6.shape[3:]):
        if Cg == 1:
            gw[(Ellipsis,) + tap] = (g4 * columns).sum(axis=(0, 3))[:, :, None]
        else:
            gw[(Ellipsis,) + tap] = np.matmul(g4, columns.swapaxes(2, 3)).sum(axis=0)
    return gw


def _tap_columns(x6, kernel, stride, dilation, pad, out_spatial):
    """``((kd, kh, kw), columns)`` for every tap: the inputs the tap reads for each
    output, ``(N, G, Cg, P)`` (one buffer, rewritten tap after tap)."""
    N, G, Cg = x6.shape[:3]
    # Zero padding after each axis as far as the last window reaches (the input's tail
    # beyond it is never read).
    reach = [(o - 1) * s + (k - 1) * d + 1
             for o, s, k, d in zip(out_spatial, stride, kernel, dilation)]
    after = [max(0, r - p - n) for r, p, n in zip(reach, pad, x6.shape[3:])]
    xp = np.pad(x6, ((0, 0),) * 3 + tuple(zip(pad, after)))
    columns = np.empty((N, G, Cg, math.prod(out_spatial)), dtype=x6.dtype)
    for tap in np.ndindex(*kernel):
        window = xp[(Ellipsis,) + tuple(
            slice(k * d, k * d + (o - 1) * s + 1, s)
            for k, d, s, o in zip(tap, dilation, stride, out_spatial))]
        columns.reshape(window.shape)[...] = window
        yield tap, columns
