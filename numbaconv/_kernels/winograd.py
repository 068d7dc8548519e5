"""Winograd F(2x2, 3x3) kernels (Numba, parallel over tasks).

A 3x3 correlation over a 4x4 input tile ``d`` gives a 2x2 output tile ``Y = A^T [(G g
G^T) * (B^T d B)] A`` (Lavin and Gray, 2016): 16 products per tile and channel pair
instead of 36. Summed over input channels, each of the 16 products is a matrix product
``M[xi] = U[xi] @ V[xi]`` of the transformed weight ``U[xi]`` ``(COg, Cg)`` and the
transformed input tiles ``V[xi]`` ``(Cg, tiles)``, run by a single-threaded BLAS GEMM.
The transforms only add, subtract and halve, so they round no worse than the direct sum.

With dilation ``(dh, dw)``, outputs whose row is ``rh`` modulo ``dh`` (and column ``rw``
modulo ``dw``) read only inputs of that phase, so each phase is its own grid of tiles
whose points lie ``dh`` rows (``dw`` columns) apart.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import CACHE, FASTMATH
from .blas import gemm

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)


@njit(parallel=True, **_JIT)
def transform_weights(w6, u):
    """``u[g, kd, co, xi, c] = (G w6[g, co, c, kd] G^T)[xi]`` for a ``(G, COg, Cg, KD,
    3, 3)`` weight, ``G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]``."""
    G, COg, Cg, KD = w6.shape[:4]
    for row in prange(G * KD * COg):
        g = row // (KD * COg)
        kd = (row // COg) % KD
        co = row % COg
        # Over c innermost: the 16 results are contiguous rows of u, Cg apart.
        for c in range(Cg):
            k = w6[g, co, c, kd]
            for a in range(4):
                # Row a of G k.
                if a == 0:
                    k0, k1, k2 = k[0, 0], k[0, 1], k[0, 2]
                elif a == 3:
                    k0, k1, k2 = k[2, 0], k[2, 1], k[2, 2]
                else:
                    sign = 1.0 if a == 1 else -1.0
                    k0 = 0.5 * (k[0, 0] + sign * k[1, 0] + k[2, 0])
                    k1 = 0.5 * (k[0, 1] + sign * k[1, 1] + k[2, 1])
                    k2 = 0.5 * (k[0, 2] + sign * k[1, 2] + k[2, 2])
                u[g, kd, co, 4 * a, c] = k0
                u[g, kd, co, 4 * a + 1, c] = 0.5 * (k0 + k1 + k2)
                u[g, kd, co, 4 * a + 2, c] = 0.5 * (k0 - k1 + k2)
                u[g, kd, co, 4 * a + 3, c] = k2


@njit(**_JIT)
def pack_row_combinations(x6, s, rows, row, pad, dilation, grid):
    """``B^T`` applied to the rows of every tile of input channel ``row`` (over
    ``N*G*Cg``) of ``x6``, zero padding included, into ``s`` ``(N, G, Cg, Dp, dh*dw, 4,
    2, TH*TW1 + 1)``.

    For dilation phase ``(rh, rw)``, tile ``(tr, t)`` reads padded rows ``rh +
    dh*(2*tr + a)`` and columns ``rw + dw*(2*t + b)`` (a, b = 0..3). Entry ``[z, phase,
    k, p, tr*TW1 + t]`` holds row combination ``k`` of ``B^T`` (``d0 - d2``, ``d1 + d2``,
    ``d2 - d1``, ``d1 - d3``) at the tile's column ``2*t + p``, so column ``b = p + 2*e``
    of the tile is entry ``t + e``: a tile row of the transform reads four unit-stride
    runs. ``grid = (Dp, TH, TW1)``; ``TW1`` is one more than the tiles in a row.
    ``rows`` ``(2*TH + 2, 2, TW1)`` is this thread's buffer for one plane's padded rows,
    split into even and odd tile columns.
    """
    N, G, Cg, D, H, W = x6.shape
    pd, ph, pw = pad
    _, dh, dw = dilation
    Dp, TH, TW1 = grid
    c = row % Cg
    g = (row // Cg) % G
    n = row // (Cg * G)
    for z in range(Dp):
        i_d = z - pd
        for phase in range(dh * dw):
            rh = phase // dw
            rw = phase % dw
            # Tile columns t whose point 2*t + p falls inside the input.
            lo0 = min(TW1, max(0, -((rw - pw) // (2 * dw))))
            hi0 = min(TW1, max(lo0, -((rw - pw - W) // (2 * dw))))
            lo1 = min(TW1, max(0, -((rw + dw - pw) // (2 * dw))))
            hi1 = min(TW1, max(lo1, -((rw + dw - pw - W) // (2 * dw))))
            for r in range(2 * TH + 2):
                i_h = rh + dh * r - ph
                even = rows[r, 0]
                odd = rows[r, 1]
                if i_d < 0 or i_d >= D or i_h < 0 or i_h >= H:
                    even[:] = 0
                    odd[:] = 0
                    continue
                src = x6[n, g, c, i_d, i_h]
                off0 = rw - pw
                off1 = rw + dw - pw
                even[:lo0] = 0
                even[hi0:] = 0
                odd[:lo1] = 0
                odd[hi1:] = 0
                if dw == 1:
                    # Both phases from one pass over the row: LLVM vectorises the pair
                    # of stride-2 loads with shuffles (3x faster than two passes).
                    lo = max(lo0, lo1)
                    hi = max(lo, min(hi0, hi1))
                    pairs = src[2 * lo + off0: 2 * hi + off0]
                    ev = even[lo: hi]
                    od_ = odd[lo: hi]
                    for t in range(hi - lo):
                        ev[t] = pairs[2 * t]
                        od_[t] = pairs[2 * t + 1]
                    for t in range(lo0, lo):
                        even[t] = src[2 * t + off0]
                    for t in range(hi, hi0):
                        even[t] = src[2 * t + off0]
                    for t in range(lo1, lo):
                        odd[t] = src[2 * t + off1]
                    for t in range(hi, hi1):
                        odd[t] = src[2 * t + off1]
                else:
                    for t in range(lo0, hi0):
                        even[t] = src[2 * dw * t + off0]
                    for t in range(lo1, hi1):
                        odd[t] = src[2 * dw * t + off1]
            dst = s[n, g, c, z, phase]
            for tr in range(TH):
                q = tr * TW1
                for p in range(2):
                    d0 = rows[2 * tr, p]
                    d1 = rows[2 * tr + 1, p]
                    d2 = rows[2 * tr + 2, p]
                    d3 = rows[2 * tr + 3, p]
                    s0 = dst[0, p, q: q + TW1]
                    s1 = dst[1, p, q: q + TW1]
                    s2 = dst[2, p, q: q + TW1]
                    s3 = dst[3, p, q: q + TW1]
                    for t in range(TW1):
                        s0[t] = d0[t] - d2[t]
                        s1[t] = d1[t] + d2[t]
                        s2[t] = d2[t] - d1[t]
                        s3[t] = d1[t] - d3[t]
            # The one entry past the last tile row, read by its unused last tile.
            dst[:, :, TH * TW1] = 0


@njit(inline="always", **_JIT)
def _input_tiles(combos, q0, nq, v, c, j0):
    """``v[c, :, j0 + j] = B^T d B`` for tiles ``q0 + j`` (``j < nq``) of one plane's
    row combinations ``combos`` ``(4, 2, TH*TW1 + 1)`` (see ``pack_row_combinations``)."""
    out = v[c]
    for k in range(4):
        # Tile columns 0, 2 are the even entries t, t + 1; columns 1, 3 the odd ones.
        e0 = combos[k, 0, q0: q0 + nq]
        o0 = combos[k, 1, q0: q0 + nq]
        e1 = combos[k, 0, q0 + 1: q0 + 1 + nq]
        o1 = combos[k, 1, q0 + 1: q0 + 1 + nq]
        v0 = out[4 * k, j0: j0 + nq]
        v1 = out[4 * k + 1, j0: j0 + nq]
        v2 = out[4 * k + 2, j0: j0 + nq]
        v3 = out[4 * k + 3, j0: j0 + nq]
        # Written as four short loops rather than one: with 16 stores and 8 loads in
        # one loop LLVM gave up vectorising (too many runtime alias checks).
        for j in range(nq):
            v0[j] = e0[j] - e1[j]
            v1[j] = o0[j] + e1[j]
            v2[j] = e1[j] - o0[j]
            v3[j] = o0[j] - o1[j]


@njit(inline="always", **_JIT)
def _output_tiles(mc, j0, nq, b, y):
    """``y[r*2 + s, j] = (A^T M A)[r, s] + b`` for the products ``mc`` ``(16, pitch)`` of
    one output channel at columns ``j0 + j`` (``j < nq``)."""
    m0, m1, m2, m3 = mc[0, j0:j0 + nq], mc[1, j0:j0 + nq], mc[2, j0:j0 + nq], mc[3, j0:j0 + nq]
    m4, m5, m6, m7 = mc[4, j0:j0 + nq], mc[5, j0:j0 + nq], mc[6, j0:j0 + nq], mc[7, j0:j0 + nq]
    m8, m9, m10, m11 = (mc[8, j0:j0 + nq], mc[9, j0:j0 + nq], mc[10, j0:j0 + nq],
                        mc[11, j0:j0 + nq])
    m12, m13, m14, m15 = (mc[12, j0:j0 + nq], mc[13, j0:j0 + nq], mc[14, j0:j0 + nq],
                          mc[15, j0:j0 + nq])
    y0, y1, y2, y3 = y[0, :nq], y[1, :nq], y[2, :nq], y[3, :nq]
    for j in range(nq):
        # A^T M: rows 0 + 1 + 2 and 1 - 2 - 3; then the same on the columns.
        z00 = m0[j] + m4[j] + m8[j]
        z01 = m1[j] + m5[j] + m9[j]
        z02 = m2[j] + m6[j] + m10[j]
        z03 = m3[j] + m7[j] + m11[j]
        z10 = m4[j] - m8[j] - m12[j]
        z11 = m5[j] - m9[j] - m13[j]
        z12 = m6[j] - m10[j] - m14[j]
        z13 = m7[j] - m11[j] - m15[j]
        y0[j] = z00 + z01 + z02 + b
        y1[j] = z01 - z02 - z03 + b
        y2[j] = z10 + z11 + z12 + b
        y3[j] = z11 - z12 - z13 + b


@njit(inline="always", **_JIT)
def _scatter_row(orow, col0, dw, y_even, y_odd, full, last_odd):
    """``orow[col0 + 2*dw*t] = y_even[t]`` and ``orow[col0 + 2*dw*t + dw] = y_odd[t]``
    for the ``full`` whole tiles, then ``y_even`` of one more tile when ``last_odd``."""
    if dw == 1:
        # Unit stride: LLVM interleaves the two columns into vector stores.
        dst = orow[col0: col0 + 2 * full]
        for t in range(full):
            dst[2 * t] = y_even[t]
            dst[2 * t + 1] = y_odd[t]
    else:
        for t in range(full):
            orow[col0 + 2 * dw * t] = y_even[t]
            orow[col0 + 2 * dw * t + dw] = y_odd[t]
    if last_odd:
        orow[col0 + 2 * dw * full] = y_even[full]


@njit(parallel=True, **_JIT)
def winograd_forward(x6, u, bias2, out, dilation, pad, grid, s, units, tasks, vbufs,
                     mbufs, ybufs, rbufs, pitch):
    """Unit-stride convolution with a ``(KD, 3, 3)`` kernel by Winograd F(2x2, 3x3).

    ``x6`` ``(N, G, Cg, D, H, W)`` is packed into ``s`` (see ``pack_row_combinations``;
    ``grid = (Dp, TH, TW1)``). ``u`` ``(G, KD, COg, 16, Cg)`` is the transformed weight.
    ``units`` rows ``(n, g, od, phase, q0, q1, j0)`` are runs of tiles ``q0 <= q < q1``
    (``q = tr*TW1 + t``, the last in each row unused) of dilation phase ``phase`` of
    output plane ``od``, at columns ``j0 + q - q0`` of their task's buffers. ``tasks``
    rows ``(u0, u1, tiles)`` are runs of units in one group dealt to threads, each with
    its own ``vbufs`` ``(Cg, 16, pitch)``, ``mbufs`` ``(COg, 16, pitch)`` and ``ybufs``
    ``(4, pitch)`` (flat per thread). Each task transforms its input tiles, multiplies
    them by ``u`` (one GEMM per transform point and depth tap) and transforms the
    products back into ``out``.
    """
    N, G, Cg = x6.shape[:3]
    KD = u.shape[1]
    COg = u.shape[2]
    OH, OW = out.shape[4], out.shape[5]
    dd, dh, dw = dilation
    TW1 = grid[2]
    packers = min(rbufs.shape[0], N * G * Cg)
    for th in prange(packers):
        for row in range(th, N * G * Cg, packers):
            pack_row_combinations(x6, s, rbufs[th], row, pad, dilation, grid)
    threads = min(vbufs.shape[0], tasks.shape[0])
    for th in prange(threads):
        for i in range(th, tasks.shape[0], threads):
            u0, u1, nt = tasks[i, 0], tasks[i, 1], tasks[i, 2]
            v = vbufs[th, : Cg * 16 * pitch].reshape((Cg, 16, pitch))
            m = mbufs[th, : COg * 16 * pitch].reshape((COg, 16, pitch))
            y = ybufs[th].reshape((4, pitch))
            g0 = units[u0, 1]  # every unit of a task is in one group
            for kd in range(KD):
                for k in range(u0, u1):
                    n, g, od, phase = units[k, 0], units[k, 1], units[k, 2], units[k, 3]
                    q0, q1, j0 = units[k, 4], units[k, 5], units[k, 6]
                    for c in range(Cg):
                        _input_tiles(s[n, g, c, od + kd * dd, phase], q0, q1 - q0, v, c, j0)
                for xi in range(16):
                    # Row-major M[xi] (COg, nt) (+)= U[xi] (COg, Cg) @ V[xi] (Cg, nt), as
                    # column-major M^T = V^T @ U^T; rows 16*pitch (16*Cg) apart.
                    gemm(78, 78, nt, COg, Cg, 1.0, v[0, xi], 16 * pitch, u[g0, kd, 0, xi],
                         16 * Cg, 0.0 if kd == 0 else 1.0, m[0, xi], 16 * pitch)
            for k in range(u0, u1):
                n, g, od, phase = units[k, 0], units[k, 1], units[k, 2], units[k, 3]
                q0, q1, j0 = units[k, 4], units[k, 5], units[k, 6]
                rh = phase // dw
                rw = phase % dw
                # Tiles per row of this phase, and whether its last one has one column.
                tiles = (OW - rw + 2 * dw - 1) // (2 * dw)
                full = max(0, (OW - rw + dw - 1) // (2 * dw))
                for co in range(COg):
                    _output_tiles(m[co], j0, q1 - q0, bias2[g, co], y)
                    q = q0
                    while q < q1:
                        tr = q // TW1
                        t0 = q % TW1
                        run = min(TW1 - t0, q1 - q)
                        orow = rh + 2 * dh * tr
                        if t0 < tiles and orow < OH:
                            t1 = min(t0 + run, tiles)
                            nfull = max(0, min(t1, full) - t0)
                            last_odd = t1 > full
                            j = q - q0
                            col0 = rw + 2 * dw * t0
                            plane = out[n, g, co, od]
                            # One call site: Numba's IR inlining of this helper at two
                            # sites miscompiled (wrong last columns).
                            for r in range(2 if orow + dh < OH else 1):
                                _scatter_row(plane[orow + r * dh], col0, dw, y[2 * r, j:],
                                             y[2 * r + 1, j:], nfull, last_odd)
                        q += run
