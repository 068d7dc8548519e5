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
(channel, tap) pair adds a scaled, shifted copy of it to the whole output plane: a
contiguous axpy that LLVM vectorises, with no borders.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._simd import VECTOR_BYTES, vfma, vload, vsplat, vstore
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


@njit(**_JIT)
def _axpy_taps(acc, xp, offsets, weights, length, base, init):
    """acc[:length] += sum_t weights[t] * xp[offsets[t]:][:length], four taps a pass (all
    nine of a 3x3 kernel in one), so each pass over acc feeds four (nine) FMAs per load
    and store of acc. With ``init``, acc is first set to ``base`` (for nine taps, in the
    same pass: acc = base + the taps, one store and no load per element)."""
    ntaps = offsets.shape[0]
    a = acc[:length]
    t = 0
    if init and ntaps != 9:
        a[:] = base
    if ntaps == 9:  # 3x3 depthwise: all nine taps in one pass over acc
        w0, w1, w2 = weights[0], weights[1], weights[2]
        w3, w4, w5 = weights[3], weights[4], weights[5]
        w6, w7, w8 = weights[6], weights[7], weights[8]
        x0 = xp[offsets[0]: offsets[0] + length]
        x1 = xp[offsets[1]: offsets[1] + length]
        x2 = xp[offsets[2]: offsets[2] + length]
        x3 = xp[offsets[3]: offsets[3] + length]
        x4 = xp[offsets[4]: offsets[4] + length]
        x5 = xp[offsets[5]: offsets[5] + length]
        x6 = xp[offsets[6]: offsets[6] + length]
        x7 = xp[offsets[7]: offsets[7] + length]
        x8 = xp[offsets[8]: offsets[8] + length]
        if init:
            for i in range(length):
                a[i] = (base + w0 * x0[i] + w1 * x1[i] + w2 * x2[i] + w3 * x3[i]
                        + w4 * x4[i] + w5 * x5[i] + w6 * x6[i] + w7 * x7[i] + w8 * x8[i])
        else:
            for i in range(length):
                a[i] += (w0 * x0[i] + w1 * x1[i] + w2 * x2[i] + w3 * x3[i] + w4 * x4[i]
                         + w5 * x5[i] + w6 * x6[i] + w7 * x7[i] + w8 * x8[i])
        return
    while t + 4 <= ntaps:
        w0, w1, w2, w3 = weights[t], weights[t + 1], weights[t + 2], weights[t + 3]
        x0 = xp[offsets[t]: offsets[t] + length]
        x1 = xp[offsets[t + 1]: offsets[t + 1] + length]
        x2 = xp[offsets[t + 2]: offsets[t + 2] + length]
        x3 = xp[offsets[t + 3]: offsets[t + 3] + length]
        for i in range(length):
            a[i] += w0 * x0[i] + w1 * x1[i] + w2 * x2[i] + w3 * x3[i]
        t += 4
    while t < ntaps:
        w0 = weights[t]
        x0 = xp[offsets[t]: offsets[t] + length]
        for i in range(length):
            a[i] += w0 * x0[i]
        t += 1


@njit(**_JIT)
def _rows_taps(acc, xp, Wq, offsets, weights, KH, KW, rows, width, base, init):
    """``acc[oh * width + ow] += sum_t weights[t] * xp[offsets[t] + oh * Wq + ow]`` for
    ``oh < rows`` (a multiple of 4) and ``ow < width`` (a multiple of two vectors); with
    ``init``, acc starts at ``base`` instead. For unit stride and dilation along H.

    A block of 4 output rows x 2 vectors keeps its 8 sums in registers over every tap,
    where :func:`_axpy_taps` loads and stores the whole plane's on each pass. Tap
    ``(kh, kw)`` of row ``r + 1`` reads what tap ``(kh + 1, kw)`` of row ``r`` reads, so
    for each (input channel, kw) the 4 rows' inputs slide down the kernel's column: one
    new row (two vectors) feeds 8 FMAs. Columns past the output's are computed and
    dropped: ``width`` rounds the output's up to two vectors, where the axpys run over
    ``Wq - OW = KW - 1`` extra columns."""
    L = VECTOR_BYTES // xp.itemsize
    columns = offsets.shape[0] // KH  # (input channel, kw) pairs
    for oh0 in range(0, rows, 4):
        for ow0 in range(0, width, 2 * L):
            o = oh0 * width + ow0
            if init:
                a0 = vsplat(base)
                a1, a2, a3, b0, b1, b2, b3 = a0, a0, a0, a0, a0, a0, a0
            else:
                a0, b0 = vload(acc, o), vload(acc, o + L)
                a1, b1 = vload(acc, o + width), vload(acc, o + width + L)
                a2, b2 = vload(acc, o + 2 * width), vload(acc, o + 2 * width + L)
                a3, b3 = vload(acc, o + 3 * width), vload(acc, o + 3 * width + L)
            first = oh0 * Wq + ow0
            for ck in range(columns):
                t = (ck // KW) * KH * KW + ck % KW  # tap (c, 0, kw)
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
            vstore(acc, o, a0)
            vstore(acc, o + L, b0)
            vstore(acc, o + width, a1)
            vstore(acc, o + width + L, b1)
            vstore(acc, o + 2 * width, a2)
            vstore(acc, o + 2 * width + L, b2)
            vstore(acc, o + 3 * width, a3)
            vstore(acc, o + 3 * width + L, b3)


@njit(**_JIT)
def _rows_taps_narrow(acc, xp, Wq, offsets, weights, KH, KW, rows, base, init):
    """:func:`_rows_taps` for outputs at most one vector wide (``width`` one vector,
    ``rows`` a multiple of 8): register blocks of 8 rows x 1 vector, so each new input
    row loaded feeds 8 FMAs."""
    L = VECTOR_BYTES // xp.itemsize
    columns = offsets.shape[0] // KH
    for oh0 in range(0, rows, 8):
        o = oh0 * L
        if init:
            a0 = vsplat(base)
            a1, a2, a3, a4, a5, a6, a7 = a0, a0, a0, a0, a0, a0, a0
        else:
            a0, a1 = vload(acc, o), vload(acc, o + L)
            a2, a3 = vload(acc, o + 2 * L), vload(acc, o + 3 * L)
            a4, a5 = vload(acc, o + 4 * L), vload(acc, o + 5 * L)
            a6, a7 = vload(acc, o + 6 * L), vload(acc, o + 7 * L)
        first = oh0 * Wq
        for ck in range(columns):
            t = (ck // KW) * KH * KW + ck % KW  # tap (c, 0, kw)
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
        vstore(acc, o, a0)
        vstore(acc, o + L, a1)
        vstore(acc, o + 2 * L, a2)
        vstore(acc, o + 3 * L, a3)
        vstore(acc, o + 4 * L, a4)
        vstore(acc, o + 5 * L, a5)
        vstore(acc, o + 6 * L, a6)
        vstore(acc, o + 7 * L, a7)


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
    in phase ``(kh*dh % sh, kw*dw % sw)``: for any stride, each tap is one contiguous
    axpy (or dot product) over the whole ``OH x Wq`` plane, the ``Wq - OW`` extra
    columns per row computed and dropped. With unit stride it is the padded plane
    itself. ``offsets[c*KH*KW + tap]`` is that offset for input channel ``c``'s plane.
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
    # Stride-2 columns: phase 0 holds run[2*cq - pw] for lo0 <= cq < hi0, phase 1
    # run[2*cq + 1 - pw] for lo1 <= cq < hi1. Where both are inside the row, one pass
    # writes both (an interleaved load LLVM vectorises, given unsigned indices, which
    # cannot wrap around); the phases' ends go one by one. On a thread's 72 planes of
    # mbv2_dw3_s2: 63 against 91 us, one phase a pass.
    lo0, hi0 = max(0, (pw + 1) // 2), min(Wq, (W + pw + 1) // 2)
    lo1, hi1 = max(0, pw // 2), min(Wq, (W + pw) // 2)
    both_lo, both_hi = max(lo0, lo1), max(max(lo0, lo1), min(hi0, hi1))
    # Unit-stride columns: the row lands at pw..pw+W of its phase row (the bounds
    # computed once, not per row: 22 against 45 us on a thread's 72 planes of mbv2_dw3).
    unit_lo, unit_hi = pw, max(pw, min(Wq, pw + W))
    for a in range(sh):
        for rq in range(Hq):
            i_h = rq * sh + a - ph
            if i_h < 0 or i_h >= H:
                continue
            run = src[i_h]
            if sw == 1:
                dst = np.uint64(a * pitch + rq * Wq + unit_lo)
                first = np.uint64(i_h * W + unit_lo - pw)
                for j in range(np.uint64(unit_hi - unit_lo)):
                    xp[dst + j] = flat[first + j]
                continue
            if sw == 2:
                even = a * 2 * pitch + rq * Wq
                odd = even + pitch
                e0 = np.uint64(even + both_lo)
                o0 = np.uint64(odd + both_lo)
                s0 = np.uint64(i_h * W + 2 * both_lo - pw)
                for j in range(np.uint64(both_hi - both_lo)):
                    xp[e0 + j] = flat[s0 + np.uint64(2) * j]
                    xp[o0 + j] = flat[s0 + np.uint64(2) * j + np.uint64(1)]
                for cq in range(lo0, min(hi0, both_lo)):
                    xp[even + cq] = run[2 * cq - pw]
                for cq in range(max(lo0, both_hi), hi0):
                    xp[even + cq] = run[2 * cq - pw]
                for cq in range(lo1, min(hi1, both_lo)):
                    xp[odd + cq] = run[2 * cq + 1 - pw]
                for cq in range(max(lo1, both_hi), hi1):
                    xp[odd + cq] = run[2 * cq + 1 - pw]
                continue
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
                     threads, vector_width):
    """Convolution with one or a few input channels per group (depthwise, its multiples,
    and grouped layers of a few channels per group).

    ``x``: ``(N, G, Cg, D, H, W)``; ``w``: ``(G, COg, KD, Cg * KH * KW)``, ``kernel`` its
    ``(KD, KH, KW)``; one job per sample, group, output depth and block of
    ``co_chunk`` output channels (more than one block only where that is needed for
    enough jobs, or to bound the accumulators: each block copies the planes). Each of the group's
    input planes is copied once into a zero-padded buffer split into stride phases
    (:func:`plane_layout`), the ``Cg`` planes one after another, so that every (input
    channel, tap) pair is one axpy over the whole output plane, free of borders,
    strides and short-row remainders, and each output channel's are a single list of
    offsets. Jobs are dealt round-robin to ``threads`` threads, each with its own
    buffers.

    With ``vector_width`` 0 the taps are whole-plane axpys (:func:`_axpy_taps`);
    otherwise (unit stride and dilation along H only) register blocks of 4 output rows
    by 2 vectors sum all of them (:func:`_rows_taps`), over ``vector_width`` columns
    (the output's, rounded up to two vectors) per row; of 8 rows by 1 vector where
    ``vector_width`` is one vector (:func:`_rows_taps_narrow`).
    """
    N, G, Cg, D = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    COg = w.shape[1]
    KD, KH, KW = kernel
    OD, OH, OW = out.shape[3], out.shape[4], out.shape[5]
    Hq, Wq, block, offsets = plane_layout(OH, OW, KH, KW, stride, dilation, Cg)
    blocks = (COg + co_chunk - 1) // co_chunk
    jobs = N * G * OD * blocks
    threads = min(threads, jobs)
    # One vector wide: blocks of 8 rows; otherwise of 4 rows by 2 vectors.
    narrow = vector_width == VECTOR_BYTES // x.itemsize
    rows = (OH + 7) // 8 * 8 if narrow else (OH + 3) // 4 * 4
    pitch = vector_width if vector_width else Wq
    # The register blocks also read (and drop) rows and columns past the output's.
    xp_size = max(Cg * block, offsets.max() + (rows - 1) * Wq + vector_width)
    acc_size = max(OH * Wq, rows * vector_width)
    for t in prange(threads):
        # Buffers once per thread: positions outside the input are never written, so
        # they stay zero.
        xp = np.zeros(xp_size, dtype=x.dtype)
        acc = np.empty((co_chunk, acc_size), dtype=x.dtype)
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
                    if narrow:
                        _rows_taps_narrow(acc[co - c0], xp, Wq, offsets, w[g, co, kd],
                                          KH, KW, rows, bias[g, co], fresh)
                    elif vector_width:
                        _rows_taps(acc[co - c0], xp, Wq, offsets, w[g, co, kd], KH, KW,
                                   rows, vector_width, bias[g, co], fresh)
                    else:
                        _axpy_taps(acc[co - c0], xp, offsets, w[g, co, kd], OH * Wq,
                                   bias[g, co], fresh)
                fresh = False
            for co in range(c0, c1):
                if fresh:
                    acc[co - c0] = bias[g, co]
            _store_rows(acc, outf, ((n * G + g) * COg + c0) * OD + od, c1 - c0, OD, OH,
                        OW, pitch)


@njit(inline="always", **_JIT)
def _store_rows(acc, outf, first, channels, OD, OH, OW, pitch):
    """Copy the ``OH`` rows of ``OW`` sums, ``pitch`` apart, of each of ``channels``
    rows of ``acc`` into the flattened output ``outf``, where the first of them is
    output plane ``first`` (over ``N * G * COg * OD``) and each next one ``OD`` planes
    on. Flat indices, not a view of each output row, whose reference counts the
    threads share (on the stem kernel's copy those cost more than its taps)."""
    flat = acc.reshape(-1)
    for c in range(channels):
        for oh in range(OH):
            # Unsigned indices: LLVM vectorises the copy (they cannot wrap around).
            dst = np.uint64(((first + c * OD) * OH + oh) * OW)
            src = np.uint64(c * acc.shape[1] + oh * pitch)
            for j in range(np.uint64(OW)):
                outf[dst + j] = flat[src + j]
