"""The input gradient by one GEMM and a scatter (col2im): the transposed convolution and
the input gradient of a strided convolution, with no zeros spread.

For a task (one sample, one group, a block of input channels), the columns of a block of
output rows are ``cols (cb*K, pc) = w[g, :, block]^T @ grad[n, g, :, rows]``: one BLAS
GEMM of all the kernel's taps at once. Each column entry is then added onto the input
position its tap came from (``o*stride + k*dilation - start`` per axis). A task owns its
input channels, so no two threads ever add onto one element.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import CACHE, FASTMATH
from .blas import gemm

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)


@njit(**_JIT)
def _scatter_rows(gx, cols, c0, c1, r0, r1, kernel, stride, dilation, start, out_spatial):
    """``gx[c, o*s + k*dl - start] += cols[(c - c0)*K + tap, o]`` for the output rows
    ``r0 .. r1`` (over ``OD*OH``) of the columns, within ``gx``'s bounds (``gx`` and
    ``cols`` C-contiguous).

    At column stride 2 or 4 and dilation 1, ``sw`` consecutive taps ``kw .. kw+sw-1``
    land on interleaved columns of the same run, so they go together in one pass
    (which LLVM vectorises, given unsigned indices; the strided pass of one tap does
    not): per row 5x (stride 2) and 8x (stride 4) less time than tap by tap. Rows
    are short (a transposed layer's input width), so the row loop makes no array views
    and calls no helpers taking arrays (each costs reference counts): all indices are
    flat, into ``gx`` and ``cols`` reshaped once. (On t2d_8x8_s4's scatter: 1.0 ms a
    task with a view and five helper calls per row.)
    """
    KD, KH, KW = kernel
    sd, sh, sw = stride
    dd, dh, dw = dilation
    td, th, tw = start
    OH, OW = out_spatial[1], out_spatial[2]
    D, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    K = KD * KH * KW
    P = cols.shape[1]
    gf = gx.reshape(-1)
    cf = cols.reshape(-1)
    u1, u2, u3, u4 = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    for c in range(c0, c1):
        for kd in range(KD):
            for kh in range(KH):
                kw = 0
                while kw < KW:
                    together = sw if (sw == 2 or sw == 4) and dw == 1 and kw + sw <= KW else 1
                    row = (c - c0) * K + (kd * KH + kh) * KW + kw
                    # Output columns whose input column is inside the row: [lo, hi) for
                    # tap kw, [lo1, hi1) .. [lo3, hi3) for the next three; for the taps
                    # taken together, all of them inside in [both_lo, both_hi).
                    shift = kw * dw - tw
                    lo, hi = _tap_range(shift, sw, W, OW)
                    lo1, hi1 = _tap_range(shift + 1, sw, W, OW)
                    lo2, hi2 = _tap_range(shift + 2, sw, W, OW)
                    lo3, hi3 = _tap_range(shift + 3, sw, W, OW)
                    both_lo, both_hi = lo, hi
                    if together > 1:
                        both_lo, both_hi = max(lo, lo1), min(hi, hi1)
                    if together > 2:
                        both_lo = max(both_lo, max(lo2, lo3))
                        both_hi = min(both_hi, min(hi2, hi3))
                    both_hi = max(both_lo, both_hi)
                    for r in range(r0, r1):
                        od, oh = r // OH, r % OH
                        i_d = od * sd + kd * dd - td
                        i_h = oh * sh + kh * dh - th
                        if i_d < 0 or i_d >= D or i_h < 0 or i_h >= H:
                            continue
                        line = ((c * D + i_d) * H + i_h) * W  # the row's start in gf
                        at = row * P + (r - r0) * OW  # tap kw's run in cf
                        if together == 1:
                            if sw == 1:
                                dst = np.uint64(line + lo + shift)
                                src = np.uint64(at + lo)
                                for j in range(np.uint64(max(hi - lo, 0))):
                                    gf[dst + j] += cf[src + j]
                            else:
                                for o in range(lo, hi):
                                    gf[line + sw * o + shift] += cf[at + o]
                            continue
                        # The taps' common run, interleaved.
                        dst = np.uint64(line + together * both_lo + shift)
                        src = np.uint64(at + both_lo)
                        p = np.uint64(P)
                        n = np.uint64(both_hi - both_lo)
                        if together == 2:
                            for j in range(n):
                                gf[dst + u2 * j] += cf[src + j]
                                gf[dst + u2 * j + u1] += cf[src + p + j]
                        else:
                            for j in range(n):
                                base = dst + u4 * j
                                gf[base] += cf[src + j]
                                gf[base + u1] += cf[src + p + j]
                                gf[base + u2] += cf[src + u2 * p + j]
                                gf[base + u3] += cf[src + u3 * p + j]
                        # Each tap's ends, outside the common run, one by one.
                        for q in range(together):
                            q_lo, q_hi = lo, hi
                            if q == 1:
                                q_lo, q_hi = lo1, hi1
                            elif q == 2:
                                q_lo, q_hi = lo2, hi2
                            elif q == 3:
                                q_lo, q_hi = lo3, hi3
                            q_at = at + q * P
                            q_line = line + shift + q
                            for o in range(q_lo, min(q_hi, both_lo)):
                                gf[q_line + sw * o] += cf[q_at + o]
                            for o in range(max(q_lo, both_hi), q_hi):
                                gf[q_line + sw * o] += cf[q_at + o]
                    kw += together


@njit(**_JIT)
def _tap_range(shift, sw, W, OW):
    """``(lo, hi)``: the output columns ``o`` in ``[0, OW)`` whose input column ``sw*o +
    shift`` lies inside ``[0, W)`` (ceil divisions)."""
    return max(0, -(shift // sw)), min(OW, -((shift - W) // sw))


@njit(parallel=True, **_JIT)
def col2im_input_grad(g4, w3, base, gx6, tasks, kernel, stride, dilation, start,
                      out_spatial, rows_per_chunk, cols_bufs):
    """Write ``gx6`` ``(N, G, Cg, D, H, W)``, ``base`` ``(G, Cg)`` (a transposed
    convolution's bias, else zeros) plus the input gradient over the window that starts
    at ``start`` (per axis, in padded coordinates).

    ``g4`` ``(N, G, COg, P)`` is the output gradient, ``w3`` ``(G, COg, Cg*K)`` the
    weight; ``tasks`` rows ``(n, g, c0, c1)`` are dealt round-robin to the threads, each
    with a row of ``cols_bufs`` ``(threads, cb*K*rows_per_chunk*OW)`` for its columns.
    The output rows (over ``OD*OH``) go ``rows_per_chunk`` at a time. The GEMMs are
    SciPy's BLAS, kept single-threaded by the caller.
    """
    threads = min(cols_bufs.shape[0], tasks.shape[0])
    K = kernel[0] * kernel[1] * kernel[2]
    COg, P = g4.shape[2], g4.shape[3]
    CgK = w3.shape[2]
    OW = out_spatial[2]
    rows = out_spatial[0] * out_spatial[1]
    for t in prange(threads):
        buf = cols_bufs[t]
        for i in range(t, tasks.shape[0], threads):
            n, g, c0, c1 = tasks[i, 0], tasks[i, 1], tasks[i, 2], tasks[i, 3]
            target = gx6[n, g]
            for c in range(c0, c1):
                # The bias here, not in a pass of its own over the output once it is
                # written (0.1-0.5 ms on the transposed layers of bench --transpose).
                target[c] = base[g, c]
            for r0 in range(0, rows, rows_per_chunk):
                r1 = min(rows, r0 + rows_per_chunk)
                pc = (r1 - r0) * OW
                cols = buf[: (c1 - c0) * K * pc].reshape((c1 - c0) * K, pc)
                # Row-major cols[cbK, pc] = w[:, cbK]^T @ grad[COg, pc], as column-major
                # cols^T (pc x cbK) = grad^T @ w: 'N' for grad's column-major view
                # (pc x COg, ld P), 'T' for w's (cbK x COg, ld CgK).
                gemm(78, 84, pc, (c1 - c0) * K, COg, 1.0, g4[n, g, 0:, r0 * OW:], P,
                     w3[g, 0:, c0 * K:], CgK, 0.0, cols, pc)
                _scatter_rows(target, cols, c0, c1, r0, r1, kernel, stride, dilation,
                              start, out_spatial)


# Input channels per job of flip_taps.
FLIP_BLOCK = 16


@njit(parallel=True, **_JIT)
def flip_taps(w4, out4):
    """``out4[g, c, o, t] = w4[g, o, c, T - 1 - t]``: the weight ``(G, COg, Cg, T)`` with
    its channels swapped per group and its taps reversed (every spatial axis flipped),
    the kernel of the stride-1 input gradient's convolution.

    Jobs of a group and a block of ``FLIP_BLOCK`` input channels walk all output
    channels, so each job reads one contiguous run of the weight per output channel
    while the runs it writes stay in cache; flat unsigned indices let the reversed
    copy vectorise. (Each output channel's rows, indexed as arrays, took 0.37 ms for
    256x256x3x3 and 2.5 ms for 512x512x3x3, here 0.10 and 0.52; NumPy's copy of the
    reversed, transposed view 0.50 and 3.8.)
    """
    G, COg, Cg, T = w4.shape
    wf = w4.reshape(-1)
    of = out4.reshape(-1)
    blocks = (Cg + FLIP_BLOCK - 1) // FLIP_BLOCK
    taps = np.uint64(T)
    for job in prange(G * blocks):
        g, c0 = job // blocks, (job % blocks) * FLIP_BLOCK
        c1 = min(Cg, c0 + FLIP_BLOCK)
        for o in range(COg):
            for c in range(c0, c1):
                last = np.uint64(((g * COg + o) * Cg + c) * T + T - 1)
                first = np.uint64(((g * Cg + c) * COg + o) * T)
                for t in range(taps):
                    of[first + t] = wf[last - t]
