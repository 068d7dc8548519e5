"""Weight gradient of channel-wise (depthwise and few-channel grouped) convolutions
(Numba, parallel over groups and blocks of their output channels).

With one (or a few) input channels per group the weight gradient is tiny (``C_out x taps``) and the
im2col GEMM degenerates into thousands of matrix-vector products. Here each thread owns
whole output channels (no two threads write one value). As in the forward channel-wise
kernel (and with its plane layout, split into stride phases), each input plane is copied
once into a zero-padded buffer, and the output gradient's rows are laid out at the same
pitch ``Wq`` (zeros past ``OW``): a tap's gradient is then a single dot product over the
whole plane, ``dot(gp, xp[offset(tap):])``, free of borders, strides and short rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import CACHE, FASTMATH
from .direct import fill_plane, plane_layout

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)


@njit(**_JIT)
def _dot_taps(acc, gp, xp, offsets, length, zero):
    """acc[t] += dot(gp[:length], xp[offsets[t]:][:length]) for every tap, four taps a
    pass so that each load of gp feeds four FMAs. ``zero`` has the arrays' dtype, so the
    sums run in it (16 float32 lanes per vector, not 8 float64 ones)."""
    ntaps = offsets.shape[0]
    g = gp[:length]
    t = 0
    while t + 4 <= ntaps:
        x0 = xp[offsets[t]: offsets[t] + length]
        x1 = xp[offsets[t + 1]: offsets[t + 1] + length]
        x2 = xp[offsets[t + 2]: offsets[t + 2] + length]
        x3 = xp[offsets[t + 3]: offsets[t + 3] + length]
        s0 = s1 = s2 = s3 = zero
        for i in range(length):
            s0 += g[i] * x0[i]
            s1 += g[i] * x1[i]
            s2 += g[i] * x2[i]
            s3 += g[i] * x3[i]
        acc[t] += s0
        acc[t + 1] += s1
        acc[t + 2] += s2
        acc[t + 3] += s3
        t += 4
    while t < ntaps:
        x0 = xp[offsets[t]: offsets[t] + length]
        s0 = zero
        for i in range(length):
            s0 += g[i] * x0[i]
        acc[t] += s0
        t += 1


@njit(parallel=True, **_JIT)
def channelwise_weight_grad(x, g, gw, stride, dilation, pad, blocks):
    """Write ``gw`` ``(G, COg, KD, Cg, KH, KW)``.

    ``x`` ``(N, G, Cg, D, H, W)`` is the unpadded input (one or a few channels per
    group), ``g`` ``(N, G, COg, OD, OH, OW)`` the output gradient; ``stride``,
    ``dilation`` and ``pad`` (zero padding before each axis) are ``(d, h, w)`` tuples.
    The group's ``Cg`` input planes lie one after another in one buffer, as in the
    forward kernel, so each (channel, tap) pair is one dot product.

    Jobs are a group's output channels in ``blocks`` blocks: each job copies its group's
    input planes once for all its output channels (per output channel, the planes of
    an 8-channel group were copied 8 times: resnext_g32's weight gradient 0.63 ms).
    """
    N, G, Cg, D = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    COg, OD, OH, OW = g.shape[2], g.shape[3], g.shape[4], g.shape[5]
    KD = gw.shape[2]
    KH, KW = gw.shape[4], gw.shape[5]
    Hq, Wq, block, offsets = plane_layout(OH, OW, KH, KW, stride, dilation, Cg)
    taps = KH * KW
    per_block = (COg + blocks - 1) // blocks
    zero = np.zeros(1, dtype=x.dtype)[0]
    for job in prange(G * blocks):
        gi = job // blocks
        m0 = (job % blocks) * per_block
        m1 = min(COg, m0 + per_block)
        if m1 <= m0:
            continue
        acc = np.zeros((m1 - m0, KD * Cg * taps))  # float64 sums of float32 products
        # Positions outside the input (or past OW) are never written: they stay zero.
        xp = np.zeros(Cg * block, dtype=x.dtype)
        gp = np.zeros((m1 - m0, OH * Wq), dtype=x.dtype)
        for n in range(N):
            for od in range(OD):
                for m in range(m0, m1):
                    for oh in range(OH):
                        # Loops, not array-to-array slice assignments: those compile
                        # seconds slower (overlap checks, broadcasting).
                        seg, run = gp[m - m0, oh * Wq: oh * Wq + OW], g[n, gi, m, od, oh]
                        for j in range(OW):
                            seg[j] = run[j]
                for kd in range(KD):
                    i_d = od * stride[0] + kd * dilation[0] - pad[0]
                    if i_d < 0 or i_d >= D:
                        continue
                    for c in range(Cg):
                        fill_plane(xp[c * block: (c + 1) * block], x[n, gi, c, i_d], Hq,
                                   Wq, Hq * Wq, stride, pad)
                    for m in range(m0, m1):
                        _dot_taps(acc[m - m0, kd * Cg * taps: (kd + 1) * Cg * taps],
                                  gp[m - m0], xp, offsets, OH * Wq, zero)
        for m in range(m0, m1):
            for kd in range(KD):
                for c in range(Cg):
                    for tp in range(taps):
                        gw[gi, m, kd, c, tp // KW, tp % KW] = acc[m - m0,
                                                                  (kd * Cg + c) * taps + tp]
