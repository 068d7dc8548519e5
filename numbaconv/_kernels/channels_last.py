"""Kernels that read and write channels-last arrays in place: ``x`` ``(N, D, H, W, C)``,
``out`` ``(N, OD, OH, OW, C_out)``, C-contiguous, one dtype (1D and 2D calls reach them
with leading spatial axes of size 1, as the channels-first kernels do).

In this layout a position's channels are contiguous, which gives two forms:

- **GEMM** (``gemm_rows``, dense layers, ``groups == 1``): a block of output positions
  is a row-major ``(positions, C_out)`` block of ``out``, and equals
  ``columns (positions, C_in*K) @ weight (C_out, C_in*K)^T``. The columns are rows of
  the input gathered per tap (a pointwise stride-1 layer with no padding needs none: its
  columns are the input's own rows). The weight is used as given, ``(C_out, C_in, *k)``:
  the columns' entries go in its order, ``c*K + tap``; or, where the columns are large
  next to the weight, the weight is permuted to ``(C_out, K, C_in)`` per call and the
  columns go ``tap*C_in + c``, each tap's channels one contiguous copy.
- **Depthwise** (``depthwise_rows``): each output position is a sum over taps of input
  vectors scaled channel by channel; the loop over channels is contiguous in the input,
  the weight ``(K, C)`` and the output, so LLVM vectorises it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._simd import (VECTOR_BYTES, vadd, vfma, vload, vrotate_groups, vstore,
                     vswap_blocks)
from ..config import CACHE, FASTMATH
from .blas import gemm

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)
# Multiples in unsigned index arithmetic.
_U2, _U3, _U4, _U5 = np.uint64(2), np.uint64(3), np.uint64(4), np.uint64(5)
_U6, _U7, _U8 = np.uint64(6), np.uint64(7), np.uint64(8)


@njit(**_JIT)
def _gather_columns(xn, cols, p0, p1, kernel, stride, dilation, pad, out_spatial,
                    tap_major):
    """``cols[p - p0, c*K + tap] = x[position p's input for tap, c]``, zero outside; with
    ``tap_major``, at ``tap*C + c`` instead: each tap's channels one contiguous copy."""
    D, H, W, C = xn.shape
    KD, KH, KW = kernel
    K = KD * KH * KW
    OH, OW = out_spatial[1], out_spatial[2]
    for p in range(p0, p1):
        od, rest = p // (OH * OW), p % (OH * OW)
        oh, ow = rest // OW, rest % OW
        row = cols[p - p0]
        tap = 0
        for kd in range(KD):
            i_d = od * stride[0] + kd * dilation[0] - pad[0]
            for kh in range(KH):
                i_h = oh * stride[1] + kh * dilation[1] - pad[1]
                for kw in range(KW):
                    i_w = ow * stride[2] + kw * dilation[2] - pad[2]
                    inside = 0 <= i_d < D and 0 <= i_h < H and 0 <= i_w < W
                    if tap_major:
                        dst = row[tap * C: (tap + 1) * C]
                        if inside:
                            src = xn[i_d, i_h, i_w]
                            for c in range(C):
                                dst[c] = src[c]
                        else:
                            for c in range(C):
                                dst[c] = 0.0
                    elif inside:
                        src = xn[i_d, i_h, i_w]
                        for c in range(C):
                            row[c * K + tap] = src[c]
                    else:
                        for c in range(C):
                            row[c * K + tap] = 0.0
                    tap += 1


@njit(**_JIT)
def _fill_bias(target, bias, rows, CO, o0, o1):
    """``target[p*CO + o] = bias[o]`` for ``p < rows`` and ``o0 <= o < o1``: row slices
    indexed from 0, a loop LLVM vectorises (indexed as ``target[p * CO + o]`` it ran
    scalar, 0.7 ms of r50_1x1_56's 1.1 ms in channels_last)."""
    lead = bias[o0:o1]
    for p in range(rows):
        row = target[p * CO + o0: p * CO + o1]
        for j in range(o1 - o0):
            row[j] = lead[j]


@njit(parallel=True, **_JIT)
def gemm_rows(x5, w2, bias, out5, kernel, stride, dilation, pad, tasks, cols_bufs,
              gather, tap_major):
    """Write ``out5`` by one GEMM per task of output positions and channels.

    ``w2`` ``(C_out, C_in*K)`` is the weight (``(C_out, K*C_in)`` with ``tap_major``,
    the columns' order then), ``bias`` ``(C_out,)``; ``tasks`` rows
    ``(n, p0, p1, o0, o1)`` (positions over ``OD*OH*OW``, output channels) are dealt
    round-robin to the threads, each with a row of ``cols_bufs`` for its columns. With
    ``gather`` False (a pointwise stride-1 layer without padding) the GEMM reads the
    input's rows themselves. The GEMMs are SciPy's BLAS, kept single-threaded by the
    caller.
    """
    N, OD, OH, OW, CO = out5.shape
    CK = w2.shape[1]
    threads = min(cols_bufs.shape[0], tasks.shape[0])
    x_rows = x5.reshape(N, x5.size // N)
    out_rows = out5.reshape(N, out5.size // N)
    for t in prange(threads):
        buf = cols_bufs[t]
        for i in range(t, tasks.shape[0], threads):
            n, p0, p1 = tasks[i, 0], tasks[i, 1], tasks[i, 2]
            o0, o1 = tasks[i, 3], tasks[i, 4]
            pc = p1 - p0
            target = out_rows[n, p0 * CO: p1 * CO]
            _fill_bias(target, bias, pc, CO, o0, o1)
            if gather:
                cols = buf[: pc * CK].reshape(pc, CK)
                _gather_columns(x5[n], cols, p0, p1, kernel, stride, dilation, pad,
                                (OD, OH, OW), tap_major)
                source = buf
            else:
                source = x_rows[n, p0 * CK:]
            # Row-major out[pc, o0:o1] += cols[pc, CK] @ w2[o0:o1, CK]^T, as
            # column-major out^T ((o1-o0) x pc, ld CO) = w2 block ('T' of its CK x
            # (o1-o0) view, ld CK) @ cols^T (CK x pc, ld CK).
            gemm(84, 78, o1 - o0, pc, CK, 1.0, w2[o0:], CK, source, CK, 1.0,
                 target[o0:], CO)


@njit(**_JIT)
def _add_taps(of, o, xf, a, step, wf, wo, C, m):
    """``of[o + c] += sum_{t<m} wf[wo + t*C + c] * xf[a + t*step + c]`` over the ``C``
    channels, for ``m`` = 1..5 taps: one output position."""
    if m == 5:
        for c in range(C):
            of[o + c] += (wf[wo + c] * xf[a + c] + wf[wo + C + c] * xf[a + step + c]
                          + wf[wo + _U2 * C + c] * xf[a + _U2 * step + c]
                          + wf[wo + _U3 * C + c] * xf[a + _U3 * step + c]
                          + wf[wo + _U4 * C + c] * xf[a + _U4 * step + c])
    elif m == 4:
        for c in range(C):
            of[o + c] += (wf[wo + c] * xf[a + c] + wf[wo + C + c] * xf[a + step + c]
                          + wf[wo + _U2 * C + c] * xf[a + _U2 * step + c]
                          + wf[wo + _U3 * C + c] * xf[a + _U3 * step + c])
    elif m == 3:
        for c in range(C):
            of[o + c] += (wf[wo + c] * xf[a + c] + wf[wo + C + c] * xf[a + step + c]
                          + wf[wo + _U2 * C + c] * xf[a + _U2 * step + c])
    elif m == 2:
        for c in range(C):
            of[o + c] += wf[wo + c] * xf[a + c] + wf[wo + C + c] * xf[a + step + c]
    else:
        for c in range(C):
            of[o + c] += wf[wo + c] * xf[a + c]


@njit(**_JIT)
def _add_taps_twice(of, o, xf, a, b, step, wf, wo, C, m):
    """:func:`_add_taps` for two neighbouring output positions (``o`` and ``o + C``,
    reading from ``a`` and ``b``) at once, each weight loaded once for both."""
    if m == 5:
        for c in range(C):
            w0, w1 = wf[wo + c], wf[wo + C + c]
            w2, w3, w4 = wf[wo + _U2 * C + c], wf[wo + _U3 * C + c], wf[wo + _U4 * C + c]
            of[o + c] += (w0 * xf[a + c] + w1 * xf[a + step + c]
                          + w2 * xf[a + _U2 * step + c] + w3 * xf[a + _U3 * step + c]
                          + w4 * xf[a + _U4 * step + c])
            of[o + C + c] += (w0 * xf[b + c] + w1 * xf[b + step + c]
                              + w2 * xf[b + _U2 * step + c] + w3 * xf[b + _U3 * step + c]
                              + w4 * xf[b + _U4 * step + c])
    elif m == 4:
        for c in range(C):
            w0, w1 = wf[wo + c], wf[wo + C + c]
            w2, w3 = wf[wo + _U2 * C + c], wf[wo + _U3 * C + c]
            of[o + c] += (w0 * xf[a + c] + w1 * xf[a + step + c]
                          + w2 * xf[a + _U2 * step + c] + w3 * xf[a + _U3 * step + c])
            of[o + C + c] += (w0 * xf[b + c] + w1 * xf[b + step + c]
                              + w2 * xf[b + _U2 * step + c] + w3 * xf[b + _U3 * step + c])
    elif m == 3:
        for c in range(C):
            w0, w1, w2 = wf[wo + c], wf[wo + C + c], wf[wo + _U2 * C + c]
            of[o + c] += (w0 * xf[a + c] + w1 * xf[a + step + c]
                          + w2 * xf[a + _U2 * step + c])
            of[o + C + c] += (w0 * xf[b + c] + w1 * xf[b + step + c]
                              + w2 * xf[b + _U2 * step + c])
    elif m == 2:
        for c in range(C):
            w0, w1 = wf[wo + c], wf[wo + C + c]
            of[o + c] += w0 * xf[a + c] + w1 * xf[a + step + c]
            of[o + C + c] += w0 * xf[b + c] + w1 * xf[b + step + c]
    else:
        for c in range(C):
            w0 = wf[wo + c]
            of[o + c] += w0 * xf[a + c]
            of[o + C + c] += w0 * xf[b + c]


# Inlined (its only call site is depthwise_rows'): called, its four array arguments
# cost reference counts on every pair of positions, 10-20% of the 3x3 layers' kernel
# time (mbv2_dw3, mbv2_dw3_s2, in one process against the called form).
@njit(inline="always", **_JIT)
def _add_3x3_twice(of, o, xf, a, b, row_step, step, wf, wo, C, bias, first):
    """A whole 3x3 kernel added to two neighbouring output positions (``o`` and
    ``o + C``, their top-left inputs at ``a`` and ``b``, the kernel's rows ``row_step``
    apart) in one pass over the channels: the accumulators are loaded and stored once
    for all 9 taps, and with ``first`` not loaded at all but written as ``bias`` plus
    the taps (a pass of its own writing the bias cost 13% of mbv2_dw3's kernel)."""
    r1, r2 = row_step, _U2 * row_step
    s2 = _U2 * step
    for c in range(C):
        w0, w1, w2 = wf[wo + c], wf[wo + C + c], wf[wo + _U2 * C + c]
        w3, w4, w5 = wf[wo + _U3 * C + c], wf[wo + _U4 * C + c], wf[wo + _U5 * C + c]
        w6, w7, w8 = wf[wo + _U6 * C + c], wf[wo + _U7 * C + c], wf[wo + _U8 * C + c]
        taps_a = (w0 * xf[a + c] + w1 * xf[a + step + c] + w2 * xf[a + s2 + c]
                  + w3 * xf[a + r1 + c] + w4 * xf[a + r1 + step + c]
                  + w5 * xf[a + r1 + s2 + c]
                  + w6 * xf[a + r2 + c] + w7 * xf[a + r2 + step + c]
                  + w8 * xf[a + r2 + s2 + c])
        taps_b = (w0 * xf[b + c] + w1 * xf[b + step + c] + w2 * xf[b + s2 + c]
                  + w3 * xf[b + r1 + c] + w4 * xf[b + r1 + step + c]
                  + w5 * xf[b + r1 + s2 + c]
                  + w6 * xf[b + r2 + c] + w7 * xf[b + r2 + step + c]
                  + w8 * xf[b + r2 + s2 + c])
        if first:
            of[o + c] = bias[c] + taps_a
            of[o + C + c] = bias[c] + taps_b
        else:
            of[o + c] += taps_a
            of[o + C + c] += taps_b


@njit(**_JIT)
def _position_blocks(of, o, xf, a, wf, bias, C, count, kd_lo, kd_hi, KH, KW, depth_step,
                     row_step, step, block_step):
    """Write ``count`` blocks of four neighbouring output positions whole (the first at
    ``o``, the blocks ``4*C`` apart): the bias plus every tap of kernel depths
    ``kd_lo..kd_hi``, all inside the input, where the positions lie ``step`` apart in
    the input as the taps of a kernel row do (stride equal to dilation along W).
    ``a``: the first position's first input at kernel depth ``kd_lo``, rows
    ``row_step``, depths ``depth_step`` and blocks ``block_step`` apart. Indices are
    signed here (and never negative).

    Register blocks of 4 positions x 2 vectors of channels (``numbaconv._simd``) keep
    their 8 sums over every tap; along a kernel row the positions' inputs slide, so each
    tap loads one new input position and its weights (4 loads) for 8 FMAs. The blocks of
    channels are the outer loop, so a run of positions reads its inputs' channels from
    L1. The last block of channels overlaps the one before it where 2 vectors do not
    divide ``C`` (needs ``C`` at least 2 vectors): it rewrites those channels with the
    same values."""
    L = VECTOR_BYTES // xf.itemsize
    for c0 in range(0, C, 2 * L):
        c = min(c0, C - 2 * L)
        for blk in range(count):
            a0, b0 = vload(bias, c), vload(bias, c + L)
            a1, b1, a2, b2, a3, b3 = a0, b0, a0, b0, a0, b0
            # Indices advance by additions: multiplied in the loops, with the block's
            # many live values, they spilled to the stack.
            d = a + blk * block_step + c
            wi = kd_lo * KH * KW * C + c
            for kd in range(kd_lo, kd_hi):
                r = d
                for kh in range(KH):
                    x0, y0 = vload(xf, r), vload(xf, r + L)
                    x1, y1 = vload(xf, r + step), vload(xf, r + step + L)
                    x2, y2 = vload(xf, r + 2 * step), vload(xf, r + 2 * step + L)
                    j = r + 3 * step
                    for kw in range(KW):
                        x3, y3 = vload(xf, j), vload(xf, j + L)
                        u, v = vload(wf, wi), vload(wf, wi + L)
                        a0, b0 = vfma(a0, x0, u), vfma(b0, y0, v)
                        a1, b1 = vfma(a1, x1, u), vfma(b1, y1, v)
                        a2, b2 = vfma(a2, x2, u), vfma(b2, y2, v)
                        a3, b3 = vfma(a3, x3, u), vfma(b3, y3, v)
                        x0, x1, x2, y0, y1, y2 = x1, x2, x3, y1, y2, y3
                        j += step
                        wi += C
                    r += row_step
                d += depth_step
            q = o + blk * 4 * C + c
            vstore(of, q, a0)
            vstore(of, q + L, b0)
            vstore(of, q + C, a1)
            vstore(of, q + C + L, b1)
            vstore(of, q + 2 * C, a2)
            vstore(of, q + 2 * C + L, b2)
            vstore(of, q + 3 * C, a3)
            vstore(of, q + 3 * C + L, b3)


@njit(**_JIT)
def _stride2_position_blocks(of, o, xf, a, wf, bias, C, count, kd_lo, kd_hi, KH, KW,
                             depth_step, row_step, step):
    """:func:`_position_blocks` for positions two taps apart along W (stride twice the
    dilation, ``step`` apart the taps): the inputs of the even taps slide by a position
    every two taps, as do those of the odd taps, so each tap loads one new input
    (2 vectors) and its weights for 8 FMAs, where :func:`_strided_position_blocks`
    loads every position's."""
    L = VECTOR_BYTES // xf.itemsize
    for c0 in range(0, C, 2 * L):
        c = min(c0, C - 2 * L)
        for blk in range(count):
            a0, b0 = vload(bias, c), vload(bias, c + L)
            a1, b1, a2, b2, a3, b3 = a0, b0, a0, b0, a0, b0
            d = a + blk * 8 * step + c
            wi = kd_lo * KH * KW * C + c
            for kd in range(kd_lo, kd_hi):
                r = d
                for kh in range(KH):
                    # Even taps' inputs (e, f: the two vectors), odd taps' (g, h).
                    e0, f0 = vload(xf, r), vload(xf, r + L)
                    e1, f1 = vload(xf, r + 2 * step), vload(xf, r + 2 * step + L)
                    e2, f2 = vload(xf, r + 4 * step), vload(xf, r + 4 * step + L)
                    e3, f3 = vload(xf, r + 6 * step), vload(xf, r + 6 * step + L)
                    g0, h0 = vload(xf, r + step), vload(xf, r + step + L)
                    g1, h1 = vload(xf, r + 3 * step), vload(xf, r + 3 * step + L)
                    g2, h2 = vload(xf, r + 5 * step), vload(xf, r + 5 * step + L)
                    j = r + 7 * step  # the odd taps' last input
                    for kw in range(0, KW, 2):
                        u, v = vload(wf, wi), vload(wf, wi + L)
                        a0, b0 = vfma(a0, e0, u), vfma(b0, f0, v)
                        a1, b1 = vfma(a1, e1, u), vfma(b1, f1, v)
                        a2, b2 = vfma(a2, e2, u), vfma(b2, f2, v)
                        a3, b3 = vfma(a3, e3, u), vfma(b3, f3, v)
                        wi += C
                        if kw + 1 == KW:
                            break
                        g3, h3 = vload(xf, j), vload(xf, j + L)
                        u, v = vload(wf, wi), vload(wf, wi + L)
                        a0, b0 = vfma(a0, g0, u), vfma(b0, h0, v)
                        a1, b1 = vfma(a1, g1, u), vfma(b1, h1, v)
                        a2, b2 = vfma(a2, g2, u), vfma(b2, h2, v)
                        a3, b3 = vfma(a3, g3, u), vfma(b3, h3, v)
                        wi += C
                        if kw + 2 < KW:
                            e0, e1, e2, f0, f1, f2 = e1, e2, e3, f1, f2, f3
                            e3, f3 = vload(xf, j + step), vload(xf, j + step + L)
                            g0, g1, g2, h0, h1, h2 = g1, g2, g3, h1, h2, h3
                        j += 2 * step
                    r += row_step
                d += depth_step
            q = o + blk * 4 * C + c
            vstore(of, q, a0)
            vstore(of, q + L, b0)
            vstore(of, q + C, a1)
            vstore(of, q + C + L, b1)
            vstore(of, q + 2 * C, a2)
            vstore(of, q + 2 * C + L, b2)
            vstore(of, q + 3 * C, a3)
            vstore(of, q + 3 * C + L, b3)


@njit(**_JIT)
def _strided_position_blocks(of, o, xf, a, wf, bias, C, count, kd_lo, kd_hi, KH, KW,
                             depth_step, row_step, step, position_step):
    """:func:`_position_blocks` where the positions' inputs do not slide along the
    kernel rows (stride other than dilation along W, ``position_step`` apart): each
    tap loads every position's input, 8 inputs and 2 weights for 8 FMAs."""
    L = VECTOR_BYTES // xf.itemsize
    for c0 in range(0, C, 2 * L):
        c = min(c0, C - 2 * L)
        for blk in range(count):
            a0, b0 = vload(bias, c), vload(bias, c + L)
            a1, b1, a2, b2, a3, b3 = a0, b0, a0, b0, a0, b0
            d = a + blk * 4 * position_step + c
            wi = kd_lo * KH * KW * C + c
            for kd in range(kd_lo, kd_hi):
                r = d
                for kh in range(KH):
                    j = r
                    for kw in range(KW):
                        u, v = vload(wf, wi), vload(wf, wi + L)
                        a0 = vfma(a0, vload(xf, j), u)
                        b0 = vfma(b0, vload(xf, j + L), v)
                        a1 = vfma(a1, vload(xf, j + position_step), u)
                        b1 = vfma(b1, vload(xf, j + position_step + L), v)
                        a2 = vfma(a2, vload(xf, j + 2 * position_step), u)
                        b2 = vfma(b2, vload(xf, j + 2 * position_step + L), v)
                        a3 = vfma(a3, vload(xf, j + 3 * position_step), u)
                        b3 = vfma(b3, vload(xf, j + 3 * position_step + L), v)
                        j += step
                        wi += C
                    r += row_step
                d += depth_step
            q = o + blk * 4 * C + c
            vstore(of, q, a0)
            vstore(of, q + L, b0)
            vstore(of, q + C, a1)
            vstore(of, q + C + L, b1)
            vstore(of, q + 2 * C, a2)
            vstore(of, q + 2 * C + L, b2)
            vstore(of, q + 3 * C, a3)
            vstore(of, q + 3 * C + L, b3)


@njit(**_JIT)
def _depth_taps(od, KD, sd, dd, pd, D):
    """The kernel depths ``lo <= kd < hi`` of output depth ``od`` that read inside the
    input."""
    first = od * sd - pd
    lo = 0 if first >= 0 else (-first + dd - 1) // dd
    hi = KD if first + (KD - 1) * dd < D else (D - 1 - first) // dd + 1
    return lo, max(lo, hi)


@njit(**_JIT)
def _tap_range(base, KW, dw, W):
    """The taps ``lo <= kw < hi`` of a kernel row whose input column ``base + kw*dw``
    lies inside ``[0, W)``."""
    lo = 0 if base >= 0 else (-base + dw - 1) // dw
    hi = KW if base + (KW - 1) * dw < W else (W - 1 - base) // dw + 1
    return lo, max(lo, hi)


@njit(parallel=True, **_JIT)
def depthwise_rows(x5, wt, bias, out5, kernel, stride, dilation, pad, ow_chunk):
    """Write ``out5``, the depthwise convolution of ``x5`` with ``wt`` ``(K, C)`` (tap
    by channel), ``bias`` ``(C,)``. Jobs are output rows, cut into pieces of ``ow_chunk``
    positions (1D signals have a single long row).

    Where a row's positions have their whole kernel inside the input, runs of four of
    them go by register blocks: :func:`_position_blocks` where their inputs slide along
    the kernel rows (stride equal to dilation along W; mbv2_dw3 147-179 -> 129-133 us,
    mbv3_dw5 154-159 -> 106-131, this kernel alone, three alternating processes each,
    2-core AMD EPYC); :func:`_stride2_position_blocks` where the stride is twice the
    dilation (the even and the odd taps' inputs each slide); else
    :func:`_strided_position_blocks` (mbv3_dw5_s2's whole call 0.76x the passes', 8
    alternating processes). Elsewhere,
    each pass over the channels adds up to 5 taps of a kernel row to two neighbouring
    output positions, which read the same taps (everywhere but at the borders, where
    positions go one at a time): a weight load feeds two FMAs, and the accumulators are
    loaded and stored once per 5 taps rather than per tap. A 3x3 kernel lying wholly
    inside the input takes one pass per kernel depth for all 9 taps, the first writing
    the bias too. (This kernel alone, three alternating processes each: with passes of
    at most 4 taps and a pass for the bias, mbv2_dw3 164-173 us, mbv3_dw5 84-93,
    mbv2_dw3_s2 42-49; as now 150-159, 79-86, 37-42.) The arrays are indexed flat,
    with unsigned indices: a signed index may be negative (NumPy's wraparound), which
    kept LLVM from vectorising the loops over the channels. mbv2_dw3 0.19 -> 0.14 ms,
    mbv2_dw3_s2 0.064 -> 0.040 (this kernel alone; four positions at a time were no
    faster than two; one loop over a whole stride-1 row with the weights repeated
    along it took 0.50 against 0.33 ms before that).
    """
    N, D, H, W, C = x5.shape
    _, OD, OH, OW, _ = out5.shape
    KD, KH, KW = kernel
    sd, sh, sw = stride
    dd, dh, dw = dilation
    pd, ph, pw = pad
    xf = x5.reshape(-1)
    of = out5.reshape(-1)
    wf = wt.reshape(-1)
    uc = np.uint64(C)
    step = np.uint64(dw * C)
    pieces = (OW + ow_chunk - 1) // ow_chunk
    # Register blocks of four positions where the channels fill two vectors; but a
    # 3x3 kernel whose inputs neither slide nor slide every other tap takes its whole
    # passes (on mbv2_dw3_s2 the generic strided blocks took 1.08-1.12x the passes'
    # time, the stride-2 blocks 0.92-0.97x; 8-10 alternating processes).
    blocks = (C >= 2 * (VECTOR_BYTES // x5.itemsize)
              and (sw == dw or sw == 2 * dw or not (KH == 3 and KW == 3)))
    for job in prange(N * OD * OH * pieces):
        row, piece = job // pieces, job % pieces
        n, rest = row // (OD * OH), row % (OD * OH)
        od, oh = rest // OH, rest % OH
        ow = piece * ow_chunk
        end = min(OW, (piece + 1) * ow_chunk)
        # The run of this piece's positions whose whole kernel lies inside the input:
        # blocks of four of them go by _position_blocks.
        run_start, run_blocks = ow, 0
        top = oh * sh - ph
        kd_lo, kd_hi = _depth_taps(od, KD, sd, dd, pd, D)  # the depths inside the input
        if blocks and top >= 0 and top + (KH - 1) * dh < H:
            run_start = max(ow, (pw + sw - 1) // sw)
            run_end = min(end, (W - 1 - (KW - 1) * dw + pw) // sw + 1)
            run_blocks = max(0, run_end - run_start) // 4
        while ow < end:
            o = np.uint64((row * OW + ow) * C)
            base = ow * sw - pw
            if ow == run_start and run_blocks > 0:
                a = np.int64((((n * D + od * sd + kd_lo * dd - pd) * H + top) * W + base)
                             * C)
                if sw == dw:
                    _position_blocks(of, np.int64(o), xf, a, wf, bias, C, run_blocks,
                                     kd_lo, kd_hi, KH, KW, dd * H * W * C, dh * W * C,
                                     dw * C, 4 * sw * C)
                elif sw == 2 * dw:
                    _stride2_position_blocks(of, np.int64(o), xf, a, wf, bias, C,
                                             run_blocks, kd_lo, kd_hi, KH, KW,
                                             dd * H * W * C, dh * W * C, dw * C)
                else:
                    _strided_position_blocks(of, np.int64(o), xf, a, wf, bias, C,
                                             run_blocks, kd_lo, kd_hi, KH, KW,
                                             dd * H * W * C, dh * W * C, dw * C, sw * C)
                ow += 4 * run_blocks
                continue
            lo, hi = _tap_range(base, KW, dw, W)
            pair = (ow + 1 < end and ow + 1 != run_start
                    and _tap_range(base + sw, KW, dw, W) == (lo, hi))
            # Two positions whose 3x3 kernel lies wholly inside the input's rows and
            # columns: one pass per kernel depth inside the input, the first of them
            # writing the bias too (where there is none, the bias is written here).
            whole = (pair and KH == 3 and KW == 3 and lo == 0 and hi == 3
                     and oh * sh - ph >= 0 and oh * sh - ph + 2 * dh < H)
            first = whole and kd_lo < kd_hi
            if not first:
                for c in range(uc):
                    of[o + c] = bias[c]
                if pair:
                    for c in range(uc):
                        of[o + uc + c] = bias[c]
            for kd in range(KD):
                i_d = od * sd + kd * dd - pd
                if i_d < 0 or i_d >= D:
                    continue
                if whole:
                    a = np.uint64((((n * D + i_d) * H + oh * sh - ph) * W + base) * C)
                    rows_apart = np.uint64(dh * W * C)
                    wo = np.uint64(kd * 9 * C)
                    _add_3x3_twice(of, o, xf, a, a + np.uint64(sw * C), rows_apart,
                                   step, wf, wo, uc, bias, first)
                    first = False
                    continue
                for kh in range(KH):
                    i_h = oh * sh + kh * dh - ph
                    if i_h < 0 or i_h >= H:
                        continue
                    x_row = ((n * D + i_d) * H + i_h) * W + base
                    taps = (kd * KH + kh) * KW
                    t = lo
                    while t < hi:
                        m = min(5, hi - t)
                        a = np.uint64((x_row + t * dw) * C)
                        wo = np.uint64((taps + t) * C)
                        if pair:
                            _add_taps_twice(of, o, xf, a, a + np.uint64(sw * C), step, wf,
                                            wo, uc, m)
                        else:
                            _add_taps(of, o, xf, a, step, wf, wo, uc, m)
                        t += m
            ow += 2 if pair else 1


# Grouped layers whose groups lie in a vector's lanes (``group`` input and output
# channels each, ``group`` dividing the lanes): a vector of input channels times a
# vector of weights adds, lane by lane, each input channel's products with one output
# channel of its own group. With ``group`` weight vectors per tap, output channel
# ``g*group + i`` taking from input lane ``g*group + (i + r) % group`` in the ``r``-th
# (``wr[t, r, c]``, packed by ``_channels_last.rotated_weight``), the products land in
# ``group`` sums, one per rotation r, and the sum that output lane ``l`` takes from sum
# r sits ``r`` lanes further along its group. So the taps need no shuffle at all: each
# block of positions rotates its sums into place once, at the end (Horner's scheme on
# :func:`vrotate_groups`).
@njit(inline="always", **_JIT)
def _rotation_block4(of, o, xf, a, wf, wbase, bias, zero, c, C, kd_lo, kd_hi, kh_lo,
                      kh_hi, KH, KW, depth_step, row_step, step, position_step):
    """Write a block of 4 neighbouring output positions (``position_step`` apart in
    the input, the first at ``o``, its inputs at ``a`` for kernel depth ``kd_lo`` and
    row ``kh_lo``) of the vector of channels from ``c``, whose packed weights start at
    ``wbase``, groups of 4: 16 sums, 4 rotations x 4 positions; a tap loads 4 inputs
    and 4 weights for 16 FMAs. Every tap in the ranges lies inside the input for all
    four positions."""
    L = VECTOR_BYTES // xf.itemsize
    tap_weights = 4 * L
    s00 = s10 = s20 = s30 = vload(bias, c)
    s01 = s02 = s03 = s11 = s12 = s13 = vload(zero, 0)
    s21 = s22 = s23 = s31 = s32 = s33 = s01
    d = a
    wd = (kd_lo * KH + kh_lo) * KW * tap_weights + wbase
    for kd in range(kd_lo, kd_hi):
        r = d
        wk = wd
        for kh in range(kh_lo, kh_hi):
            j = r
            wi = wk
            for kw in range(KW):
                x0, x1 = vload(xf, j), vload(xf, j + position_step)
                x2 = vload(xf, j + 2 * position_step)
                x3 = vload(xf, j + 3 * position_step)
                w0, w1 = vload(wf, wi), vload(wf, wi + L)
                w2, w3 = vload(wf, wi + 2 * L), vload(wf, wi + 3 * L)
                s00, s01, s02, s03 = (vfma(s00, x0, w0), vfma(s01, x0, w1),
                                      vfma(s02, x0, w2), vfma(s03, x0, w3))
                s10, s11, s12, s13 = (vfma(s10, x1, w0), vfma(s11, x1, w1),
                                      vfma(s12, x1, w2), vfma(s13, x1, w3))
                s20, s21, s22, s23 = (vfma(s20, x2, w0), vfma(s21, x2, w1),
                                      vfma(s22, x2, w2), vfma(s23, x2, w3))
                s30, s31, s32, s33 = (vfma(s30, x3, w0), vfma(s31, x3, w1),
                                      vfma(s32, x3, w2), vfma(s33, x3, w3))
                j += step
                wi += tap_weights
            r += row_step
            wk += KW * tap_weights
        d += depth_step
        wd += KH * KW * tap_weights
    vstore(of, o, _unrotate4(s00, s01, s02, s03))
    vstore(of, o + C, _unrotate4(s10, s11, s12, s13))
    vstore(of, o + 2 * C, _unrotate4(s20, s21, s22, s23))
    vstore(of, o + 3 * C, _unrotate4(s30, s31, s32, s33))


@njit(**_JIT)
def _unrotate4(s0, s1, s2, s3):
    """``s0 + rot(s1 + rot(s2 + rot(s3)))``, ``rot`` rotating groups of 4 lanes."""
    t = vadd(s2, vrotate_groups(s3, 4))
    t = vadd(s1, vrotate_groups(t, 4))
    return vadd(s0, vrotate_groups(t, 4))


@njit(inline="always", **_JIT)
def _rotation_block8(of, o, xf, a, wf, wbase, bias, zero, c, C, kd_lo, kd_hi, kh_lo,
                      kh_hi, KH, KW, depth_step, row_step, step, position_step):
    """:func:`_rotation_block4` for groups of 8: a block of 2 positions x 8 rotations;
    a tap loads 2 inputs and 8 weights for 16 FMAs."""
    L = VECTOR_BYTES // xf.itemsize
    tap_weights = 8 * L
    s00 = s10 = vload(bias, c)
    s01 = s02 = s03 = s04 = s05 = s06 = s07 = vload(zero, 0)
    s11 = s12 = s13 = s14 = s15 = s16 = s17 = s01
    d = a
    wd = (kd_lo * KH + kh_lo) * KW * tap_weights + wbase
    for kd in range(kd_lo, kd_hi):
        r = d
        wk = wd
        for kh in range(kh_lo, kh_hi):
            j = r
            wi = wk
            for kw in range(KW):
                x0, x1 = vload(xf, j), vload(xf, j + position_step)
                w0, w1 = vload(wf, wi), vload(wf, wi + L)
                w2, w3 = vload(wf, wi + 2 * L), vload(wf, wi + 3 * L)
                w4, w5 = vload(wf, wi + 4 * L), vload(wf, wi + 5 * L)
                w6, w7 = vload(wf, wi + 6 * L), vload(wf, wi + 7 * L)
                s00, s01, s02, s03 = (vfma(s00, x0, w0), vfma(s01, x0, w1),
                                      vfma(s02, x0, w2), vfma(s03, x0, w3))
                s04, s05, s06, s07 = (vfma(s04, x0, w4), vfma(s05, x0, w5),
                                      vfma(s06, x0, w6), vfma(s07, x0, w7))
                s10, s11, s12, s13 = (vfma(s10, x1, w0), vfma(s11, x1, w1),
                                      vfma(s12, x1, w2), vfma(s13, x1, w3))
                s14, s15, s16, s17 = (vfma(s14, x1, w4), vfma(s15, x1, w5),
                                      vfma(s16, x1, w6), vfma(s17, x1, w7))
                j += step
                wi += tap_weights
            r += row_step
            wk += KW * tap_weights
        d += depth_step
        wd += KH * KW * tap_weights
    vstore(of, o, _unrotate8(s00, s01, s02, s03, s04, s05, s06, s07))
    vstore(of, o + C, _unrotate8(s10, s11, s12, s13, s14, s15, s16, s17))


@njit(**_JIT)
def _unrotate8(s0, s1, s2, s3, s4, s5, s6, s7):
    """``s0 + rot(s1 + rot(... + rot(s7)))``, ``rot`` rotating groups of 8 lanes."""
    t = vadd(s6, vrotate_groups(s7, 8))
    t = vadd(s5, vrotate_groups(t, 8))
    t = vadd(s4, vrotate_groups(t, 8))
    t = vadd(s3, vrotate_groups(t, 8))
    t = vadd(s2, vrotate_groups(t, 8))
    t = vadd(s1, vrotate_groups(t, 8))
    return vadd(s0, vrotate_groups(t, 8))


@njit(inline="always", **_JIT)
def _rotation_position(of, o, xf, a, wf, wbase, bias, zero, c, C, group, kd_lo, kd_hi,
                       kh_lo, kh_hi, kw_lo, kw_hi, KH, KW, depth_step, row_step, step):
    """Write one output position (at ``o``) of the vector of channels from ``c``
    (packed weights from ``wbase``), over the taps in the ranges (its inputs at ``a``
    for ``kd_lo``, ``kh_lo`` and ``kw_lo``): the positions at the input's edges, where
    a block's taps would read outside it. One rotation's sum at a time, each folded
    into the result as it is done (the sums are independent: out-of-order execution
    overlaps them, where a tap's rotations in a chain took 4 times a block position's
    time at groups of 8)."""
    L = VECTOR_BYTES // xf.itemsize
    tap_weights = group * L
    total = vload(zero, 0)
    for rotation in range(group - 1, -1, -1):
        acc = vload(bias, c) if rotation == 0 else vload(zero, 0)
        d = a
        wd = ((kd_lo * KH + kh_lo) * KW + kw_lo) * tap_weights + rotation * L + wbase
        for kd in range(kd_lo, kd_hi):
            r = d
            wk = wd
            for kh in range(kh_lo, kh_hi):
                j = r
                wi = wk
                for kw in range(kw_lo, kw_hi):
                    acc = vfma(acc, vload(xf, j), vload(wf, wi))
                    j += step
                    wi += tap_weights
                r += row_step
                wk += KW * tap_weights
            d += depth_step
            wd += KH * KW * tap_weights
        if group == 4:
            total = vadd(acc, vrotate_groups(total, 4))
        else:
            total = vadd(acc, vrotate_groups(total, 8))
    vstore(of, o, total)


@njit(parallel=True, **_JIT)
def grouped_rows(x5, wr, bias, out5, kernel, stride, dilation, pad, group, ow_chunk,
                 chunk):
    """Write ``out5``, the grouped convolution of ``x5`` with groups of ``group`` (4 or
    8, dividing the lanes and ``C``, at least a vector of channels) input and output
    channels, the weight packed by rotations ``wr`` ``(V, K, group, lanes)``, one
    block for each vector of channels (the last overlapping the one before it where
    the lanes do not divide ``C``: it rewrites those channels with the same values),
    ``bias`` ``(C,)``. Jobs are output rows cut into pieces of ``ow_chunk`` positions.
    A job goes through its vectors of channels ``chunk`` at a time (as many as keep
    their weights in the L1 cache); for each chunk, along the row, by blocks of
    positions whose every tap lies inside the input's columns
    (:func:`_rotation_block4`, :func:`_rotation_block8`) and the others one at a
    time (:func:`_rotation_position`), each for every vector of the chunk in turn.
    Rows and depths outside the input are skipped.

    Measured (this kernel alone, one process, alternating calls, 2-core AMD EPYC):
    - A vector's weights are contiguous. Packed ``(K, group, C)``, they lay a
      multiple of 4 KiB apart for 256 channels, all in a few sets of the L1 cache,
      and evicted each other (256 channels ran at 0.8x the rate of 240).
    - Positions inside the chunk's loop over vectors: with 4-channel groups 0.74x
      the time of a whole row per vector (128 and 112 channels, 56x56), with 8 about
      1.05x (1.02-1.08 over four layers).
    """
    N, D, H, W, C = x5.shape
    _, OD, OH, OW, _ = out5.shape
    KD, KH, KW = kernel
    sd, sh, sw = stride
    dd, dh, dw = dilation
    pd, ph, pw = pad
    L = VECTOR_BYTES // x5.itemsize
    xf = x5.reshape(-1)
    of = out5.reshape(-1)
    wf = wr.reshape(-1)
    zero = np.zeros(L, x5.dtype)
    per_block = 4 if group == 4 else 2
    pieces = (OW + ow_chunk - 1) // ow_chunk
    depth_step, row_step = dd * H * W * C, dh * W * C
    step, position_step = dw * C, sw * C
    for job in prange(N * OD * OH * pieces):
        row, piece = job // pieces, job % pieces
        n, rest = row // (OD * OH), row % (OD * OH)
        od, oh = rest // OH, rest % OH
        first, end = piece * ow_chunk, min(OW, (piece + 1) * ow_chunk)
        kd_lo, kd_hi = _depth_taps(od, KD, sd, dd, pd, D)
        kh_lo, kh_hi = _tap_range(oh * sh - ph, KH, dh, H)
        # The positions whose whole kernel row lies inside the input's columns.
        run_start = max(first, (pw + sw - 1) // sw)
        run_end = min(end, (W - 1 - (KW - 1) * dw + pw) // sw + 1)
        # The input of (n, first depth and row read, column 0).
        x_row = ((n * D + od * sd + kd_lo * dd - pd) * H + oh * sh + kh_lo * dh - ph) * W
        vectors = (C + L - 1) // L
        for v0 in range(0, vectors, chunk):
            ow = first
            while ow < end:
                base = ow * sw - pw
                block = ow >= run_start and ow + per_block <= run_end
                kw_lo, kw_hi = _tap_range(base, KW, dw, W)
                for v in range(v0, min(vectors, v0 + chunk)):
                    c = min(v * L, C - L)
                    wbase = v * KD * KH * KW * group * L
                    o = (row * OW + ow) * C + c
                    a = (x_row + base + kw_lo * dw) * C + c
                    if block and group == 4:
                        _rotation_block4(of, o, xf, a, wf, wbase, bias, zero, c, C, kd_lo,
                                         kd_hi, kh_lo, kh_hi, KH, KW, depth_step, row_step,
                                         step, position_step)
                    elif block:
                        _rotation_block8(of, o, xf, a, wf, wbase, bias, zero, c, C, kd_lo,
                                         kd_hi, kh_lo, kh_hi, KH, KW, depth_step, row_step,
                                         step, position_step)
                    else:
                        _rotation_position(of, o, xf, a, wf, wbase, bias, zero, c, C, group,
                                           kd_lo, kd_hi, kh_lo, kh_hi, kw_lo, kw_hi, KH, KW,
                                           depth_step, row_step, step)
                ow += per_block if block else 1

# Vectors in and out, no arrays: a call takes no reference counts, and LLVM inlines it
# into each caller (Numba's own inlining is kept to single call sites).
@njit(**_JIT)
def _transpose_16(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, va, vb, vc, vd, ve, vf):
    """The 16 vectors of 16 lanes, as rows of a 16 x 16 tile, transposed: lane ``l``
    of result ``r`` is lane ``r`` of argument ``l``. 64 two-vector lane shuffles
    (:func:`numbaconv._simd.vswap_blocks`)."""
    v0, v8 = vswap_blocks(v0, v8, 8)
    v1, v9 = vswap_blocks(v1, v9, 8)
    v2, va = vswap_blocks(v2, va, 8)
    v3, vb = vswap_blocks(v3, vb, 8)
    v4, vc = vswap_blocks(v4, vc, 8)
    v5, vd = vswap_blocks(v5, vd, 8)
    v6, ve = vswap_blocks(v6, ve, 8)
    v7, vf = vswap_blocks(v7, vf, 8)
    v0, v4 = vswap_blocks(v0, v4, 4)
    v1, v5 = vswap_blocks(v1, v5, 4)
    v2, v6 = vswap_blocks(v2, v6, 4)
    v3, v7 = vswap_blocks(v3, v7, 4)
    v8, vc = vswap_blocks(v8, vc, 4)
    v9, vd = vswap_blocks(v9, vd, 4)
    va, ve = vswap_blocks(va, ve, 4)
    vb, vf = vswap_blocks(vb, vf, 4)
    v0, v2 = vswap_blocks(v0, v2, 2)
    v1, v3 = vswap_blocks(v1, v3, 2)
    v4, v6 = vswap_blocks(v4, v6, 2)
    v5, v7 = vswap_blocks(v5, v7, 2)
    v8, va = vswap_blocks(v8, va, 2)
    v9, vb = vswap_blocks(v9, vb, 2)
    vc, ve = vswap_blocks(vc, ve, 2)
    vd, vf = vswap_blocks(vd, vf, 2)
    v0, v1 = vswap_blocks(v0, v1, 1)
    v2, v3 = vswap_blocks(v2, v3, 1)
    v4, v5 = vswap_blocks(v4, v5, 1)
    v6, v7 = vswap_blocks(v6, v7, 1)
    v8, v9 = vswap_blocks(v8, v9, 1)
    va, vb = vswap_blocks(va, vb, 1)
    vc, vd = vswap_blocks(vc, vd, 1)
    ve, vf = vswap_blocks(ve, vf, 1)
    return v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, va, vb, vc, vd, ve, vf


@njit(**_JIT)
def _tile_16(src, first, pitch, dst, targets, t0, offset):
    """Write the 16 x 16 tile of ``src`` whose rows start at ``first + r*pitch``
    transposed into ``dst``: its column ``l`` as 16 contiguous elements at
    ``targets[t0 + l] + offset``."""
    t = _transpose_16(
        vload(src, first), vload(src, first + pitch), vload(src, first + 2 * pitch),
        vload(src, first + 3 * pitch), vload(src, first + 4 * pitch),
        vload(src, first + 5 * pitch), vload(src, first + 6 * pitch),
        vload(src, first + 7 * pitch), vload(src, first + 8 * pitch),
        vload(src, first + 9 * pitch), vload(src, first + 10 * pitch),
        vload(src, first + 11 * pitch), vload(src, first + 12 * pitch),
        vload(src, first + 13 * pitch), vload(src, first + 14 * pitch),
        vload(src, first + 15 * pitch))
    vstore(dst, targets[t0 + 0] + offset, t[0])
    vstore(dst, targets[t0 + 1] + offset, t[1])
    vstore(dst, targets[t0 + 2] + offset, t[2])
    vstore(dst, targets[t0 + 3] + offset, t[3])
    vstore(dst, targets[t0 + 4] + offset, t[4])
    vstore(dst, targets[t0 + 5] + offset, t[5])
    vstore(dst, targets[t0 + 6] + offset, t[6])
    vstore(dst, targets[t0 + 7] + offset, t[7])
    vstore(dst, targets[t0 + 8] + offset, t[8])
    vstore(dst, targets[t0 + 9] + offset, t[9])
    vstore(dst, targets[t0 + 10] + offset, t[10])
    vstore(dst, targets[t0 + 11] + offset, t[11])
    vstore(dst, targets[t0 + 12] + offset, t[12])
    vstore(dst, targets[t0 + 13] + offset, t[13])
    vstore(dst, targets[t0 + 14] + offset, t[14])
    vstore(dst, targets[t0 + 15] + offset, t[15])


# Output positions per register block of the blocks kernel.
BLOCK_POSITIONS = 8
# Columns of the padded input per piece of its copy (a 1D signal is a single row).
FILL_COLUMNS = 1024


# Inlined (its only call site is dense_blocks'): called, its array arguments' reference
# counts, shared by the threads, were taken and dropped per block.
@njit(inline="always", **_JIT)
def _dense_block(of, o, xf, bases, j, wf, c, offsets, CO, bias):
    """Write output positions ``j..j+7`` (of the flattened output ``of``, the first at
    ``o``, ``CO`` apart) for 2 vectors of output channels from ``c``: the bias plus,
    over every (tap, input channel) pair ``t``, input ``xf[bases[j + i] + offsets[t]]``
    (position ``j + i``) times the weights ``wf[t*CO + c:]`` (``offsets`` ends with
    -1, a mark past the last pair). A register block of 8
    positions x 2 vectors keeps its 16 sums over all the pairs: two weight loads and 8
    broadcast inputs feed 16 FMAs. Each position has its own input base, so a block
    may span output rows (and samples)."""
    L = VECTOR_BYTES // xf.itemsize
    a0, b0 = vload(bias, c), vload(bias, c + L)
    a1, b1, a2, b2, a3, b3 = a0, b0, a0, b0, a0, b0
    a4, b4, a5, b5, a6, b6, a7, b7 = a0, b0, a0, b0, a0, b0, a0, b0
    # Unsigned indices: signed ones are tested for wrapping around at every load.
    p0, p1 = np.uint64(bases[j]), np.uint64(bases[j + 1])
    p2, p3 = np.uint64(bases[j + 2]), np.uint64(bases[j + 3])
    p4, p5 = np.uint64(bases[j + 4]), np.uint64(bases[j + 5])
    p6, p7 = np.uint64(bases[j + 6]), np.uint64(bases[j + 7])
    wi, uco, ul = np.uint64(c), np.uint64(CO), np.uint64(L)
    # Until the offsets' end mark: a loop whose trip count LLVM cannot compute is not
    # unrolled. Unrolled twice (a range over the offsets), its 16 sums spilled to the
    # stack: incep_1x7 0.48 against 0.33 ms.
    t = 0
    while offsets[t] >= 0:
        i = np.uint64(offsets[t])
        t += 1
        u, v = vload(wf, wi), vload(wf, wi + ul)
        s = xf[p0 + i]
        a0, b0 = vfma(a0, u, s), vfma(b0, v, s)
        s = xf[p1 + i]
        a1, b1 = vfma(a1, u, s), vfma(b1, v, s)
        s = xf[p2 + i]
        a2, b2 = vfma(a2, u, s), vfma(b2, v, s)
        s = xf[p3 + i]
        a3, b3 = vfma(a3, u, s), vfma(b3, v, s)
        s = xf[p4 + i]
        a4, b4 = vfma(a4, u, s), vfma(b4, v, s)
        s = xf[p5 + i]
        a5, b5 = vfma(a5, u, s), vfma(b5, v, s)
        s = xf[p6 + i]
        a6, b6 = vfma(a6, u, s), vfma(b6, v, s)
        s = xf[p7 + i]
        a7, b7 = vfma(a7, u, s), vfma(b7, v, s)
        wi += uco
    vstore(of, o, a0)
    vstore(of, o + L, b0)
    vstore(of, o + CO, a1)
    vstore(of, o + CO + L, b1)
    vstore(of, o + 2 * CO, a2)
    vstore(of, o + 2 * CO + L, b2)
    vstore(of, o + 3 * CO, a3)
    vstore(of, o + 3 * CO + L, b3)
    vstore(of, o + 4 * CO, a4)
    vstore(of, o + 4 * CO + L, b4)
    vstore(of, o + 5 * CO, a5)
    vstore(of, o + 5 * CO + L, b5)
    vstore(of, o + 6 * CO, a6)
    vstore(of, o + 6 * CO + L, b6)
    vstore(of, o + 7 * CO, a7)
    vstore(of, o + 7 * CO + L, b7)


@njit(parallel=True, **_JIT)
def dense_blocks(x5, w3, bias, out5, xp, wp, yl, kernel, stride, dilation, pad, per_job,
                 channels_first):
    """Write ``out5``, the dense convolution of ``x5`` with the weight ``w3``
    ``(C_out, C_in, KD*KH*KW)`` and ``bias`` ``(C_out,)``, vectorised over output
    channels.

    First, in parallel, the weight is repacked into ``wp`` ``(KD*KH*KW*C_in, C_out)``
    (each (tap, input channel) pair's weights by output channel; float32 on AVX-512 by
    16 x 16 tiles of vector shuffles (:func:`_transpose_16`): the kernel on
    r50_3x3_14 2.03 -> 1.45 ms and incep_1x7 0.49 -> 0.40 against one element at a
    time, medians of 6 alternating processes; done by the caller with OpenBLAS's
    transpose it took 0.10-0.31 ms of incep_1x7's 0.5, the single thread running
    while Numba's threads spun), and the input copied, zero-padded, into ``xp`` ``(N,
    Dp, Hp, Wp, C_in)`` (every element written), so that no tap needs a bounds test. The
    output positions, flattened over samples and rows, are dealt in jobs of
    ``per_job`` (a multiple of 8; the last job takes the rest). Each job goes by register blocks of 8 positions x 2
    vectors of output channels (:func:`_dense_block`), the channel blocks outer. The
    last block of positions (of channels) overlaps the one before it where 8 positions
    (2 vectors) do not divide the job (``C_out``): it rewrites those outputs with the
    same values. Needs at least 8 output positions and ``C_out`` at least 2 vectors.

    With ``channels_first``, ``x5`` is ``(N, C_in, D, H, W)`` and ``out5`` ``(N, C_out,
    OD, OH, OW)`` instead: the input is transposed as it is padded, and the blocks
    write ``yl`` ``(N, OD, OH, OW, C_out)``, copied into ``out5`` transposed at the
    end (both by 16 x 16 tiles of vector shuffles where 16 lanes and the sizes allow,
    :func:`_tile_16`). Otherwise ``yl`` is ``out5`` itself.
    """
    if channels_first:
        N, C, D, H, W = x5.shape
        CO, OD, OH, OW = out5.shape[1], out5.shape[2], out5.shape[3], out5.shape[4]
    else:
        N, D, H, W, C = x5.shape
        OD, OH, OW, CO = out5.shape[1], out5.shape[2], out5.shape[3], out5.shape[4]
    _, Dp, Hp, Wp, _ = xp.shape
    KD, KH, KW = kernel
    sd, sh, sw = stride
    dd, dh, dw = dilation
    pd, ph, pw = pad
    L = VECTOR_BYTES // x5.itemsize
    xf = x5.reshape(-1)
    pf = xp.reshape(-1)
    of = yl.reshape(-1)
    wf = wp.reshape(-1)
    taps = KD * KH * KW
    # The weight repacked: with 16 lanes, tiles of 16 output channels x 16 (input
    # channel, tap) columns by vector transposes (:func:`_tile_16`); the rest, and
    # other lane counts, one element at a time. Column k = ci*taps + tap goes to row
    # tap*C + ci.
    columns = C * taps
    w2 = w3.reshape(CO, columns)
    wflat = w3.reshape(-1)
    whole_co = CO // 16 * 16 if L == 16 else 0
    whole_k = columns // 16 * 16 if L == 16 else 0
    tiles_k = whole_k // 16
    column_rows = np.empty(columns, dtype=np.int64)  # where column k starts in wf
    for k in range(columns):
        column_rows[k] = ((k % taps) * C + k // taps) * CO
    for job in prange((whole_co // 16) * tiles_k):
        co, k0 = (job // tiles_k) * 16, (job % tiles_k) * 16
        _tile_16(wflat, co * columns + k0, columns, wf, column_rows, k0, co)
    for k in prange(columns):
        row = column_rows[k]
        # Past the whole tiles: every output channel of the columns past them, and the
        # output channels past them of the others.
        for co in range(whole_co if k < whole_k else 0, CO):
            wf[row + co] = w2[co, k]
    # Lane l of a transposed tile: l*C apart in the padded input, l*plane in out5.
    plane = OD * OH * OW
    lanes_c = np.arange(16) * C
    lanes_plane = np.arange(16) * plane
    # Rows of the padded input, in pieces of FILL_COLUMNS columns (a 1D signal is
    # one row): zeros outside the input, its values inside.
    pieces = (Wp + FILL_COLUMNS - 1) // FILL_COLUMNS
    for job in prange(N * Dp * Hp * pieces):
        row, piece = job // pieces, job % pieces
        i_d, i_h = (row // Hp) % Dp - pd, row % Hp - ph
        n = row // (Dp * Hp)
        c0 = piece * FILL_COLUMNS
        c1 = min(Wp, c0 + FILL_COLUMNS)
        # The input's columns in this piece: padded columns [lo, hi).
        lo, hi = max(c0, pw), min(c1, pw + W)
        if i_d < 0 or i_d >= D or i_h < 0 or i_h >= H:
            lo = hi = c1
        dst = np.uint64(row * Wp * C)
        for j in range(np.uint64(c0 * C), np.uint64(max(c0, min(lo, c1)) * C)):
            pf[dst + j] = 0.0
        for j in range(np.uint64(max(hi, c0) * C), np.uint64(c1 * C)):
            pf[dst + j] = 0.0
        if hi <= lo:
            continue
        if channels_first:
            # With 16 lanes, tiles of 16 channels x 16 columns by vector transposes;
            # the rest channel by channel, each input row read as one run.
            whole_c = C // 16 * 16 if L == 16 else 0
            whole_j = (hi - lo) // 16 * 16 if L == 16 else 0
            if whole_c > 0 and whole_j > 0:
                # Column lo + j0 + l of the tile goes to pf[dst + (lo + j0 + l)*C + c0].
                for c0 in range(0, whole_c, 16):
                    src = (((n * C + c0) * D + i_d) * H + i_h) * W + lo - pw
                    for j0 in range(0, whole_j, 16):
                        _tile_16(xf, src + j0, D * H * W, pf, lanes_c, 0,
                                 dst + (lo + j0) * C + c0)
            uc = np.uint64(C)
            for ci in range(C):
                # Past the tiles: every column of the channels past them, and the
                # columns past them of the others.
                j_first = whole_j if ci < whole_c else 0
                src = np.uint64((((n * C + ci) * D + i_d) * H + i_h) * W + lo - pw)
                to = dst + np.uint64(lo * C + ci)
                for j in range(np.uint64(j_first), np.uint64(hi - lo)):
                    pf[to + j * uc] = xf[src + j]
        else:
            src = np.uint64((((n * D + i_d) * H + i_h) * W + lo - pw) * C)
            to = dst + np.uint64(lo * C)
            for j in range(np.uint64((hi - lo) * C)):
                pf[to + j] = xf[src + j]
    # Each (tap, input channel) pair's input offset from a position's first, and -1.
    offsets = np.empty(KD * KH * KW * C + 1, dtype=np.int64)
    t = 0
    for kd in range(KD):
        for kh in range(KH):
            for kw in range(KW):
                for ci in range(C):
                    offsets[t] = ((kd * dd * Hp + kh * dh) * Wp + kw * dw) * C + ci
                    t += 1
    offsets[t] = -1
    positions = N * OD * OH * OW
    bases = np.empty(positions, dtype=np.int64)
    for p in prange(positions):
        n, rest = p // (OD * OH * OW), p % (OD * OH * OW)
        od, rest = rest // (OH * OW), rest % (OH * OW)
        oh, ow = rest // OW, rest % OW
        bases[p] = (((n * Dp + od * sd) * Hp + oh * sh) * Wp + ow * sw) * C
    jobs = max(1, positions // per_job)
    for job in prange(jobs):
        start = job * per_job
        end = positions if job == jobs - 1 else start + per_job
        for c0 in range(0, CO, 2 * L):
            c = min(c0, CO - 2 * L)
            for p0 in range(start, end, BLOCK_POSITIONS):
                p = min(p0, end - BLOCK_POSITIONS)
                _dense_block(of, p * CO + c, pf, bases, p, wf, c, offsets, CO, bias)
    if channels_first:
        # Tiles of 16 positions: each reads 16 runs of C_out and writes 16 positions
        # of every output channel; with 16 lanes, 16 channels at a time by vector
        # transposes. With those of the input too, the whole kernel on channels-first
        # data, against one element at a time (one process, alternating calls):
        # stem_1d 0.57 -> 0.39 ms and resnet_conv1 2.7 -> 2.0 (on channels-last data,
        # with no transposes, 0.30 and 1.6).
        tiles = (plane + 15) // 16
        outf = out5.reshape(-1)
        whole_co = CO // 16 * 16 if L == 16 else 0
        for tile in prange(N * tiles):
            n, q0 = tile // tiles, (tile % tiles) * 16
            q1 = min(plane, q0 + 16)
            first_co = 0
            if q1 - q0 == 16 and whole_co > 0:
                # Channel c0 + l of the tile's 16 positions goes to
                # outf[(n*CO + c0 + l)*plane + q0].
                for c0 in range(0, whole_co, 16):
                    _tile_16(of, (n * plane + q0) * CO + c0, CO, outf, lanes_plane, 0,
                             (n * CO + c0) * plane + q0)
                first_co = whole_co
            for co in range(first_co, CO):
                dst = (n * CO + co) * plane
                for q in range(q0, q1):
                    outf[dst + q] = of[(n * plane + q) * CO + co]
