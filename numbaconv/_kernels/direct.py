"""Direct convolution kernels (Numba, parallel over output rows).

Every kernel works on three spatial axes: a 1D or 2D convolution reaches it with leading
spatial axes of size 1, which only adds trips of length one to loops outside the hot
reduction. One kernel per data type therefore serves every dimensionality, and each
compiles once (a ``parallel=True`` kernel costs 1-3 s to compile).

Layouts (C-contiguous, one dtype, float32 or float64):

- ``x``: ``(N, G, Cg, D, H, W)``, unpadded; zero padding is applied while packing rows.
- ``out``: ``(N, G, COg, OD, OH, OW)``, overwritten.
- ``bias``: ``(G, COg)`` (zeros when the user gave none).
- ``stride``, ``dilation``, ``pad``: ``(d, h, w)`` tuples; ``pad`` is the padding before
  each axis (the padding after is implied by the output size).

Dense kernel (``dense_conv``): for each output row, the receptive fields of the row are
packed once into a small buffer ``P[iw, kd, kh, c]`` in which one output's inputs for a
given ``kw`` are contiguous (and, without dilation along W, contiguous for all ``kw``).
The weight is packed to match, ``(G, COg, KW, KD*KH*Cg)``, so every output is a dot
product of contiguous vectors. A register block of 4 output channels x 2 output columns
runs 8 such dot products at once: 6 vector loads feed 8 FMAs, and LLVM vectorises the
loop (``fastmath`` ``reassoc`` turns each sum into vector partial sums).

Channel-wise kernel (``channelwise_conv``, one or a few input channels per group:
depthwise and few-channel grouped layers): a group's input planes are copied into a
zero-padded buffer split into stride phases (:func:`plane_layout`), so that each
(channel, tap) pair reads a shifted, contiguous copy of the output plane's inputs, with
no borders. Register blocks of 8 vectors of output positions sum every pair and write
the output in place (:mod:`numbaconv._simd`; masked moves at row ends).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._simd import (VECTOR_BYTES, veven, vfma, vload, vload_first, vodd, vsplat, vstore,
                     vstore_first)
from ..config import CACHE, FASTMATH

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)


@njit(**_JIT)
def _dot_4x2(P, xa, xb, W2, co, K, b0, b1, b2, b3):
    """Dot products of weight rows co..co+3 with the fields P[xa:xa+K] and P[xb:xb+K]."""
    # Slicing first gives LLVM indices it knows are in range: plain loads, not gathers.
    pa = P[xa: xa + K]
    pb = P[xb: xb + K]
    q0 = W2[co]
    q1 = W2[co + 1]
    q2 = W2[co + 2]
    q3 = W2[co + 3]
    a0, a1, a2, a3 = b0, b1, b2, b3
    c0, c1, c2, c3 = b0, b1, b2, b3
    for k in range(K):
        u = pa[k]
        v = pb[k]
        a0 += q0[k] * u
        c0 += q0[k] * v
        a1 += q1[k] * u
        c1 += q1[k] * v
        a2 += q2[k] * u
        c2 += q2[k] * v
        a3 += q3[k] * u
        c3 += q3[k] * v
    return a0, a1, a2, a3, c0, c1, c2, c3


@njit(**_JIT)
def _dot_4x1(P, xa, W2, co, K, b0, b1, b2, b3):
    """Dot products of weight rows co..co+3 with the field P[xa:xa+K]."""
    pa = P[xa: xa + K]
    q0 = W2[co]
    q1 = W2[co + 1]
    q2 = W2[co + 2]
    q3 = W2[co + 3]
    a0, a1, a2, a3 = b0, b1, b2, b3
    for k in range(K):
        u = pa[k]
        a0 += q0[k] * u
        a1 += q1[k] * u
        a2 += q2[k] * u
        a3 += q3[k] * u
    return a0, a1, a2, a3


@njit(**_JIT)
def _dot_1x4(P, xa, xdist, W2, co, K, b):
    """Dot products of weight row co with the fields P[xa + i*xdist:][:K], i < 4."""
    p0 = P[xa: xa + K]
    p1 = P[xa + xdist: xa + xdist + K]
    p2 = P[xa + 2 * xdist: xa + 2 * xdist + K]
    p3 = P[xa + 3 * xdist: xa + 3 * xdist + K]
    q = W2[co]
    a0, a1, a2, a3 = b, b, b, b
    for k in range(K):
        w = q[k]
        a0 += w * p0[k]
        a1 += w * p1[k]
        a2 += w * p2[k]
        a3 += w * p3[k]
    return a0, a1, a2, a3


@njit(**_JIT)
def _dot_1x1(P, xa, W2, co, K, b):
    """Dot product of weight row co with the field P[xa:xa+K]."""
    pa = P[xa: xa + K]
    q = W2[co]
    a = b
    for k in range(K):
        a += q[k] * pa[k]
    return a


@njit(**_JIT)
def _pack_rows(x, n, g, od, oh, columns, kernel, stride, dilation, pad, P):
    """Fill ``P[q, kd, kh, c]`` with input column ``columns[q]`` (``-1``: zero padding) of
    the rows that output row (od, oh) reads through taps (kd, kh)."""
    Cg, D, H = x.shape[2], x.shape[3], x.shape[4]
    KD, KH = kernel[0], kernel[1]
    KDHC = KD * KH * Cg
    ncols = columns.shape[0]
    P[:] = 0
    for kd in range(KD):
        i_d = od * stride[0] + kd * dilation[0] - pad[0]
        if i_d < 0 or i_d >= D:
            continue
        for kh in range(KH):
            i_h = oh * stride[1] + kh * dilation[1] - pad[1]
            if i_h < 0 or i_h >= H:
                continue
            off = (kd * KH + kh) * Cg
            # Channels innermost: sequential writes into P.
            for q in range(ncols):
                src = columns[q]
                if src >= 0:
                    base = q * KDHC + off
                    for c in range(Cg):
                        P[base + c] = x[n, g, c, i_d, i_h, src]


@njit(parallel=True, **_JIT)
def dense_conv(x, wt, bias, out, kernel, stride, dilation, pad, ow_chunk, co_chunk):
    """Direct convolution with packed rows; see the module docstring for layouts.

    ``wt`` is the weight packed as ``(G, COg, KW, KD*KH*Cg)``; ``kernel`` is (KD, KH, KW).
    Work is split into jobs of one output row, ``ow_chunk`` output columns and
    ``co_chunk`` output channels; each job writes only its own outputs.

    Without dilation along W, neighbouring ``kw`` taps read neighbouring packed columns,
    so the packed buffer holds each input column once and output ``i``'s field is the
    contiguous run ``P[i*sw*KDHC:][:K]``. With dilation, the buffer holds each output's
    ``KW`` columns side by side instead (``P[i*K:][:K]``), so the field stays contiguous.
    """
    N, G, W = x.shape[0], x.shape[1], x.shape[5]
    COg, KW, KDHC = wt.shape[1], wt.shape[2], wt.shape[3]
    OD, OH, OW = out.shape[3], out.shape[4], out.shape[5]
    sw, dw, pw = stride[2], dilation[2], pad[2]
    K = KW * KDHC
    compact = dw == 1
    n_owc = (OW + ow_chunk - 1) // ow_chunk
    n_coc = (COg + co_chunk - 1) // co_chunk
    for job in prange(N * G * OD * OH * n_owc * n_coc):
        coc = job % n_coc
        rest = job // n_coc
        owc = rest % n_owc
        rest //= n_owc
        oh = rest % OH
        rest //= OH
        od = rest % OD
        rest //= OD
        g = rest % G
        n = rest // G
        ow0 = owc * ow_chunk
        nw = min(OW - ow0, ow_chunk)
        if compact:
            ncols = (nw - 1) * sw + KW
            fstep = sw * KDHC  # distance in P between neighbouring outputs' fields
        else:
            ncols = nw * KW
            fstep = K
        columns = np.empty(ncols, dtype=np.int64)
        for q in range(ncols):
            if compact:
                src = ow0 * sw + q - pw
            else:
                src = (ow0 + q // KW) * sw + (q % KW) * dw - pw
            columns[q] = src if 0 <= src < W else -1
        P = np.empty(ncols * KDHC, dtype=x.dtype)
        _pack_rows(x, n, g, od, oh, columns, kernel, stride, dilation, pad, P)
        W2 = wt[g].reshape((COg, K))
        bg = bias[g]
        co = coc * co_chunk
        co_end = min(COg, co + co_chunk)
        while co + 4 <= co_end:
            b0, b1, b2, b3 = bg[co], bg[co + 1], bg[co + 2], bg[co + 3]
            i = 0
            while i + 2 <= nw:
                a0, a1, a2, a3, c0, c1, c2, c3 = _dot_4x2(
                    P, i * fstep, (i + 1) * fstep, W2, co, K, b0, b1, b2, b3
                )
                o = ow0 + i
                out[n, g, co, od, oh, o] = a0
                out[n, g, co + 1, od, oh, o] = a1
                out[n, g, co + 2, od, oh, o] = a2
                out[n, g, co + 3, od, oh, o] = a3
                out[n, g, co, od, oh, o + 1] = c0
                out[n, g, co + 1, od, oh, o + 1] = c1
                out[n, g, co + 2, od, oh, o + 1] = c2
                out[n, g, co + 3, od, oh, o + 1] = c3
                i += 2
            if i < nw:
                a0, a1, a2, a3 = _dot_4x1(P, i * fstep, W2, co, K, b0, b1, b2, b3)
                o = ow0 + i
                out[n, g, co, od, oh, o] = a0
                out[n, g, co + 1, od, oh, o] = a1
                out[n, g, co + 2, od, oh, o] = a2
                out[n, g, co + 3, od, oh, o] = a3
            co += 4
        while co < co_end:
            # Fewer than 4 channels left: block over 4 columns instead.
            b = bg[co]
            i = 0
            while i + 4 <= nw:
                a0, a1, a2, a3 = _dot_1x4(P, i * fstep, fstep, W2, co, K, b)
                o = ow0 + i
                out[n, g, co, od, oh, o] = a0
                out[n, g, co, od, oh, o + 1] = a1
                out[n, g, co, od, oh, o + 2] = a2
                out[n, g, co, od, oh, o + 3] = a3
                i += 4
            while i < nw:
                out[n, g, co, od, oh, ow0 + i] = _dot_1x1(P, i * fstep, W2, co, K, b)
                i += 1
            co += 1


# Inlined, as the two below (each has one call site, channelwise_conv's): called, their
# array arguments' reference counts, shared by the threads, were taken and dropped per
# output plane.
@njit(inline="always", **_JIT)
def _rows_taps(outf, o, xp, Wq, offsets, weights, KH, KW, OH, OW, base, fresh):
    """Write the output plane at ``outf[o:]`` (``OH x OW``, row-major):
    ``(base if fresh else itself) + sum_t weights[t] * xp[offsets[t] + oh*Wq + ow]``,
    for unit stride and dilation along H.

    A block of 4 output rows x 2 vectors keeps its 8 sums in registers over every tap.
    Tap ``(kh, kw)`` of row ``r + 1`` reads what tap ``(kh + 1, kw)`` of row ``r``
    reads, so for each (input channel, kw) the 4 rows' inputs slide down the kernel's
    column: one new row (two vectors) feeds 8 FMAs. The block is written (or, where
    not ``fresh``, read) once, straight into the output, the row ends and the rows past
    ``OH`` by masked moves; the columns and rows past the output's are computed and
    dropped."""
    L = VECTOR_BYTES // xp.itemsize
    taps = offsets.shape[0]
    for oh0 in range(0, OH, 4):
        for ow0 in range(0, OW, 2 * L):
            # Blocks inside the output (most) store whole vectors.
            full = oh0 + 4 <= OH and ow0 + 2 * L <= OW
            n0, n1, n2, n3, m0, m1, m2, m3 = L, L, L, L, L, L, L, L
            if not full:
                n0 = _lanes_inside(oh0, ow0, L, OH, OW)
                n1 = _lanes_inside(oh0 + 1, ow0, L, OH, OW)
                n2 = _lanes_inside(oh0 + 2, ow0, L, OH, OW)
                n3 = _lanes_inside(oh0 + 3, ow0, L, OH, OW)
                m0 = _lanes_inside(oh0, ow0 + L, L, OH, OW)
                m1 = _lanes_inside(oh0 + 1, ow0 + L, L, OH, OW)
                m2 = _lanes_inside(oh0 + 2, ow0 + L, L, OH, OW)
                m3 = _lanes_inside(oh0 + 3, ow0 + L, L, OH, OW)
            q = o + oh0 * OW + ow0
            if fresh:
                a0 = vsplat(base)
                a1, a2, a3, b0, b1, b2, b3 = a0, a0, a0, a0, a0, a0, a0
            else:
                a0, b0 = vload_first(outf, q, n0), vload_first(outf, q + L, m0)
                a1 = vload_first(outf, q + OW, n1)
                b1 = vload_first(outf, q + OW + L, m1)
                a2 = vload_first(outf, q + 2 * OW, n2)
                b2 = vload_first(outf, q + 2 * OW + L, m2)
                a3 = vload_first(outf, q + 3 * OW, n3)
                b3 = vload_first(outf, q + 3 * OW + L, m3)
            first = oh0 * Wq + ow0
            # Tap (c, 0, kw) of each (input channel c, kw) column, by additions: two
            # integer divisions a column cost more than its FMAs (3x3 kernels).
            for c_first in range(0, taps, KH * KW):
                for t in range(c_first, c_first + KW):
                    i = offsets[t] + first
                    x0, y0 = vload(xp, i), vload(xp, i + L)
                    x1, y1 = vload(xp, i + Wq), vload(xp, i + Wq + L)
                    x2, y2 = vload(xp, i + 2 * Wq), vload(xp, i + 2 * Wq + L)
                    for kh in range(KH):
                        j = i + (kh + 3) * Wq
                        x3, y3 = vload(xp, j), vload(xp, j + L)
                        w = weights[t + kh * KW]
                        a0 = vfma(a0, x0, w)
                        b0 = vfma(b0, y0, w)
                        a1 = vfma(a1, x1, w)
                        b1 = vfma(b1, y1, w)
                        a2 = vfma(a2, x2, w)
                        b2 = vfma(b2, y2, w)
                        a3 = vfma(a3, x3, w)
                        b3 = vfma(b3, y3, w)
                        x0, x1, x2, y0, y1, y2 = x1, x2, x3, y1, y2, y3
            if full:
                vstore(outf, q, a0)
                vstore(outf, q + L, b0)
                vstore(outf, q + OW, a1)
                vstore(outf, q + OW + L, b1)
                vstore(outf, q + 2 * OW, a2)
                vstore(outf, q + 2 * OW + L, b2)
                vstore(outf, q + 3 * OW, a3)
                vstore(outf, q + 3 * OW + L, b3)
            else:
                vstore_first(outf, q, a0, n0)
                vstore_first(outf, q + L, b0, m0)
                vstore_first(outf, q + OW, a1, n1)
                vstore_first(outf, q + OW + L, b1, m1)
                vstore_first(outf, q + 2 * OW, a2, n2)
                vstore_first(outf, q + 2 * OW + L, b2, m2)
                vstore_first(outf, q + 3 * OW, a3, n3)
                vstore_first(outf, q + 3 * OW + L, b3, m3)


@njit(inline="always", **_JIT)
def _rows_taps_narrow(outf, o, xp, Wq, offsets, weights, KH, KW, OH, OW, base, fresh):
    """:func:`_rows_taps` with register blocks of 8 rows x 1 vector: each new input
    row loaded feeds 8 FMAs."""
    L = VECTOR_BYTES // xp.itemsize
    taps = offsets.shape[0]
    for oh0 in range(0, OH, 8):
        for ow0 in range(0, OW, L):
            # Blocks inside the output (most) store whole vectors.
            full = oh0 + 8 <= OH and ow0 + L <= OW
            n0, n1, n2, n3, n4, n5, n6, n7 = L, L, L, L, L, L, L, L
            if not full:
                n0 = _lanes_inside(oh0, ow0, L, OH, OW)
                n1 = _lanes_inside(oh0 + 1, ow0, L, OH, OW)
                n2 = _lanes_inside(oh0 + 2, ow0, L, OH, OW)
                n3 = _lanes_inside(oh0 + 3, ow0, L, OH, OW)
                n4 = _lanes_inside(oh0 + 4, ow0, L, OH, OW)
                n5 = _lanes_inside(oh0 + 5, ow0, L, OH, OW)
                n6 = _lanes_inside(oh0 + 6, ow0, L, OH, OW)
                n7 = _lanes_inside(oh0 + 7, ow0, L, OH, OW)
            q = o + oh0 * OW + ow0
            if fresh:
                a0 = vsplat(base)
                a1, a2, a3, a4, a5, a6, a7 = a0, a0, a0, a0, a0, a0, a0
            else:
                a0, a1 = vload_first(outf, q, n0), vload_first(outf, q + OW, n1)
                a2 = vload_first(outf, q + 2 * OW, n2)
                a3 = vload_first(outf, q + 3 * OW, n3)
                a4 = vload_first(outf, q + 4 * OW, n4)
                a5 = vload_first(outf, q + 5 * OW, n5)
                a6 = vload_first(outf, q + 6 * OW, n6)
                a7 = vload_first(outf, q + 7 * OW, n7)
            first = oh0 * Wq + ow0
            # Tap (c, 0, kw) of each (input channel c, kw) column, by additions: two
            # integer divisions a column cost more than its FMAs (3x3 kernels).
            for c_first in range(0, taps, KH * KW):
                for t in range(c_first, c_first + KW):
                    i = offsets[t] + first
                    x0, x1 = vload(xp, i), vload(xp, i + Wq)
                    x2, x3 = vload(xp, i + 2 * Wq), vload(xp, i + 3 * Wq)
                    x4, x5 = vload(xp, i + 4 * Wq), vload(xp, i + 5 * Wq)
                    x6 = vload(xp, i + 6 * Wq)
                    for kh in range(KH):
                        x7 = vload(xp, i + (kh + 7) * Wq)
                        w = weights[t + kh * KW]
                        a0, a1 = vfma(a0, x0, w), vfma(a1, x1, w)
                        a2, a3 = vfma(a2, x2, w), vfma(a3, x3, w)
                        a4, a5 = vfma(a4, x4, w), vfma(a5, x5, w)
                        a6, a7 = vfma(a6, x6, w), vfma(a7, x7, w)
                        x0, x1, x2, x3, x4, x5, x6 = x1, x2, x3, x4, x5, x6, x7
            if full:
                vstore(outf, q, a0)
                vstore(outf, q + OW, a1)
                vstore(outf, q + 2 * OW, a2)
                vstore(outf, q + 3 * OW, a3)
                vstore(outf, q + 4 * OW, a4)
                vstore(outf, q + 5 * OW, a5)
                vstore(outf, q + 6 * OW, a6)
                vstore(outf, q + 7 * OW, a7)
            else:
                vstore_first(outf, q, a0, n0)
                vstore_first(outf, q + OW, a1, n1)
                vstore_first(outf, q + 2 * OW, a2, n2)
                vstore_first(outf, q + 3 * OW, a3, n3)
                vstore_first(outf, q + 4 * OW, a4, n4)
                vstore_first(outf, q + 5 * OW, a5, n5)
                vstore_first(outf, q + 6 * OW, a6, n6)
                vstore_first(outf, q + 7 * OW, a7, n7)


# Inlined (its only call site is channelwise_conv's): called, its array arguments'
# reference counts, shared by the threads, were taken and dropped per output plane.
@njit(inline="always", **_JIT)
def _plane_blocks(outf, o, xp, Wq, offsets, weights, OH, OW, across, base, fresh):
    """Write the output plane at ``outf[o:]`` (``OH x OW``, row-major):
    ``(base if fresh else itself) + sum_t weights[t] * xp[offsets[t] + oh*Wq + ow]``.

    Register blocks of 8 vectors, ``across`` (1, 2, 4 or 8) along a row by
    ``8 // across`` rows, keep their sums over every tap: each tap loads 8 vectors for
    8 FMAs, and the block is written (or, where not ``fresh``, read) once, straight into
    the output, the row ends and the rows past ``OH`` by masked moves. Before these,
    each pass of whole-plane axpys loaded and stored a buffer of sums, copied into
    the output at the end (see README's "How it computes" for the measured gain)."""
    L = VECTOR_BYTES // xp.itemsize
    down = 8 // across
    ntaps = offsets.shape[0]
    # Accumulator k: row r_k = k // across and columns c_k = (k % across) * L on, of
    # the block: at d_k from the block's first input and f_k from its first output.
    r1, r2, r3, r4 = 1 // across, 2 // across, 3 // across, 4 // across
    r5, r6, r7 = 5 // across, 6 // across, 7 // across
    c1, c2, c3, c4 = (1 % across) * L, (2 % across) * L, (3 % across) * L, (4 % across) * L
    c5, c6, c7 = (5 % across) * L, (6 % across) * L, (7 % across) * L
    d1, d2, d3, d4 = r1 * Wq + c1, r2 * Wq + c2, r3 * Wq + c3, r4 * Wq + c4
    d5, d6, d7 = r5 * Wq + c5, r6 * Wq + c6, r7 * Wq + c7
    f1, f2, f3, f4 = r1 * OW + c1, r2 * OW + c2, r3 * OW + c3, r4 * OW + c4
    f5, f6, f7 = r5 * OW + c5, r6 * OW + c6, r7 * OW + c7
    for oh0 in range(0, OH, down):
        for ow0 in range(0, OW, across * L):
            # Blocks inside the output (most) store whole vectors; the others only
            # their accumulators' lanes inside it (none past its last row).
            full = oh0 + down <= OH and ow0 + across * L <= OW
            n0, n1, n2, n3, n4, n5, n6, n7 = L, L, L, L, L, L, L, L
            if not full:
                n0 = _lanes_inside(oh0, ow0, L, OH, OW)
                n1 = _lanes_inside(oh0 + r1, ow0 + c1, L, OH, OW)
                n2 = _lanes_inside(oh0 + r2, ow0 + c2, L, OH, OW)
                n3 = _lanes_inside(oh0 + r3, ow0 + c3, L, OH, OW)
                n4 = _lanes_inside(oh0 + r4, ow0 + c4, L, OH, OW)
                n5 = _lanes_inside(oh0 + r5, ow0 + c5, L, OH, OW)
                n6 = _lanes_inside(oh0 + r6, ow0 + c6, L, OH, OW)
                n7 = _lanes_inside(oh0 + r7, ow0 + c7, L, OH, OW)
            q = o + oh0 * OW + ow0
            e0, e1, e2, e3 = q, q + f1, q + f2, q + f3
            e4, e5, e6, e7 = q + f4, q + f5, q + f6, q + f7
            if fresh:
                a0 = vsplat(base)
                a1, a2, a3, a4, a5, a6, a7 = a0, a0, a0, a0, a0, a0, a0
            else:
                a0, a1 = vload_first(outf, e0, n0), vload_first(outf, e1, n1)
                a2, a3 = vload_first(outf, e2, n2), vload_first(outf, e3, n3)
                a4, a5 = vload_first(outf, e4, n4), vload_first(outf, e5, n5)
                a6, a7 = vload_first(outf, e6, n6), vload_first(outf, e7, n7)
            first = oh0 * Wq + ow0
            for t in range(ntaps):
                i = offsets[t] + first
                w = weights[t]
                a0 = vfma(a0, vload(xp, i), w)
                a1 = vfma(a1, vload(xp, i + d1), w)
                a2 = vfma(a2, vload(xp, i + d2), w)
                a3 = vfma(a3, vload(xp, i + d3), w)
                a4 = vfma(a4, vload(xp, i + d4), w)
                a5 = vfma(a5, vload(xp, i + d5), w)
                a6 = vfma(a6, vload(xp, i + d6), w)
                a7 = vfma(a7, vload(xp, i + d7), w)
            if full:
                vstore(outf, e0, a0)
                vstore(outf, e1, a1)
                vstore(outf, e2, a2)
                vstore(outf, e3, a3)
                vstore(outf, e4, a4)
                vstore(outf, e5, a5)
                vstore(outf, e6, a6)
                vstore(outf, e7, a7)
            else:
                vstore_first(outf, e0, a0, n0)
                vstore_first(outf, e1, a1, n1)
                vstore_first(outf, e2, a2, n2)
                vstore_first(outf, e3, a3, n3)
                vstore_first(outf, e4, a4, n4)
                vstore_first(outf, e5, a5, n5)
                vstore_first(outf, e6, a6, n6)
                vstore_first(outf, e7, a7, n7)


# Its arguments are sums of variables, never literal constants: Numba compiles a
# function once per literal argument value it is called with (each a tenth of a second).
@njit(**_JIT)
def _lanes_inside(row, column, L, OH, OW):
    """Lanes of an accumulator of ``L`` lanes holding output row ``row``, columns
    ``column`` on, that fall inside the ``OH x OW`` output (none past its last row)."""
    if row >= OH:
        return 0
    return max(0, min(L, OW - column))


# Not cached on their own (compiled into each caller and cached with it): the direct
# and the gradient kernels call them, and processes compiling those at once (``warmup``)
# must never share a cache index.
@njit(fastmath=set(FASTMATH), nogil=True)
def plane_layout(OH, OW, KH, KW, stride, dilation, Cg):
    """``(Hq, Wq, block, offsets)`` of the zero-padded planes the channel-wise kernels
    use: each of ``Cg`` input channels takes ``block`` elements, its plane split
    into stride phases: ``sh * sw`` phase planes of ``Hq x Wq``, phase ``(a, b)`` holding
    padded position ``(rq*sh + a, cq*sw + b)`` at ``((a*sw + b)*Hq + rq)*Wq + cq``.
    Output ``(oh, ow)`` then reads tap ``(kh, kw)`` at ``oh*Wq + ow + offsets[tap]``,
    in phase ``(kh*dh % sh, kw*dw % sw)``: for any stride, each tap reads a row of
    outputs' inputs contiguously. With unit stride it is the padded plane itself.
    ``offsets[c*KH*KW + tap]`` is that offset for input channel ``c``'s plane.
    (``stride``, ``dilation``: ``(d, h, w)``.)"""
    sh, sw = stride[1], stride[2]
    dh, dw = dilation[1], dilation[2]
    Hq = OH + ((KH - 1) * dh) // sh
    Wq = OW + ((KW - 1) * dw) // sw
    block = sh * sw * Hq * Wq + Wq  # one input channel's phase planes, and slack
    offsets = np.empty(Cg * KH * KW, dtype=np.int64)
    for c in range(Cg):
        for kh in range(KH):
            for kw in range(KW):
                phase = ((kh * dh) % sh) * sw + (kw * dw) % sw
                row = phase * Hq + (kh * dh) // sh
                offsets[(c * KH + kh) * KW + kw] = c * block + row * Wq + (kw * dw) // sw
    return Hq, Wq, block, offsets


@njit(fastmath=set(FASTMATH), nogil=True)
def fill_plane(xp, src, Hq, Wq, pitch, stride, pad):
    """Copy the input plane ``src`` ``(H, W)`` into the phase planes of ``xp`` (see
    :func:`plane_layout`; phase plane ``p`` starts at ``p * pitch``, ``Hq * Wq`` there;
    ``pad``: the zero padding before each axis). Only positions
    inside ``src`` are written: the others are the same for every plane, so they stay
    zero from the buffer's allocation."""
    H, W = src.shape
    sh, sw = stride[1], stride[2]
    ph, pw = pad[1], pad[2]
    flat = src.reshape(-1)
    L = VECTOR_BYTES // xp.itemsize
    # Stride-2 columns: phase 0 holds row[2*cq - pw] for lo0 <= cq < hi0, phase 1
    # row[2*cq + 1 - pw] for lo1 <= cq < hi1. Where both are inside the row, one pass
    # writes both, pairs of vectors split into even and odd lanes; the phases' ends go
    # one by one. The row copies (both strides) end in masked moves: the compiler's
    # own vector loops left rows of 28-56 elements half to scalar remainders.
    lo0, hi0 = max(0, (pw + 1) // 2), min(Wq, (W + pw + 1) // 2)
    lo1, hi1 = max(0, pw // 2), min(Wq, (W + pw) // 2)
    both_lo, both_hi = max(lo0, lo1), max(max(lo0, lo1), min(hi0, hi1))
    # A phase's columns outside both_lo..both_hi: at most one at each end (lo0 and lo1
    # differ by at most one, as do hi0 and hi1), or -1. Loops over these ranges cost
    # more than the vectors (mbv2_dw3_s2's planes: 100 against 45 us).
    even_first = lo0 if lo0 < min(hi0, both_lo) else -1
    even_last = max(lo0, both_hi) if max(lo0, both_hi) < hi0 else -1
    odd_first = lo1 if lo1 < min(hi1, both_lo) else -1
    odd_last = max(lo1, both_hi) if max(lo1, both_hi) < hi1 else -1
    # Unit-stride columns: the row lands at pw..pw+W of its phase row (the bounds
    # computed once, not per row: 22 against 45 us on a thread's 72 planes of mbv2_dw3).
    unit_lo, unit_hi = pw, max(pw, min(Wq, pw + W))
    for a in range(sh):
        for rq in range(Hq):
            i_h = rq * sh + a - ph
            if i_h < 0 or i_h >= H:
                continue
            row = i_h * W
            if sw == 1:
                dst = a * pitch + rq * Wq + unit_lo
                first = row + unit_lo - pw
                count = unit_hi - unit_lo
                j = 0
                while j + L <= count:
                    vstore(xp, dst + j, vload(flat, first + j))
                    j += L
                if j < count:
                    vstore_first(xp, dst + j, vload_first(flat, first + j, count - j),
                                 count - j)
                continue
            if sw == 2:
                even = a * 2 * pitch + rq * Wq
                odd = even + pitch
                s0 = row + 2 * both_lo - pw
                count = both_hi - both_lo
                # Pairs of source vectors split into their even and odd lanes; the
                # last pair masked to the row's end.
                j = 0
                while j + L <= count:
                    u, v = vload(flat, s0 + 2 * j), vload(flat, s0 + 2 * j + L)
                    vstore(xp, even + both_lo + j, veven(u, v))
                    vstore(xp, odd + both_lo + j, vodd(u, v))
                    j += L
                if j < count:
                    left = count - j
                    u = vload_first(flat, s0 + 2 * j, min(L, 2 * left))
                    v = vload_first(flat, s0 + 2 * j + L, max(0, 2 * left - L))
                    vstore_first(xp, even + both_lo + j, veven(u, v), left)
                    vstore_first(xp, odd + both_lo + j, vodd(u, v), left)
                if even_first >= 0:
                    xp[even + even_first] = flat[row + 2 * even_first - pw]
                if even_last >= 0:
                    xp[even + even_last] = flat[row + 2 * even_last - pw]
                if odd_first >= 0:
                    xp[odd + odd_first] = flat[row + 2 * odd_first + 1 - pw]
                if odd_last >= 0:
                    xp[odd + odd_last] = flat[row + 2 * odd_last + 1 - pw]
                continue
            run = src[i_h]
            for b in range(sw):
                # Columns cq with 0 <= cq*sw + b - pw < W (ceil divisions).
                lo = max(0, -((b - pw) // sw))
                hi = min(Wq, -((b - pw - W) // sw))
                if hi <= lo:
                    continue
                start = (a * sw + b) * pitch + rq * Wq
                seg = xp[start + lo: start + hi]
                src_run = run[lo * sw + b - pw:]
                # Loops from 0 over slices, not array-to-array slice assignments (those
                # compile seconds slower). An index that may be negative (NumPy's
                # wraparound) copies element by element: 2.4x slower on a stride-1
                # depthwise layer (the unit-stride and stride-2 copies above use
                # unsigned ones).
                for j in range(hi - lo):
                    seg[j] = src_run[j * sw]


@njit(parallel=True, **_JIT)
def channelwise_conv(x, w, bias, out, kernel, stride, dilation, pad, co_chunk,
                     threads, vector_width, across):
    """Convolution with one or a few input channels per group (depthwise, its multiples,
    and grouped layers of a few channels per group).

    ``x``: ``(N, G, Cg, D, H, W)``; ``w``: ``(G, COg, KD, Cg * KH * KW)``, ``kernel`` its
    ``(KD, KH, KW)``; one job per sample, group, output depth and block of
    ``co_chunk`` output channels (more than one block only where that is needed for
    enough jobs: each block copies the planes). Each of the group's input planes is
    copied once into a zero-padded buffer split into stride phases
    (:func:`plane_layout`), the ``Cg`` planes one after another, so that every (input
    channel, tap) pair reads the inputs of a row of outputs contiguously, free of
    borders and strides, and each output channel's pairs are a single list of
    offsets. Jobs are dealt round-robin to ``threads`` threads, each with its own
    buffer. Register blocks of 8 vectors sum every pair and write each output plane in
    place (depth taps after the first add to it):

    - ``vector_width`` 0: plain blocks, ``across`` vectors along a row by
      ``8 // across`` rows (:func:`_plane_blocks`), any stride and dilation;
    - ``vector_width`` two vectors (unit stride and dilation along H only): 4 rows x 2
      vectors sliding down each kernel column (:func:`_rows_taps`); one vector: 8 rows
      x 1 vector (:func:`_rows_taps_narrow`).
    """
    N, G, Cg, D = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    COg = w.shape[1]
    KD, KH, KW = kernel
    OD, OH, OW = out.shape[3], out.shape[4], out.shape[5]
    Hq, Wq, block, offsets = plane_layout(OH, OW, KH, KW, stride, dilation, Cg)
    blocks = (COg + co_chunk - 1) // co_chunk
    jobs = N * G * OD * blocks
    threads = min(threads, jobs)
    L = VECTOR_BYTES // x.itemsize
    # Vectors along a row and rows of the register blocks (the sliding blocks' from
    # their width), whose reads past the output's rows and columns (computed and
    # dropped) the buffer must hold.
    wide = vector_width // L if vector_width else across
    down = 8 // wide
    xp_size = max(Cg * block, offsets.max() + ((OH + down - 1) // down * down - 1) * Wq
                  + (OW + wide * L - 1) // (wide * L) * wide * L)
    plane = OH * OW
    for t in prange(threads):
        # Buffers once per thread: positions outside the input are never written, so
        # they stay zero.
        xp = np.zeros(xp_size, dtype=x.dtype)
        outf = out.reshape(-1)
        for job in range(t, jobs, threads):
            c0 = (job % blocks) * co_chunk
            c1 = min(COg, c0 + co_chunk)
            rest = job // blocks
            od = rest % OD
            rest //= OD
            g = rest % G
            n = rest // G
            # The bias goes in with the first tap pass, or here if no plane is read.
            fresh = True
            for kd in range(KD):
                i_d = od * stride[0] + kd * dilation[0] - pad[0]
                if i_d < 0 or i_d >= D:
                    continue
                for c in range(Cg):
                    fill_plane(xp[c * block: (c + 1) * block], x[n, g, c, i_d], Hq, Wq,
                               Hq * Wq, stride, pad)
                for co in range(c0, c1):
                    o = (((n * G + g) * COg + co) * OD + od) * plane
                    if vector_width == L:
                        _rows_taps_narrow(outf, o, xp, Wq, offsets, w[g, co, kd], KH, KW,
                                          OH, OW, bias[g, co], fresh)
                    elif vector_width:
                        _rows_taps(outf, o, xp, Wq, offsets, w[g, co, kd], KH, KW, OH,
                                   OW, bias[g, co], fresh)
                    else:
                        _plane_blocks(outf, o, xp, Wq, offsets, w[g, co, kd], OH, OW,
                                      across, bias[g, co], fresh)
                fresh = False
            if fresh:  # no depth inside the input: the bias alone
                for co in range(c0, c1):
                    o = (((n * G + g) * COg + co) * OD + od) * plane
                    outf[o: o + plane] = bias[g, co]
