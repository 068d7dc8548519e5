"""Winograd F(4x4, 3x3) on channels-last arrays, in place (Numba, parallel over tasks).

The same algorithm as :mod:`numbaconv._kernels.winograd` (its transforms ``B``, ``G``
and ``A``, its transformed weight ``u`` ``(G, KD, COg, 36, Cg)``, its tasks of tile
rows), laid out for ``x`` ``(N, D, H, W, C)`` and ``out`` ``(N, OD, OH, OW, C_out)``:
a position's channels are contiguous, so every step of both transforms is a loop over
channels, and a task's transformed tiles are rows of ``(tiles, 36, Cg)``: per point
``xi``, ``M[:, xi] (tiles, COg) = V[:, xi] (tiles, Cg) @ U[xi]^T``, one GEMM, whose
rows the output transform writes straight into ``out``. No tile layout to pack, and no
transposes around the call.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._simd import (VECTOR_BYTES, vadd, vfma, vload, vload_first, vsplat, vstore,
                     vstore_first)
from ..config import CACHE, FASTMATH
from .blas import gemm

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)


@njit(**_JIT)
def _column_combinations(xf, rows, scale, col, inside, tf, to, Cg, Cp, check):
    """``B^T`` applied down one input column: ``tf[to + k*Cp + c]`` (k = 0..5) is row
    combination ``k`` of the six inputs at flat offsets ``rows[a] + col`` (channel
    ``c``) scaled by ``scale[a]`` (1 inside the input, 0 outside); all zero where the
    column is not ``inside``. ``Cg`` channels are read, ``Cp`` (whole vectors) written.
    Returns ``check`` plus 0 times every input read: NaN in some lane once one was a
    NaN or an Inf."""
    L = VECTOR_BYTES // xf.itemsize
    nought = scale[0] - scale[0]
    zero = vsplat(nought)
    if not inside:
        for c0 in range(0, 6 * Cp, L):
            vstore(tf, to + c0, zero)
        return check
    one, two = xf.dtype.type(1), xf.dtype.type(2)
    four, five = xf.dtype.type(4), xf.dtype.type(5)
    o0, o1, o2 = rows[0] + col, rows[1] + col, rows[2] + col
    o3, o4, o5 = rows[3] + col, rows[4] + col, rows[5] + col
    edge = scale[0] + scale[1] + scale[2] + scale[3] + scale[4] + scale[5] < 6
    for c0 in range(0, Cg, L):
        count = min(L, Cg - c0)
        if count == L:
            d0, d1, d2 = vload(xf, o0 + c0), vload(xf, o1 + c0), vload(xf, o2 + c0)
            d3, d4, d5 = vload(xf, o3 + c0), vload(xf, o4 + c0), vload(xf, o5 + c0)
        else:
            d0, d1 = vload_first(xf, o0 + c0, count), vload_first(xf, o1 + c0, count)
            d2, d3 = vload_first(xf, o2 + c0, count), vload_first(xf, o3 + c0, count)
            d4, d5 = vload_first(xf, o4 + c0, count), vload_first(xf, o5 + c0, count)
        check = vfma(check, vadd(vadd(vadd(d0, d1), vadd(d2, d3)), vadd(d4, d5)), nought)
        if edge:
            # A tile row at the top or bottom edge: rows outside the input read as
            # zeros (their offsets point at a row inside it, scaled by 0).
            d0, d1 = vfma(zero, d0, scale[0]), vfma(zero, d1, scale[1])
            d2, d3 = vfma(zero, d2, scale[2]), vfma(zero, d3, scale[3])
            d4, d5 = vfma(zero, d4, scale[4]), vfma(zero, d5, scale[5])
        p = vfma(d4, d2, -one)  # d4 - d2
        q = vfma(d3, d1, -one)  # d3 - d1
        t = to + c0
        vstore(tf, t, vfma(vfma(d4, d0, four), d2, -five))
        vstore(tf, t + Cp, vfma(vadd(d4, d3), vadd(d1, d2), -four))
        vstore(tf, t + 2 * Cp, vfma(vfma(d4, d3, -one), vfma(d1, d2, -one), four))
        vstore(tf, t + 3 * Cp, vfma(p, q, two))
        vstore(tf, t + 4 * Cp, vfma(p, q, -two))
        vstore(tf, t + 5 * Cp, vfma(vfma(d5, d1, four), d3, -five))
    return check


@njit(**_JIT)
def _tile_points(tf, to, span, vf, vo, Cp):
    """``B^T`` applied along a tile's row: ``vf[vo + (6*k + l)*Cp + c]`` is point ``(k,
    l)`` of the transformed tile whose six columns' combinations start at ``tf[to]``
    (column ``b``, combination ``k`` at ``to + b*span + k*Cp``)."""
    L = VECTOR_BYTES // tf.itemsize
    one, two = tf.dtype.type(1), tf.dtype.type(2)
    four, five = tf.dtype.type(4), tf.dtype.type(5)
    for k in range(6):
        e = to + k * Cp
        v = vo + 6 * k * Cp
        for c0 in range(0, Cp, L):
            a0, a1 = vload(tf, e + c0), vload(tf, e + span + c0)
            a2, a3 = vload(tf, e + 2 * span + c0), vload(tf, e + 3 * span + c0)
            a4, a5 = vload(tf, e + 4 * span + c0), vload(tf, e + 5 * span + c0)
            p = vfma(a4, a2, -one)
            q = vfma(a3, a1, -one)
            vstore(vf, v + c0, vfma(vfma(a4, a0, four), a2, -five))
            vstore(vf, v + Cp + c0, vfma(vadd(a4, a3), vadd(a1, a2), -four))
            vstore(vf, v + 2 * Cp + c0,
                   vfma(vfma(a4, a3, -one), vfma(a1, a2, -one), four))
            vstore(vf, v + 3 * Cp + c0, vfma(p, q, two))
            vstore(vf, v + 4 * Cp + c0, vfma(p, q, -two))
            vstore(vf, v + 5 * Cp + c0, vfma(vfma(a5, a1, four), a3, -five))


@njit(**_JIT)
def _output_tile(mf, mo, COp, bias, bo, COg, zf, of, row_offsets, col_offsets, rows,
                 cols):
    """``A^T M A`` plus the bias for one tile: ``M[xi]`` at ``mf[mo + xi*COp:]``;
    output ``(r, s)`` of the tile goes to ``of[row_offsets[r] + col_offsets[s]:]``
    (``COg`` channels, ``bias[bo:]`` added) for ``r < rows``, ``s < cols``. ``zf``
    ``(4, 6, COp)`` is scratch for ``A^T M``."""
    L = VECTOR_BYTES // mf.itemsize
    one, two = mf.dtype.type(1), mf.dtype.type(2)
    four, eight = mf.dtype.type(4), mf.dtype.type(8)
    for col in range(6):
        m = mo + col * COp
        z = col * COp
        for c0 in range(0, COp, L):
            m0, m1 = vload(mf, m + c0), vload(mf, m + 6 * COp + c0)
            m2, m3 = vload(mf, m + 12 * COp + c0), vload(mf, m + 18 * COp + c0)
            m4, m5 = vload(mf, m + 24 * COp + c0), vload(mf, m + 30 * COp + c0)
            s12, s34 = vadd(m1, m2), vadd(m3, m4)
            d12, d34 = vfma(m1, m2, -one), vfma(m3, m4, -one)
            vstore(zf, z + c0, vadd(vadd(m0, s12), s34))
            vstore(zf, z + 6 * COp + c0, vfma(d12, d34, two))
            vstore(zf, z + 12 * COp + c0, vfma(s12, s34, four))
            vstore(zf, z + 18 * COp + c0, vfma(vadd(d12, m5), d34, eight))
    for r in range(rows):
        z = 6 * r * COp
        for c0 in range(0, COg, L):
            count = min(L, COg - c0)
            a0, a1 = vload(zf, z + c0), vload(zf, z + COp + c0)
            a2, a3 = vload(zf, z + 2 * COp + c0), vload(zf, z + 3 * COp + c0)
            a4, a5 = vload(zf, z + 4 * COp + c0), vload(zf, z + 5 * COp + c0)
            b = (vload(bias, bo + c0) if count == L
                 else vload_first(bias, bo + c0, count))
            s12, s34 = vadd(vadd(a1, a2), b), vadd(a3, a4)
            d12, d34 = vadd(vfma(a1, a2, -one), b), vfma(a3, a4, -one)
            for s in range(cols):
                if s == 0:
                    y = vadd(vadd(a0, s12), s34)
                elif s == 1:
                    y = vfma(d12, d34, two)
                elif s == 2:
                    y = vfma(s12, s34, four)
                else:
                    y = vfma(vadd(d12, a5), d34, eight)
                if count == L:
                    vstore(of, row_offsets[r] + col_offsets[s] + c0, y)
                else:
                    vstore_first(of, row_offsets[r] + col_offsets[s] + c0, y, count)


@njit(parallel=True, **_JIT)
def winograd_rows(x5, u, bias, out5, units, tasks, tbufs, vbufs, mbufs, zbufs, dd, dh,
                  dw, pd, ph, pw, tiles_per_row, vpitch, mpitch):
    """Write ``out5`` ``(N, OD, OH, OW, G*COg)``, the unit-stride convolution of ``x5``
    ``(N, D, H, W, G*Cg)`` with a ``(KD, 3, 3)`` kernel transformed into ``u`` ``(G,
    KD, COg, 36, Cg)``, plus ``bias`` ``(G*COg,)``, by Winograd F(4x4, 3x3). Returns 0,
    or NaN if the input holds a NaN or an Inf (``out5`` then partly written: the caller
    runs another form).

    ``units`` and ``tasks`` are :func:`numbaconv._winograd.plan_tasks`' tables with
    ``tiles_per_row`` tiles per row: a unit ``(n, g, od, phase, tr0, tr1, j0)`` is tile
    rows ``tr0 <= tr < tr1`` of dilation phase ``phase`` of output plane ``od``, its
    tiles at rows ``j0`` on of its task's buffers. Channels are padded to whole vectors
    in the buffers (``Cp``, ``COp``). Each thread has its own (flat) buffers: ``tbufs``
    ``(4*tiles_per_row + 2, 6, Cp)`` (a tile row's columns' combinations), ``vbufs``
    ``(tiles, vpitch)`` (a tile's ``(36, Cp)`` points), ``mbufs`` ``(tiles, mpitch)``
    (its ``(36, COp)`` products) and ``zbufs`` ``(24, COp)``. ``dd, dh, dw`` is the
    dilation and ``pd, ph, pw`` the padding before each axis.
    """
    N, D, H, W, C = x5.shape
    OD, OH, OW, CO = out5.shape[1], out5.shape[2], out5.shape[3], out5.shape[4]
    KD, COg, Cg = u.shape[1], u.shape[2], u.shape[4]
    L = VECTOR_BYTES // x5.itemsize
    Cp = -(-Cg // L) * L
    COp = -(-COg // L) * L
    xf = x5.reshape(x5.size)
    of = out5.reshape(out5.size)
    uf = u.reshape(u.size)
    threads = min(vbufs.shape[0], tasks.shape[0])
    span = 6 * Cp  # a column's six combinations in tbufs
    nonfinite = 0.0
    for th in prange(threads):
        tf = tbufs[th]
        vf = vbufs[th]
        mf = mbufs[th]
        zf = zbufs[th]
        rows = [0] * 6
        scale = np.zeros(6, x5.dtype)
        probe = np.zeros(L, x5.dtype)
        check = vsplat(x5.dtype.type(0))
        row_offsets = [0] * 4
        col_offsets = [0] * 4
        for i in range(th, tasks.shape[0], threads):
            u0, u1, nt = tasks[i, 0], tasks[i, 1], tasks[i, 2]
            g = units[u0, 1]
            for kd in range(KD):
                for k in range(u0, u1):
                    n, od, phase = units[k, 0], units[k, 2], units[k, 3]
                    tr0, tr1, j0 = units[k, 4], units[k, 5], units[k, 6]
                    rh, rw = phase // dw, phase % dw
                    iz = od + kd * dd - pd
                    izc = min(max(iz, 0), D - 1)
                    for tr in range(tr0, tr1):
                        for a in range(6):
                            ih = rh + dh * (4 * tr + a) - ph
                            scale[a] = 1 if 0 <= iz < D and 0 <= ih < H else 0
                            rows[a] = (((n * D + izc) * H + min(max(ih, 0), H - 1)) * W
                                       * C + g * Cg)
                        for j in range(4 * tiles_per_row + 2):
                            iw = rw + dw * j - pw
                            check = _column_combinations(
                                xf, rows, scale, min(max(iw, 0), W - 1) * C,
                                0 <= iw < W, tf, j * span, Cg, Cp, check)
                        q0 = j0 + (tr - tr0) * tiles_per_row
                        for t in range(tiles_per_row):
                            _tile_points(tf, 4 * t * span, span, vf, (q0 + t) * vpitch,
                                         Cp)
                beta = 0.0 if kd == 0 else 1.0
                for xi in range(36):
                    # Row-major M[:, xi] (nt, COg) (+)= V[:, xi] (nt, Cg) @ U[xi]^T, as
                    # column-major M^T (COg x nt, ld mpitch) = U[xi] ('T' of its
                    # Cg x COg view, ld 36*Cg) @ V^T (Cg x nt, ld vpitch).
                    gemm(84, 78, COg, nt, Cg, 1.0,
                         uf[((g * KD + kd) * COg * 36 + xi) * Cg:], 36 * Cg,
                         vf[xi * Cp:], vpitch, beta, mf[xi * COp:], mpitch)
            for k in range(u0, u1):
                n, od, phase = units[k, 0], units[k, 2], units[k, 3]
                tr0, tr1, j0 = units[k, 4], units[k, 5], units[k, 6]
                rh, rw = phase // dw, phase % dw
                nh = (OH - rh + dh - 1) // dh  # outputs of this phase per column, row
                nw = (OW - rw + dw - 1) // dw
                for tr in range(tr0, min(tr1, (nh + 3) // 4)):
                    out_rows = min(4, nh - 4 * tr)
                    for r in range(out_rows):
                        row_offsets[r] = (((n * OD + od) * OH + rh + dh * (4 * tr + r))
                                          * OW * CO + g * COg)
                    for t in range(tiles_per_row):
                        out_cols = min(4, nw - 4 * t)
                        for s in range(out_cols):
                            col_offsets[s] = (rw + dw * (4 * t + s)) * CO
                        q = j0 + (tr - tr0) * tiles_per_row + t
                        _output_tile(mf, q * mpitch, COp, bias, g * COg, COg, zf, of,
                                     row_offsets, col_offsets, out_rows, out_cols)
        vstore(probe, 0, check)
        nonfinite += probe.sum()
    return nonfinite
