"""The im2col + GEMM kernels (Numba, parallel over tasks).

``build_columns`` writes, for one sample, the receptive fields of a block of outputs as
the columns of a matrix: ``cols[g, k, j]`` is input ``k = ((c*KD + kd)*KH + kh)*KW + kw``
of output ``p0 + j`` (outputs numbered ``(od*OH + oh)*OW + ow``) in group ``g0 + g``.
That row order is the weight's own ``(Cg, KD, KH, KW)`` order, so the product
``weight[g].reshape(COg, K) @ cols[g]`` needs no repacked weight and lands directly in
the output's ``(COg, OD*OH*OW)`` layout. Each row ``(g, k)`` walks the output rows in its
block and copies the inputs its tap reads, writing zeros where the tap falls into the
padding.

``im2col_forward`` and ``im2col_weight_grad`` deal tasks (a sample, a group, a block of
output positions) to Numba's threads; each thread builds a task's columns in its own
buffer and calls a single-threaded BLAS GEMM on them right away (``blas.gemm``). Keeping
the GEMMs on Numba's threads, rather than on OpenBLAS's own, is what avoids the two
thread pools starving each other (see :mod:`numbaconv._blas`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import CACHE, FASTMATH
from .blas import gemm
from .direct import fill_plane

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)


@njit(inline="always", **_JIT)
def _copy_segment(row, j, n, t_lo, t_hi, plane, i_d, i_h, phase, start):
    """``row[j:j+n]``: zeros, then ``plane[i_d, i_h, phase, start + t]`` for ``t`` in
    ``[t_lo, t_hi)``, then zeros. Inlined into the caller's loop: as a call, or written
    out there with the bounds test around it, the column kernel ran 1.5 to 3x slower
    (r50_3x3_s2's columns: 0.83 ms, here 0.32 ms)."""
    # Slices of known length: plain vector copies, no index wraparound.
    dst = row[j + t_lo: j + t_hi]
    src = plane[i_d, i_h, phase, start + t_lo: start + t_lo + (t_hi - t_lo)]
    for t in range(t_hi - t_lo):
        dst[t] = src[t]
    head = row[j: j + t_lo]
    for t in range(t_lo):
        head[t] = 0
    tail = row[j + t_hi: j + n]
    for t in range(n - t_hi):
        tail[t] = 0


@njit(**_JIT)
def build_columns(x, cols, rows, g0, p0, kernel, stride, dilation, pad, out_spatial, W):
    """Fill rows ``rows[0] <= r < rows[1]`` of ``cols`` ``(gc, K, pc)`` (row ``r`` is
    ``cols[r // K, r % K]``) from one sample ``x`` ``(G, Cg, D, H, sw, Wq)``: the input
    of width ``W`` with each row split into its ``sw`` stride phases, ``x[..., f, j] =
    input[..., j*sw + f]``, so that a strided tap's inputs are contiguous too.

    ``kernel``, ``stride``, ``dilation``, ``pad`` (zero padding before each axis) and
    ``out_spatial`` are ``(d, h, w)`` tuples.
    """
    gc, K, pc = cols.shape
    D, H = x.shape[2], x.shape[3]
    KD, KH, KW = kernel
    OH, OW = out_spatial[1], out_spatial[2]
    sd, sh, sw = stride
    dd, dh, dw = dilation
    pd, ph, pw = pad
    for r in range(rows[0], rows[1]):
        g = r // K
        k = r % K
        kw = k % KW
        kh = (k // KW) % KH
        kd = (k // (KW * KH)) % KD
        c = k // (KW * KH * KD)
        row = cols[g, k]
        plane = x[g0 + g, c]
        # Output columns ow in [lo, hi) read inside the input row; outside, padding.
        off = kw * dw - pw
        lo = 0
        if off < 0:
            lo = min(OW, (-off + sw - 1) // sw)
        hi = 0
        if W - off > 0:
            hi = min(OW, (W - off + sw - 1) // sw)
        hi = max(hi, lo)
        # Input column ow*sw + off is phase `phase`, index ow + shift, of the split row.
        phase = off % sw
        shift = (off - phase) // sw
        od = p0 // (OH * OW)
        oh = (p0 // OW) % OH
        ow0 = p0 % OW
        j = 0
        while j < pc:
            n = min(OW - ow0, pc - j)
            i_d = od * sd + kd * dd - pd
            i_h = oh * sh + kh * dh - ph
            if i_d < 0 or i_d >= D or i_h < 0 or i_h >= H:
                t_lo = t_hi = n  # all padding; the (unread) source row must exist
                i_d = i_h = 0
            else:
                t_lo = min(max(lo - ow0, 0), n)
                t_hi = min(max(hi - ow0, t_lo), n)
            _copy_segment(row, j, n, t_lo, t_hi, plane, i_d, i_h, phase, ow0 + shift)
            j += n
            ow0 = 0
            oh += 1
            if oh == OH:
                oh = 0
                od += 1


@njit(inline="always", **_JIT)
def _task_columns(x6, task, cols_buf, K, kernel, stride, dilation, pad, out_spatial,
                  pointwise, width):
    """Unpack a task row ``(n, g, p0, p1, c0, c1)`` and build its columns ``(K, p1 - p0)``
    in ``cols_buf`` (``x6`` split into stride phases as for :func:`build_columns`);
    returns ``(n, g, p0, p1, c0, c1, cols)``."""
    n, g, p0, p1, c0, c1 = task[0], task[1], task[2], task[3], task[4], task[5]
    pc = p1 - p0
    cols = cols_buf[: K * pc].reshape(K, pc)
    x = x6[n]
    if pointwise:
        plane = x[g].reshape(x.shape[1], -1)
        for r in range(K):
            # Loops, not slice assignments: those compile far slower (see _pad_plane).
            col, run = cols[r], plane[r, p0: p1]
            for j in range(p1 - p0):
                col[j] = run[j]
    else:
        # K - K: a run-time 0, so that both callers compile one signature (a literal 0
        # is typed apart).
        build_columns(x, cols.reshape(1, K, pc), (K - K, K), g, p0, kernel, stride,
                      dilation, pad, out_spatial, width)
    return n, g, p0, p1, c0, c1, cols


@njit(parallel=True, **_JIT)
def im2col_forward(x6, w3, bias2, out4, tasks, kernel, stride, dilation, pad, out_spatial,
                   pointwise, cols_bufs, width):
    """Forward im2col + GEMM over ``tasks`` rows ``(n, g, p0, p1, c0, c1)``, dealt
    round-robin to the threads. Each thread builds a task's columns in its own row of
    ``cols_bufs`` ``(threads, K * max_positions)`` and multiplies them (SciPy's BLAS,
    kept single-threaded by the caller) by the weight straight into the output block,
    which it first fills with the bias (``beta = 1``)."""
    threads = min(cols_bufs.shape[0], tasks.shape[0])
    K = w3.shape[2]
    P = out4.shape[3]
    for t in prange(threads):
        cols_buf = cols_bufs[t]
        for i in range(t, tasks.shape[0], threads):
            n, g, p0, p1, c0, c1, cols = _task_columns(
                x6, tasks[i], cols_buf, K, kernel, stride, dilation, pad, out_spatial,
                pointwise, width)
            pc = p1 - p0
            for co in range(c0, c1):
                out4[n, g, co, p0:p1] = bias2[g, co]
            # Row-major out[c, pc] = w[c, K] @ cols[K, pc], as column-major
            # out^T = cols^T @ w^T.
            gemm(78, 78, pc, c1 - c0, K, 1.0, cols, pc, w3[g, c0:], K, 1.0,
                 out4[n, g, c0:, p0:], P)


@njit(parallel=True, **_JIT)
def im2col_weight_grad(x6, g4, partial, tasks, kernel, stride, dilation, pad, out_spatial,
                       pointwise, cols_bufs, width, threads):
    """Weight gradient over ``tasks`` dealt round-robin to ``threads`` threads: thread
    ``t`` adds ``g4[n, g, c0:c1, p0:p1] @ columns.T`` into ``partial[t, g, c0:c1]``, and
    the caller sums ``partial`` over threads (zeros to start with). With a single
    ``partial`` the tasks' channel blocks are the threads' own (task ``i``'s block is
    thread ``i % threads``'s), all write into it, and each block's first task (sample
    0, position 0) overwrites instead of adding: no zeros, no sum."""
    K = partial.shape[3]
    P = g4.shape[3]
    owned = partial.shape[0] == 1
    for t in prange(threads):
        cols_buf = cols_bufs[t]
        target = partial[0] if owned else partial[t]
        for i in range(t, tasks.shape[0], threads):
            n, g, p0, p1, c0, c1, cols = _task_columns(
                x6, tasks[i], cols_buf, K, kernel, stride, dilation, pad, out_spatial,
                pointwise, width)
            pc = p1 - p0
            beta = 0.0 if owned and n == 0 and p0 == 0 else 1.0
            # Row-major partial[c, K] += grad[c, pc] @ cols[K, pc]^T, as column-major
            # partial^T = cols @ grad^T ('T' of cols' column-major view).
            gemm(84, 78, K, c1 - c0, pc, 1.0, cols, pc, g4[n, g, c0:, p0:], P, beta,
                 target[g, c0:], K)



@njit(**_JIT)
def _pad_plane(x6, xp, row, stride, pad, padded):
    """Zero-padded copy of input channel ``row`` (over ``N*G*Cg``) of ``x6`` into ``xp``
    ``(N, G, Cg, P*Dq*Hq*Wq)``, split into its ``P = sd*sh*sw`` stride phases so that
    every tap of a strided convolution reads its inputs at one shift of the output
    positions, as at unit stride (where it is the padded input itself, of the extent
    the outputs read).

    ``padded = (P, Dq, Hq, Wq)``: phase ``(a, b, c)`` (input position ``(zq*sd + a,
    rq*sh + b, cq*sw + c)`` of the padded input) is a ``Dq x Hq x Wq`` volume of its
    own, the ``((a*sh + b)*sw + c)``-th."""
    G, Cg, D = x6.shape[1], x6.shape[2], x6.shape[3]
    sd, sh, sw = stride
    Dq, Hq, Wq = padded[1], padded[2], padded[3]
    c = row % Cg
    g = (row // Cg) % G
    n = row // (Cg * G)
    dst = xp[n, g, c]
    dst[:] = 0
    for a in range(sd):
        for zq in range(Dq):
            i_d = zq * sd + a - pad[0]
            if i_d < 0 or i_d >= D:
                continue
            base = (a * sh * sw * Dq + zq) * Hq * Wq
            fill_plane(dst[base:], x6[n, g, c, i_d], Hq, Wq, Dq * Hq * Wq, stride, pad)


@njit(**_JIT)
def _tap_offset(tap, kernel, stride, dilation, padded):
    """Where tap ``tap`` (over ``KD*KH*KW``) of output position 0 reads in a plane laid
    out by :func:`_pad_plane`; output position ``q = (od*Hq + oh)*Wq + ow`` reads at
    ``q`` plus that."""
    KH, KW = kernel[1], kernel[2]
    sd, sh, sw = stride
    Dq, Hq, Wq = padded[1], padded[2], padded[3]
    kw = tap % KW
    kh = (tap // KW) % KH
    kd = tap // (KW * KH)
    zd, zh, zw = kd * dilation[0], kh * dilation[1], kw * dilation[2]
    phase = ((zd % sd) * sh + zh % sh) * sw + zw % sw
    return ((phase * Dq + zd // sd) * Hq + zh // sh) * Wq + zw // sw


@njit(parallel=True, **_JIT)
def shifted_gemm_forward(x6, wt, bias2, out, kernel, stride, dilation, pad, padded, xp,
                         tasks, cbufs):
    """Unit-stride convolution as one GEMM per kernel tap, without columns.

    With the input zero-padded into ``xp`` ``(N, G, Cg, Dp*Hp*Wp)`` (just the extent the
    outputs read, ``padded = (Dp, Hp, Wp)``, split into stride phases by
    :func:`_pad_plane`) and outputs numbered ``q = (od*Hp + oh)*Wp + ow`` over the
    padded pitch, tap ``(kd, kh, kw)`` reads ``xp[n, g, :, q + offset(tap)]``: its "columns" are a shifted view of ``xp`` with leading dimension
    ``Dp*Hp*Wp``. So ``C[:, q] = sum_tap wt[g, tap] @ xp[n, g, :, q + offset(tap)]``,
    accumulated by BLAS (``beta = 1``) in each thread's row of ``cbufs``. ``tasks`` rows
    ``(n, g, q0, q1, c0, c1)`` (at most a chunk of positions, so the accumulators stay
    in cache) are dealt to the threads; each copies its valid positions (``oh < OH``,
    ``ow < OW``) out with the bias.
    ``wt`` is ``(G, taps, COg, Cg)``; ``out`` ``(N, G, COg, OD, OH, OW)``.
    """
    N, G, Cg, D, H, W = x6.shape
    OH, OW = out.shape[4], out.shape[5]
    KD, KH, KW = kernel
    P, Dp, Hp, Wp = padded
    L = P * Dp * Hp * Wp
    taps = KD * KH * KW
    for row in prange(N * G * Cg):
        # np.int64: one signature for both callers (the prange index may be unsigned)
        _pad_plane(x6, xp, np.int64(row), stride, pad, padded)
    threads = min(cbufs.shape[0], tasks.shape[0])
    for t in prange(threads):
        cbuf = cbufs[t]
        for i in range(t, tasks.shape[0], threads):
            n, g, q0, q1 = tasks[i, 0], tasks[i, 1], tasks[i, 2], tasks[i, 3]
            c0, c1 = tasks[i, 4], tasks[i, 5]
            qc = q1 - q0
            cm = c1 - c0
            cmat = cbuf[: cm * qc]
            for tap in range(taps):
                off = _tap_offset(tap, kernel, stride, dilation, padded)
                # Row-major C[cm, qc] (+)= wt[c0:c1, Cg] @ xp[Cg, q0+off:][:qc], as
                # column-major C^T = xp^T @ wt^T.
                gemm(78, 78, qc, cm, Cg, 1.0, xp[n, g, 0, q0 + off:], L, wt[g, tap, c0:],
                     Cg, 0.0 if tap == 0 else 1.0, cmat, qc)
            q = q0
            while q < q1:
                od = q // (Hp * Wp)
                oh = (q // Wp) % Hp
                ow = q % Wp
                run = min(Wp - ow, q1 - q)
                if oh < OH and ow < OW:
                    m = min(run, OW - ow)
                    j = q - q0
                    for co in range(cm):
                        b = bias2[g, c0 + co]
                        src = cmat[co * qc + j: co * qc + j + m]
                        dst = out[n, g, c0 + co, od, oh, ow: ow + m]
                        for k in range(m):
                            dst[k] = src[k] + b
                q += run


@njit(parallel=True, **_JIT)
def shifted_weight_grad(x6, g6, partial, kernel, stride, dilation, pad, padded, xp, gp,
                        tasks, threads):
    """Weight gradient in the shifted form: per tap, ``partial[t, g, tap] (COg, Cg) +=
    gp[n, g] (COg, Q) @ xp[n, g, :, offset(tap):][:, :Q].T``, with the output gradient
    laid out at the padded pitch in ``gp`` ``(N, G, COg, Q)`` (zeros off the valid
    positions) and the padded input in ``xp`` as for :func:`shifted_gemm_forward`.
    ``tasks`` rows ``(n, g, tap, q0, q1)`` are dealt to the threads; thread ``t`` adds
    into ``partial[t]`` ``(threads, G, taps, COg, Cg)`` only."""
    N, G, Cg = x6.shape[0], x6.shape[1], x6.shape[2]
    COg, OD, OH, OW = g6.shape[2], g6.shape[3], g6.shape[4], g6.shape[5]
    KD, KH, KW = kernel
    P, Dp, Hp, Wp = padded
    L = P * Dp * Hp * Wp
    Q = gp.shape[3]
    for row in prange(N * G * Cg):
        # np.int64: one signature for both callers (the prange index may be unsigned)
        _pad_plane(x6, xp, np.int64(row), stride, pad, padded)
    for row in prange(N * G * COg):
        co = row % COg
        g = (row // COg) % G
        n = row // (COg * G)
        dst = gp[n, g, co]
        dst[:] = 0
        for od in range(OD):
            for oh in range(OH):
                base = (od * Hp + oh) * Wp
                dst[base: base + OW] = g6[n, g, co, od, oh]
    threads = min(threads, tasks.shape[0])
    for t in prange(threads):
        for i in range(t, tasks.shape[0], threads):
            n, g, tap, q0, q1 = tasks[i, 0], tasks[i, 1], tasks[i, 2], tasks[i, 3], tasks[i, 4]
            off = _tap_offset(tap, kernel, stride, dilation, padded)
            # Row-major P[COg, Cg] += gp[COg, q0:q1] @ xp[Cg, q0+off:][:, :qc]^T, as
            # column-major P^T (Cg, COg) = xp' @ gp'^T: 'T' of xp's column-major view.
            gemm(84, 78, Cg, COg, q1 - q0, 1.0, xp[n, g, 0, q0 + off:], L,
                 gp[n, g, 0, q0:], Q, 1.0, partial[t, g, tap], Cg)


@njit(parallel=True, **_JIT)
def im2col_forward_shared(x6, w3, bias2, out4, cols, kernel, stride, dilation, pad,
                          out_spatial, channel_block, threads, width):
    """Forward im2col + GEMM for few output positions: per sample and group, all threads
    first build the columns ``cols`` ``(K, P)`` together (a share of the rows each),
    then multiply blocks of ``channel_block`` output channels by them, one block per
    task. (With one column block per task instead, each thread rebuilt the same
    columns: on a 7x7 output that took as long as the GEMM.)"""
    N, G = x6.shape[0], x6.shape[1]
    COg, K = w3.shape[1], w3.shape[2]
    P = out4.shape[3]
    blocks = (COg + channel_block - 1) // channel_block
    cols3 = cols.reshape(1, K, P)
    for n in range(N):
        for g in range(G):
            for t in prange(threads):
                r0 = K * t // threads
                r1 = K * (t + 1) // threads
                build_columns(x6[n], cols3, (r0, r1), g, K - K, kernel, stride,
                              dilation, pad, out_spatial, width)
            for blk in prange(blocks):
                c0 = blk * channel_block
                c1 = min(COg, c0 + channel_block)
                for co in range(c0, c1):
                    out4[n, g, co, :] = bias2[g, co]
                gemm(78, 78, P, c1 - c0, K, 1.0, cols, P, w3[g, c0:], K, 1.0,
                     out4[n, g, c0:, :], P)
