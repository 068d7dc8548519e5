"""Winograd F(4x4, 3x3) kernels (Numba, parallel over tasks).

A 3x3 correlation over a 6x6 input tile ``d`` gives a 4x4 output tile ``Y = A^T [(G g
G^T) * (B^T d B)] A`` (Lavin and Gray, 2016, with interpolation points 0, +-1, +-2 and
infinity): 36 multiplications per tile and channel pair instead of 144. Summed over input
channels, each of the 36 products is a matrix product ``M[xi] = U[xi] @ V[xi]`` of the
transformed weight ``U[xi]`` ``(COg, Cg)`` and the transformed input tiles ``V[xi]``
``(Cg, tiles)``, run by a single-threaded BLAS GEMM.

With dilation ``(dh, dw)``, outputs whose row is ``rh`` modulo ``dh`` (and column ``rw``
modulo ``dw``) read only inputs of that phase, so each phase is its own grid of tiles
whose points lie ``dh`` rows (``dw`` columns) apart.
"""

from __future__ import annotations

from numba import njit, prange

from ..config import CACHE, FASTMATH
from .blas import gemm
from .shares import call_share

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)


@njit(**_JIT)
def _g_rows(dst, a, r0, r1, r2):
    """``dst[:] = (G @ [r0; r1; r2])[a]`` for row ``a`` of ``G`` (6x3) in F(4x4, 3x3):
    ``(1/4, 0, 0)``, ``-(1, 1, 1)/6``, ``-(1, -1, 1)/6``, ``(1/24, 1/12, 1/6)``,
    ``(1/24, -1/12, 1/6)``, ``(0, 0, 1)``; rows are vectors over the input channels."""
    if a == 0:
        for c in range(dst.shape[0]):
            dst[c] = 0.25 * r0[c]
    elif a == 1 or a == 2:
        sign = 1.0 if a == 1 else -1.0
        for c in range(dst.shape[0]):
            dst[c] = -(r0[c] + sign * r1[c] + r2[c]) * (1 / 6)
    elif a == 3 or a == 4:
        sign = 1.0 if a == 3 else -1.0
        for c in range(dst.shape[0]):
            dst[c] = r0[c] * (1 / 24) + sign * r1[c] * (1 / 12) + r2[c] * (1 / 6)
    else:
        for c in range(dst.shape[0]):
            dst[c] = r2[c]


@njit(**_JIT)
def _transform_channel(w6, u, g, kd, co, taps, gk):
    """``u[g, kd, co]`` from ``w6[g, co, :, kd]`` (see ``transform_weights``)."""
    Cg = w6.shape[2]
    nonfinite = 0.0
    for ij in range(9):
        src = w6[g, co, :, kd, ij // 3, ij % 3]
        dst = taps[ij]
        for c in range(Cg):
            dst[c] = src[c]
            nonfinite += src[c] * 0  # NaN from a NaN or an Inf, else 0
    for a in range(6):
        for j in range(3):
            _g_rows(gk[3 * a + j], a, taps[j], taps[3 + j], taps[6 + j])
    for a in range(6):
        for b in range(6):
            _g_rows(u[g, kd, co, 6 * a + b], b, gk[3 * a], gk[3 * a + 1], gk[3 * a + 2])
    return nonfinite


@njit(**_JIT)
def transform_weights(th, threads, x6, w6, u, bias2, out, planes, units, tasks, tbufs,
                      vbufs, mbufs, ybufs, sbufs, rbufs, dd, dh, dw, pd, ph, pw, TW1,
                      pitch):
    """``u[g, kd, co, 6*a + b, c] = (G w6[g, co, c, kd] G^T)[a, b]`` for a ``(G, COg, Cg,
    KD, 3, 3)`` weight (``G`` in ``_g_rows``), for the output channels ``th, th +
    threads, ...`` (of all groups and depth taps) of thread ``th``. ``tbufs[th]`` ``(27,
    Cg)``: the thread's weight taps of one output channel, over the input channels, then
    ``G k`` (every step a vectorised loop over the input channels). Returns 0 if those
    weights are finite, else NaN (see ``winograd_forward``)."""
    G, COg, Cg, KD = w6.shape[:4]
    tbuf = tbufs[th]
    nonfinite = 0.0
    for row in range(th, G * KD * COg, threads):
        nonfinite += _transform_channel(w6, u, row // (KD * COg), (row // COg) % KD,
                                        row % COg, tbuf[:9], tbuf[9:])
    return nonfinite


@njit(**_JIT)
def pack_row_combinations(x6, n, g, c, z, phase, tr0, tr1, pad, dilation, TW1, buf, dst):
    """``B^T`` applied to the rows of tile rows ``tr0 <= tr < tr1`` of input plane
    ``x6[n, g, c, z]``, zero padding included, into ``dst`` ``(6, 4, (tr1 - tr0)*TW1 +
    1)``.

    For dilation phase ``phase = (rh, rw)``, tile ``(tr, t)`` reads padded rows ``rh +
    dh*(4*tr + a)`` and columns ``rw + dw*(4*t + b)`` (a, b = 0..5). Entry ``[k, p,
    (tr - tr0)*TW1 + t]`` holds row combination ``k`` of ``B^T`` at the tile's column
    ``4*t + p``, so column ``b = p + 4*e`` of the tile is entry ``t + e``: a tile row of
    the transform reads unit-stride runs. ``TW1`` is one more than the tiles in a row.

    ``buf`` is scratch: the padded rows (``4*(tr1 - tr0) + 2`` of ``L = 4*TW1``
    columns), then their combinations. With ``q = tr*TW1 + t``, column ``4*t + p`` of
    combination row ``tr`` is element ``4*q + p``: splitting the columns into their four
    phases is one long stride-4 pass (split row by row, the loops were too short to
    vectorise: 3x slower).

    Returns 0 if the rows read are finite, else NaN.
    """
    D, H, W = x6.shape[3], x6.shape[4], x6.shape[5]
    pd, ph, pw = pad
    _, dh, dw = dilation
    L = 4 * TW1
    rows_count = 4 * (tr1 - tr0) + 2
    Q = (tr1 - tr0) * TW1
    padded = buf[: rows_count * L].reshape((rows_count, L))
    combos = buf[rows_count * L: rows_count * L + 6 * Q * 4].reshape((6, 4 * Q))
    nonfinite = 0.0
    i_d = z - pd
    rh = phase // dw
    rw = phase % dw
    # Columns j of a padded row read input column rw + dw*j - pw: inside the input for
    # lo <= j < hi.
    lo = min(L, max(0, -((rw - pw) // dw)))
    hi = min(L, max(lo, -((rw - pw - W) // dw)))
    for r in range(rows_count):
        i_h = rh + dh * (4 * tr0 + r) - ph
        row = padded[r]
        if i_d < 0 or i_d >= D or i_h < 0 or i_h >= H:
            row[:] = 0
            continue
        src = x6[n, g, c, i_d, i_h]
        row[:lo] = 0
        row[hi:] = 0
        if dw == 1:
            seg = row[lo: hi]
            run = src[lo + rw - pw: hi + rw - pw]
            for j in range(hi - lo):
                seg[j] = run[j]
                nonfinite += run[j] * 0  # NaN from a NaN or an Inf, else 0
        else:
            for j in range(lo, hi):
                row[j] = src[rw + dw * j - pw]
                nonfinite += row[j] * 0
    for tr in range(tr1 - tr0):
        d0 = padded[4 * tr]
        d1 = padded[4 * tr + 1]
        d2 = padded[4 * tr + 2]
        d3 = padded[4 * tr + 3]
        d4 = padded[4 * tr + 4]
        d5 = padded[4 * tr + 5]
        s0 = combos[0, tr * L: (tr + 1) * L]
        s1 = combos[1, tr * L: (tr + 1) * L]
        s2 = combos[2, tr * L: (tr + 1) * L]
        s3 = combos[3, tr * L: (tr + 1) * L]
        s4 = combos[4, tr * L: (tr + 1) * L]
        s5 = combos[5, tr * L: (tr + 1) * L]
        for j in range(L):
            s0[j] = 4 * d0[j] - 5 * d2[j] + d4[j]
            s1[j] = d3[j] + d4[j] - 4 * (d1[j] + d2[j])
            s2[j] = 4 * (d1[j] - d2[j]) + d4[j] - d3[j]
            s3[j] = 2 * (d3[j] - d1[j]) + d4[j] - d2[j]
            s4[j] = 2 * (d1[j] - d3[j]) + d4[j] - d2[j]
            s5[j] = 4 * d1[j] - 5 * d3[j] + d5[j]
    for k in range(6):
        src_k = combos[k]
        p0 = dst[k, 0, :Q]
        p1 = dst[k, 1, :Q]
        p2 = dst[k, 2, :Q]
        p3 = dst[k, 3, :Q]
        for q in range(Q):
            p0[q] = src_k[4 * q]
            p1[q] = src_k[4 * q + 1]
            p2[q] = src_k[4 * q + 2]
            p3[q] = src_k[4 * q + 3]
    # The one entry past the last tile row, read by its unused last tile.
    dst[:, :, Q] = 0
    return nonfinite


@njit(**_JIT)
def _input_tiles(combos, q0, nq, v, c, j0):
    """``v[c, :, j0 + j] = B^T d B`` for tiles ``q0 + j`` (``j < nq``) of one plane's
    row combinations ``combos`` ``(6, 4, TH*TW1 + 1)`` (see ``pack_row_combinations``)."""
    out = v[c]
    for k in range(6):
        # Tile columns 0-3 are entries t of the four phases, columns 4-5 entries t + 1.
        e0 = combos[k, 0, q0: q0 + nq]
        e1 = combos[k, 1, q0: q0 + nq]
        e2 = combos[k, 2, q0: q0 + nq]
        e3 = combos[k, 3, q0: q0 + nq]
        e4 = combos[k, 0, q0 + 1: q0 + 1 + nq]
        e5 = combos[k, 1, q0 + 1: q0 + 1 + nq]
        v0 = out[6 * k, j0: j0 + nq]
        v1 = out[6 * k + 1, j0: j0 + nq]
        v2 = out[6 * k + 2, j0: j0 + nq]
        v3 = out[6 * k + 3, j0: j0 + nq]
        v4 = out[6 * k + 4, j0: j0 + nq]
        v5 = out[6 * k + 5, j0: j0 + nq]
        # One loop per row: with all 36 stores in one loop LLVM gave up vectorising
        # (too many runtime alias checks). The same B^T as in pack_row_combinations,
        # written out again: as a helper shared by both (inlined or not), the form ran
        # 10-28% slower.
        for j in range(nq):
            v0[j] = 4 * e0[j] - 5 * e2[j] + e4[j]
            v1[j] = e3[j] + e4[j] - 4 * (e1[j] + e2[j])
            v2[j] = 4 * (e1[j] - e2[j]) + e4[j] - e3[j]
            v3[j] = 2 * (e3[j] - e1[j]) + e4[j] - e2[j]
            v4[j] = 2 * (e1[j] - e3[j]) + e4[j] - e2[j]
            v5[j] = 4 * e1[j] - 5 * e3[j] + e5[j]


@njit(**_JIT)
def _output_tiles(mc, j0, nq, b, z, y):
    """``y[r, 4*j + s] = (A^T M A)[r, s] + b`` for the products ``mc`` ``(36, pitch)`` of
    one output channel at columns ``j0 + j`` (``j < nq``); ``z`` ``(24, pitch)`` holds
    ``A^T M`` in between."""
    for col in range(6):
        # A^T M, one column at a time.
        m0 = mc[col, j0: j0 + nq]
        m1 = mc[6 + col, j0: j0 + nq]
        m2 = mc[12 + col, j0: j0 + nq]
        m3 = mc[18 + col, j0: j0 + nq]
        m4 = mc[24 + col, j0: j0 + nq]
        m5 = mc[30 + col, j0: j0 + nq]
        z0 = z[col, :nq]
        z1 = z[6 + col, :nq]
        z2 = z[12 + col, :nq]
        z3 = z[18 + col, :nq]
        for j in range(nq):
            z0[j] = m0[j] + m1[j] + m2[j] + m3[j] + m4[j]
            z1[j] = m1[j] - m2[j] + 2 * (m3[j] - m4[j])
            z2[j] = m1[j] + m2[j] + 4 * (m3[j] + m4[j])
            z3[j] = m1[j] - m2[j] + 8 * (m3[j] - m4[j]) + m5[j]
    for r in range(4):
        # (A^T M) A, one output row at a time, plus the bias.
        a0 = z[6 * r, :nq]
        a1 = z[6 * r + 1, :nq]
        a2 = z[6 * r + 2, :nq]
        a3 = z[6 * r + 3, :nq]
        a4 = z[6 * r + 4, :nq]
        a5 = z[6 * r + 5, :nq]
        # Written interleaved, y[r, 4*j + s]: each output row of a tile row is then one
        # contiguous run (scattered to stride 4 one tile row at a time, the stores ran
        # scalar: a tile row is shorter than a vector loop).
        yr = y[r, : 4 * nq]
        for j in range(nq):
            yr[4 * j] = a0[j] + a1[j] + a2[j] + a3[j] + a4[j] + b
            yr[4 * j + 1] = a1[j] - a2[j] + 2 * (a3[j] - a4[j]) + b
            yr[4 * j + 2] = a1[j] + a2[j] + 4 * (a3[j] + a4[j]) + b
            yr[4 * j + 3] = a1[j] - a2[j] + 8 * (a3[j] - a4[j]) + a5[j] + b


@njit(**_JIT)
def _scatter_row(orow, col0, dw, yr, j, count):
    """``count`` outputs of one row, ``yr[4*j:]`` (tiles ``j, j + 1, ...`` interleaved,
    see ``_output_tiles``), into ``orow[col0 + dw*i]``."""
    src = yr[4 * j: 4 * j + count]
    if dw == 1:
        # A loop, not ``orow[a:b] = src``: Numba's array-to-array slice assignment
        # (overlap checks, broadcasting) took 2.5 s of this form's compile time.
        run = orow[col0: col0 + count]
        for i in range(count):
            run[i] = src[i]
    else:
        for i in range(count):
            orow[col0 + dw * i] = src[i]


@njit(**_JIT)
def pack_planes(th, threads, x6, w6, u, bias2, out, planes, units, tasks, tbufs, vbufs,
                mbufs, ybufs, sbufs, rbufs, dd, dh, dw, pd, ph, pw, TW1, pitch):
    """Thread ``th``'s share (jobs ``th, th + threads, ...``) of packing every input
    plane and phase once, for a depth kernel (see ``winograd_forward``): returns 0, or
    NaN if the input holds a NaN or an Inf."""
    pad = (pd, ph, pw)
    dilation = (dd, dh, dw)
    N, G, Cg = x6.shape[0], x6.shape[1], x6.shape[2]
    Dp, phases, TH = planes.shape[3], planes.shape[4], (planes.shape[7] - 1) // TW1
    jobs = N * G * Cg * Dp * phases
    first_row = TH - TH  # a run-time 0: a literal would compile a second signature
    nonfinite = 0.0
    for job in range(th, jobs, threads):
        phase = job % phases
        z = (job // phases) % Dp
        c = (job // (phases * Dp)) % Cg
        g = (job // (phases * Dp * Cg)) % G
        n = job // (phases * Dp * Cg * G)
        nonfinite += pack_row_combinations(x6, n, g, c, z, phase, first_row, TH, pad,
                                           dilation, TW1, rbufs[th],
                                           planes[n, g, c, z, phase])
    return nonfinite


@njit(**_JIT)
def winograd_forward(th, threads, x6, w6, u, bias2, out, planes, units, tasks, tbufs,
                     vbufs, mbufs, ybufs, sbufs, rbufs, dd, dh, dw, pd, ph, pw, TW1,
                     pitch):
    """Thread ``th``'s share (tasks ``th, th + threads, ...``) of a unit-stride
    convolution with a ``(KD, 3, 3)`` kernel by Winograd F(4x4, 3x3).

    ``x6`` ``(N, G, Cg, D, H, W)``; ``u`` ``(G, KD, COg, 36, Cg)`` is the transformed
    weight; ``dd, dh, dw`` the dilation and ``pd, ph, pw`` the padding before each
    axis. ``units`` rows ``(n, g, od, phase, tr0, tr1, j0)`` are tile rows ``tr0 <= tr
    < tr1`` (``TW1`` tiles each, the last unused) of dilation phase ``phase`` of output
    plane ``od``, at columns ``j0`` on of their task's buffers. ``tasks`` rows ``(u0,
    u1, tiles)`` are runs of units in one group; each thread has its own buffers (flat,
    row ``th`` of each): ``vbufs`` ``(Cg, 36, pitch)``, ``mbufs`` ``(COg, 36, pitch)``,
    ``ybufs`` ``(40, pitch)``, ``sbufs`` and ``rbufs`` for packing. Per depth tap, each
    task packs and transforms its input tiles channel by channel (so the packed rows
    stay in L1) and multiplies them by ``u`` (one GEMM per transform point); then it
    transforms the products back into ``out``.

    With a depth kernel (KD > 1) each input plane feeds KD output planes, so all planes
    are packed once, first (``pack_planes``), into ``planes`` ``(N, G, Cg, Dp, dh*dw, 6,
    4, TH*TW1 + 1)`` (c3d: packing per task and tap was 1.17x slower); otherwise
    ``planes`` is unused (any 8-dimensional array).

    Returns 0, or NaN if the input holds a NaN or an Inf, with ``out`` partly written:
    the transforms mix all 36 points of a tile (an Inf times a zero coefficient is NaN),
    so a non-finite input would reach outputs of its tile outside its receptive field,
    and the caller must use another form.

    A share of ``run_shares``, like ``transform_weights`` and ``pack_planes``: all
    three take the form's one argument pack, so that one driver (per dtype) runs them.
    The padding and dilation come as ints: a ``prange`` cannot pass on tuples nested
    in the driver's arguments.
    """
    dilation = (dd, dh, dw)
    pad = (pd, ph, pw)
    Cg = x6.shape[2]
    KD = u.shape[1]
    COg = u.shape[2]
    OH, OW = out.shape[4], out.shape[5]
    prepacked = KD > 1
    sbuf = sbufs[th]
    rbuf = rbufs[th]
    v = vbufs[th, : Cg * 36 * pitch].reshape((Cg, 36, pitch))
    m = mbufs[th, : COg * 36 * pitch].reshape((COg, 36, pitch))
    zy = ybufs[th].reshape((40, pitch))
    y = zy[24:].reshape((4, 4 * pitch))
    nonfinite = 0.0
    for i in range(th, tasks.shape[0], threads):
        u0, u1, nt = tasks[i, 0], tasks[i, 1], tasks[i, 2]
        g0 = units[u0, 1]  # every unit of a task is in one group
        for kd in range(KD):
            for k in range(u0, u1):
                n, g, od, phase = units[k, 0], units[k, 1], units[k, 2], units[k, 3]
                tr0, tr1, j0 = units[k, 4], units[k, 5], units[k, 6]
                nq = (tr1 - tr0) * TW1
                z = od + kd * dd
                packed = sbuf[: 24 * (nq + 1)].reshape((6, 4, nq + 1))
                for c in range(Cg):
                    if prepacked:
                        combos = planes[n, g, c, z, phase]
                        q0 = tr0 * TW1
                    else:
                        nonfinite += pack_row_combinations(
                            x6, n, g, c, z, phase, tr0, tr1, pad, dilation, TW1, rbuf,
                            packed)
                        combos = packed
                        q0 = 0
                    # One call site per inlined helper: Numba's IR inlining of a helper
                    # at two sites of one function miscompiled it once (wrong last
                    # columns).
                    _input_tiles(combos, q0, nq, v, c, j0)
            for xi in range(36):
                # Row-major M[xi] (COg, nt) (+)= U[xi] (COg, Cg) @ V[xi] (Cg, nt), as
                # column-major M^T = V^T @ U^T; rows 36*pitch (36*Cg) apart.
                gemm(78, 78, nt, COg, Cg, 1.0, v[0, xi], 36 * pitch, u[g0, kd, 0, xi],
                     36 * Cg, 0.0 if kd == 0 else 1.0, m[0, xi], 36 * pitch)
        for k in range(u0, u1):
            n, g, od, phase = units[k, 0], units[k, 1], units[k, 2], units[k, 3]
            tr0, tr1, j0 = units[k, 4], units[k, 5], units[k, 6]
            rh = phase // dw
            rw = phase % dw
            # Outputs of this phase per row and column.
            nh = (OH - rh + dh - 1) // dh
            nw = (OW - rw + dw - 1) // dw
            for co in range(COg):
                _output_tiles(m[co], j0, (tr1 - tr0) * TW1, bias2[g, co], zy[:24], y)
                plane = out[n, g, co, od]
                for tr in range(tr0, min(tr1, (nh + 3) // 4)):
                    j = (tr - tr0) * TW1
                    for r in range(min(4, nh - 4 * tr)):
                        _scatter_row(plane[rh + dh * (4 * tr + r)], rw, dw, y[r], j,
                                     nw)
    return nonfinite


@njit(parallel=True, **_JIT)
def run_shares(address, threads, args):
    """Run the share compiled at ``address`` (``transform_weights``, ``pack_planes`` or
    ``winograd_forward``) on ``threads`` threads at once, with arguments ``args``; the
    sum of what the shares returned (see :mod:`numbaconv._kernels.shares`)."""
    total = 0.0
    for th in prange(threads):
        total += call_share(address, th, threads, args)
    return total
