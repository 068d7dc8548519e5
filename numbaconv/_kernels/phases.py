"""The input gradient of strided 1D and 2D depthwise layers, split into stride phases
(Numba, parallel over planes): ``depthwise_input_grad``.

Along an axis of stride ``s``, the input positions of one phase (index modulo ``s``)
take their gradient from the same taps, each reading consecutive output gradients: a
phase is a unit-stride correlation of the output gradient with its share of the taps.
Each job (a plane) copies the output gradient into a zero-bordered buffer whose rows
share one pitch with the sums, so that each tap is a single vector loop over the whole
phase, rows and all, free of borders and strides (``_add_scaled``; row by row, the
loops' bookkeeping took as long as the sums), and the phases are joined by vector
shuffles (``vzip``) as they are written. The spread-gradient convolution it replaces
did 3/4 of a stride-2 layer's work on zeros.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._simd import (VECTOR_BYTES, vfma, vload, vload_first, vsplat, vstore,
                     vstore_first, vzip)
from ..config import CACHE, FASTMATH

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)


@njit(**_JIT)
def _phase_taps(size, first, stride, dilation, taps, low, high):
    """For each of ``size`` positions ``p = first + i`` along an axis, the taps ``k``
    that reach it (``p - k*dilation`` is ``stride`` times a source ``low <= o <
    high``), as ``(count, tap, source)`` tables ``(size,)``, ``(size, taps)``,
    ``(size, taps)``: the divisions done once, not per row (per row, they took as long
    as the sums)."""
    count = np.zeros(size, dtype=np.int64)
    tap = np.zeros((size, taps), dtype=np.int64)
    source = np.zeros((size, taps), dtype=np.int64)
    for i in range(size):
        for k in range(taps):
            q = first + i - k * dilation
            if q % stride == 0 and low <= q // stride < high:
                tap[i, count[i]] = k
                source[i, count[i]] = q // stride
                count[i] += 1
    return count, tap, source


@njit(inline="always", **_JIT)
def _add_scaled(acc, lo, hi, src, offset, weight):
    """``acc[j] += weight * src[offset + j]`` for ``lo <= j < hi``, by whole vectors
    (LLVM left the plain loop scalar: its indices might be negative, for all it
    knows)."""
    L = VECTOR_BYTES // acc.itemsize
    j = lo
    while j + L <= hi:
        vstore(acc, j, vfma(vload(acc, j), vload(src, offset + j), weight))
        j += L
    if j < hi:
        vstore_first(acc, j, vfma(vload_first(acc, j, hi - j),
                                  vload_first(src, offset + j, hi - j), weight), hi - j)


@njit(inline="always", **_JIT)
def _copy_run(dst, d0, src, s0, count):
    """``dst[d0: d0 + count] = src[s0: s0 + count]`` by whole vectors."""
    L = VECTOR_BYTES // dst.itemsize
    j = 0
    while j + L <= count:
        vstore(dst, d0 + j, vload(src, s0 + j))
        j += L
    if j < count:
        vstore_first(dst, d0 + j, vload_first(src, s0 + j, count - j), count - j)


@njit(inline="always", **_JIT)
def _store_zipped(of, o, acc, a, b, W):
    """``of[o + 2*j] = acc[a + j]``, ``of[o + 2*j + 1] = acc[b + j]`` for ``o + 2*j (+
    1) < o + W``: two stride-2 phases of a row, interleaved by vector shuffles (stored
    one by one at stride 2, they took as long as the sums)."""
    L = VECTOR_BYTES // acc.itemsize
    for x in range(0, W, 2 * L):
        low, high = vzip(vload(acc, a + x // 2), vload(acc, b + x // 2))
        if x + 2 * L <= W:
            vstore(of, o + x, low)
            vstore(of, o + x + L, high)
        else:
            vstore_first(of, o + x, low, min(L, W - x))
            if x + L < W:
                vstore_first(of, o + x + L, high, W - x - L)


@njit(parallel=True, **_JIT)
def depthwise_input_grad(g, w, out, bias, stride, dilation, start, threads):
    """Write ``out`` ``(N, C, H, W)``: the gradient of a 2D (or 1D, ``H == 1``)
    depthwise convolution's zero-padded input at padded positions ``start + (y, x)``,
    plus ``bias[c]``, from the output gradient ``g`` ``(N, C, OH, OW)`` and the weight
    ``w`` ``(C, KH, KW)``, at any stride, without spreading ``g`` out with zeros (which
    made 3/4 of a stride-2 layer's work multiplications by zero).

    Along an axis of stride ``s``, padded position ``p`` gets ``w[k] * g[(p - k*dil) /
    s]`` from each tap ``k`` for which ``p - k*dil`` is a multiple of ``s``. The
    positions of one phase (``p`` modulo ``s`` along each axis) share their taps, and
    their sources are consecutive: a phase is a unit-stride correlation of ``g`` with
    its share of the taps. Each job (a plane) copies ``g`` into a zero-bordered buffer
    of row pitch ``Wq``, so that each tap of a phase is one vector loop over the whole
    phase, rows and all (``_add_scaled``; row by row, the loops' bookkeeping took as
    long as the sums); then it writes the phases out, interleaved. Jobs are dealt to
    ``threads`` threads, each with its own buffers."""
    N, C, H, W = out.shape
    OH, OW = g.shape[2], g.shape[3]
    KH, KW = w.shape[1], w.shape[2]
    sh, sw = stride
    dh, dw = dilation
    y0, x0 = start
    L = VECTOR_BYTES // out.itemsize
    ph, pw = min(sh, H), min(sw, W)
    far = 1 << 40
    # Per phase: its taps, and the source of its first position (maybe outside g: the
    # zero border supplies those).
    h_count, h_tap, h_first = _phase_taps(ph, y0, sh, dh, KH, -far, far)
    w_count, w_tap, w_first = _phase_taps(pw, x0, sw, dw, KW, -far, far)
    rows = np.array([(H - r + sh - 1) // sh for r in range(ph)])
    cols = np.array([(W - r + sw - 1) // sw for r in range(pw)])
    top, bottom, left, right = 0, 0, 0, 0
    for r in range(ph):
        for i in range(h_count[r]):
            top = max(top, -h_first[r, i])
            bottom = max(bottom, h_first[r, i] + rows[r] - OH)
    for r in range(pw):
        for i in range(w_count[r]):
            left = max(left, -w_first[r, i])
            right = max(right, w_first[r, i] + cols[r] - OW)
    Wq = left + OW + right
    Hq = top + OH + bottom
    area = -(-(rows[0] * Wq) // L) * L  # a phase's sums, rows of pitch Wq
    gf = g.reshape(g.size)
    of = out.reshape(out.size)
    # Per thread: g's plane inside a zero border written once (one row more than Hq,
    # read by the junk columns past each phase's rows), and the phases' sums.
    threads = min(threads, N * C)
    planes = np.zeros((threads, (Hq + 1) * Wq + 2 * L), dtype=out.dtype)
    sums = np.empty((threads, ph * pw * area + 2 * L), dtype=out.dtype)
    for th in prange(threads):
        gp = planes[th]
        acc = sums[th]
        for job in range(th, N * C, threads):
            c = job % C
            for oh in range(OH):
                _copy_run(gp, (top + oh) * Wq + left, gf, (job * OH + oh) * OW, OW)
            fill = vsplat(bias[c])
            for rh in range(ph):
                for rw in range(pw):
                    a = (rh * pw + rw) * area
                    for j in range(a, a + rows[rh] * Wq, L):
                        vstore(acc, j, fill)
                    for i in range(h_count[rh]):
                        for e in range(w_count[rw]):
                            shift = (top + h_first[rh, i]) * Wq + left + w_first[rw, e]
                            _add_scaled(acc, a, a + rows[rh] * Wq, gp, shift - a,
                                        w[c, h_tap[rh, i], w_tap[rw, e]])
            for rh in range(ph):
                for yy in range(rows[rh]):
                    o = (job * H + rh + sh * yy) * W
                    a = rh * pw * area + yy * Wq
                    if pw == 2:
                        _store_zipped(of, o, acc, a, a + area, W)
                    else:
                        for rw in range(pw):
                            for j in range(cols[rw]):
                                of[o + rw + sw * j] = acc[a + rw * area + j]

