"""The stem kernel: a few input channels (RGB images and video), many output channels
(Numba, parallel over blocks of output channels and positions).

Layouts as in :mod:`numbaconv._kernels.direct`: ``x`` ``(N, G, Cg, D, H, W)``, ``out``
``(N, G, COg, OD, OH, OW)``, C-contiguous, one dtype; 1D and 2D calls reach it with
leading spatial axes of size 1.

A stem has too few input channels for a GEMM to be deep (a 3-channel 7x7 kernel gives
147-deep columns, written and read again at memory speed) and too many output channels
for the channel-wise kernel, which computes one output channel at a time from the
copied planes. Here each input plane is copied once into zero-padded stride phases
(``direct.plane_layout``), so that every (input channel, tap) pair reads one contiguous
run. A job then holds the accumulators of 8 output channels over a chunk of
``CHUNK`` positions in L1, and sums every tap into them by register blocks of 8
channels x 2 vectors of positions (``numbaconv._simd``): 2 input loads feed 16 FMAs,
and the accumulators are loaded and stored once (one thread, all 148 taps of a 3-channel
7x7 kernel: 58 GMAC/s, where passes of 4 taps that loaded and stored them ran at 35-47).
The weight comes packed as
``(G, ceil(COg/8), KD, Cg*KH*KW, 8)``: per block of 8 output channels and depth tap,
the (input channel, tap) pairs, by channel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._simd import VECTOR_BYTES, vfma, vload, vstore
from ..config import CACHE, FASTMATH
from .direct import fill_plane, plane_layout

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)

# Positions per job: the 8 accumulator rows take 24.5 KiB in float32. Measured with an
# earlier form of the tap sums (passes of 4 taps over the accumulators), these ran
# fastest at 384 (resnet_conv1 on one thread: 47 GMAC/s, 34 at 768), but the
# whole kernel on two threads at 768 (0.80-0.95x the time at 384, 0.82x on mbnet_stem):
# fewer jobs, fewer and longer runs copied out.
CHUNK = 768
# The rows' distance apart: no two rows share their addresses' low 12 bits, or the
# loads of one stall behind the stores of another (at a pitch of 512: 20 GMAC/s).
PITCH = CHUNK + 16


@njit(**_JIT)
def _add_taps_by_blocks(acc, xp, start, length, offsets, w):
    """``acc[o*PITCH + i] += sum_t w[t, o] * xp[offsets[t] + start + i]`` for the 8 rows
    ``o`` and ``i < length`` rounded up to two vectors, every tap at once: a register
    block of 8 rows x 2 vectors holds its 16 sums over all the taps, so two input loads
    feed 16 FMAs and the accumulators are loaded and stored once."""
    L = VECTOR_BYTES // xp.itemsize
    for i0 in range(0, length, 2 * L):
        a0, b0 = vload(acc, i0), vload(acc, i0 + L)
        a1, b1 = vload(acc, PITCH + i0), vload(acc, PITCH + i0 + L)
        a2, b2 = vload(acc, 2 * PITCH + i0), vload(acc, 2 * PITCH + i0 + L)
        a3, b3 = vload(acc, 3 * PITCH + i0), vload(acc, 3 * PITCH + i0 + L)
        a4, b4 = vload(acc, 4 * PITCH + i0), vload(acc, 4 * PITCH + i0 + L)
        a5, b5 = vload(acc, 5 * PITCH + i0), vload(acc, 5 * PITCH + i0 + L)
        a6, b6 = vload(acc, 6 * PITCH + i0), vload(acc, 6 * PITCH + i0 + L)
        a7, b7 = vload(acc, 7 * PITCH + i0), vload(acc, 7 * PITCH + i0 + L)
        for t in range(offsets.shape[0]):
            j = offsets[t] + start + i0
            u, v = vload(xp, j), vload(xp, j + L)
            a0, b0 = vfma(a0, u, w[t, 0]), vfma(b0, v, w[t, 0])
            a1, b1 = vfma(a1, u, w[t, 1]), vfma(b1, v, w[t, 1])
            a2, b2 = vfma(a2, u, w[t, 2]), vfma(b2, v, w[t, 2])
            a3, b3 = vfma(a3, u, w[t, 3]), vfma(b3, v, w[t, 3])
            a4, b4 = vfma(a4, u, w[t, 4]), vfma(b4, v, w[t, 4])
            a5, b5 = vfma(a5, u, w[t, 5]), vfma(b5, v, w[t, 5])
            a6, b6 = vfma(a6, u, w[t, 6]), vfma(b6, v, w[t, 6])
            a7, b7 = vfma(a7, u, w[t, 7]), vfma(b7, v, w[t, 7])
        vstore(acc, i0, a0)
        vstore(acc, i0 + L, b0)
        vstore(acc, PITCH + i0, a1)
        vstore(acc, PITCH + i0 + L, b1)
        vstore(acc, 2 * PITCH + i0, a2)
        vstore(acc, 2 * PITCH + i0 + L, b2)
        vstore(acc, 3 * PITCH + i0, a3)
        vstore(acc, 3 * PITCH + i0 + L, b3)
        vstore(acc, 4 * PITCH + i0, a4)
        vstore(acc, 4 * PITCH + i0 + L, b4)
        vstore(acc, 5 * PITCH + i0, a5)
        vstore(acc, 5 * PITCH + i0 + L, b5)
        vstore(acc, 6 * PITCH + i0, a6)
        vstore(acc, 6 * PITCH + i0 + L, b6)
        vstore(acc, 7 * PITCH + i0, a7)
        vstore(acc, 7 * PITCH + i0 + L, b7)


@njit(parallel=True, **_JIT)
def stem_conv(x, wq, bias, out, kernel, stride, dilation, pad, samples, threads,
              channels_last):
    """Write ``out``: the convolution of ``x`` with the packed weight ``wq`` (see the
    module docstring) plus ``bias`` ``(G, COg)``. With ``channels_last``, ``x`` is
    ``(N, D, H, W, G, Cg)`` and ``out`` ``(N, OD, OH, OW, G, COg)`` instead (a
    channels-last array with its channels split by group): the planes are filled
    from, and the sums copied out into, that layout, and all else is the same.

    ``samples`` samples at a time, their input planes are copied into stride phases in
    parallel, then jobs of (sample, group, output depth, chunk of the output plane,
    block of 8 output channels: the blocks vary fastest) are dealt to ``threads``
    threads in contiguous ranges. So each thread reads the input planes of its own part
    of the output, every block of a chunk while they are in cache (mbnet_stem, the
    kernel alone: 0.47 against 0.55 ms with the chunks varying fastest, and 0.88 ms
    with the jobs dealt round-robin; whole calls 3-7% faster). A chunk runs
    over the flattened ``OH x Wq`` phase plane and its ``Wq - OW`` extra columns per row
    are dropped when it is copied out.
    """
    if channels_last:
        N, D, H, W, G, Cg = x.shape
        COg = out.shape[5]
        OD, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    else:
        N, G, Cg, D = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        H, W = x.shape[4], x.shape[5]
        COg = out.shape[2]
        OD, OH, OW = out.shape[3], out.shape[4], out.shape[5]
    blocks = wq.shape[1]
    KD, KH, KW = kernel
    Hq, Wq, block, offsets = plane_layout(OH, OW, KH, KW, stride, dilation, Cg)
    plane = OH * Wq
    chunks = (plane + CHUNK - 1) // CHUNK
    slab = G * D * Cg
    # (and two vectors' slack: the register blocks read past the last plane's end)
    xp = np.zeros(samples * slab * block + 2 * (VECTOR_BYTES // x.itemsize),
                  dtype=x.dtype)
    for n0 in range(0, N, samples):
        ns = min(samples, N - n0)
        if channels_last:
            for r in prange(ns * G * D):
                row = np.int64(r)
                n, g, d = n0 + row // (G * D), (row // D) % G, row % D
                _fill_group_planes(xp, np.int64(row * Cg * block), block, x, n, d, g,
                                   Hq, Wq, stride, pad)
        else:
            for r in prange(ns * slab):
                # np.int64: the prange index may be unsigned, and fill_plane is compiled
                # into this kernel once.
                row = np.int64(r)
                n, rest = n0 + row // slab, row % slab
                g, rest = rest // (D * Cg), rest % (D * Cg)
                d, c = rest // Cg, rest % Cg
                fill_plane(xp[row * block: (row + 1) * block], x[n, g, c, d], Hq, Wq,
                           Hq * Wq, stride, pad)
        jobs = ns * G * OD * blocks * chunks
        used = min(threads, jobs)
        for t in prange(used):
            acc = np.empty(8 * PITCH, dtype=x.dtype)
            outf = out.reshape(-1)
            for job in range(t * jobs // used, (t + 1) * jobs // used):
                b, rest = job % blocks, job // blocks
                chunk, rest = rest % chunks, rest // chunks
                od, rest = rest % OD, rest // OD
                g, n = rest % G, rest // G
                start = chunk * CHUNK
                length = min(CHUNK, plane - start)
                for o in range(8):
                    value = bias[g, min(b * 8 + o, COg - 1)]
                    for i in range(length):
                        acc[o * PITCH + i] = value
                for kd in range(KD):
                    i_d = od * stride[0] + kd * dilation[0] - pad[0]
                    if i_d < 0 or i_d >= D:
                        continue
                    # The group's Cg planes at this depth lie one after another.
                    first = ((n * G + g) * D + i_d) * Cg * block
                    _add_taps_by_blocks(acc, xp, first + start, length, offsets,
                                        wq[g, b, kd])
                if channels_last:
                    _store_chunk_last(acc, outf, n + n0, g, b, od, start, length, Wq,
                                      G, COg, OD, OH, OW)
                else:
                    _store_chunk(acc, outf, ((n + n0) * G + g) * COg, b, od, start,
                                 length, Wq, COg, OD, OH, OW)


@njit(**_JIT)
def _fill_group_planes(xp, first, block, x, n, d, g, Hq, Wq, stride, pad):
    """Copy the ``Cg`` channels of group ``g`` at depth ``d`` of sample ``n`` of the
    channels-last ``x`` ``(N, D, H, W, G, Cg)`` into their phase planes, ``block``
    elements apart from ``xp[first]`` (the layout of ``direct.plane_layout``), reading
    each position's ``Cg`` channels as one run. Only positions inside the input are
    written, as by ``direct.fill_plane``."""
    H, W, G, Cg = x.shape[2], x.shape[3], x.shape[4], x.shape[5]
    sh, sw = stride[1], stride[2]
    ph, pw = pad[1], pad[2]
    xf = x.reshape(-1)
    pitch = Hq * Wq
    for i_h in range(H):
        a, rq = (i_h + ph) % sh, (i_h + ph) // sh
        if rq >= Hq:
            continue
        src_row = (((n * x.shape[1] + d) * H + i_h) * W * G + g) * Cg
        # Phase by phase: no division per position (those took most of the time).
        for b in range(sw):
            # The phase's columns cq with 0 <= cq*sw + b - pw < W (ceil divisions).
            lo = max(0, -((b - pw) // sw))
            hi = min(Wq, -((b - pw - W) // sw))
            if hi <= lo:
                continue
            # Channel by channel: each plane's row written as one run, its inputs
            # read from the few cache lines of the input row, which stay in L1.
            # Unsigned indices (LLVM tests signed ones for wraparound).
            step = np.uint64(sw * G * Cg)
            for c in range(Cg):
                dst = np.uint64(first + c * block + (a * sw + b) * pitch + rq * Wq + lo)
                src = np.uint64(src_row + (lo * sw + b - pw) * G * Cg + c)
                for j in range(np.uint64(hi - lo)):
                    xp[dst + j] = xf[src + j * step]


@njit(**_JIT)
def _store_chunk_last(acc, outf, n, g, b, od, start, length, Wq, G, COg, OD, OH, OW):
    """:func:`_store_chunk` into the flattened channels-last ``out``
    ``(N, OD, OH, OW, G, COg)``: each position's up to 8 channels are one run."""
    m = np.uint64(min(8, COg - 8 * b))
    C = np.uint64(G * COg)
    pitch = np.uint64(PITCH)
    for r in range(start // Wq, min(OH, (start + length - 1) // Wq + 1)):
        lo = max(start, r * Wq)
        hi = min(start + length, r * Wq + OW)
        if hi <= lo:
            continue
        # Unsigned indices, advanced by additions.
        dst = np.uint64((((n * OD + od) * OH + r) * OW + lo - r * Wq) * G * COg
                        + g * COg + 8 * b)
        src = np.uint64(lo - start)
        for i in range(np.uint64(hi - lo)):
            for o in range(m):
                outf[dst + o] = acc[o * pitch + src + i]
            dst += C


@njit(**_JIT)
def _store_chunk(acc, outf, first, b, od, start, length, Wq, COg, OD, OH, OW):
    """Copy the accumulators of output channels ``8b..`` over flattened plane positions
    ``start..start+length`` into the flattened output ``outf``, whose channel ``first +
    8b + o`` (over ``N * G * COg``) starts at ``(first + 8b + o) * OD * OH * OW``,
    dropping the phase plane's extra columns. Flat indices, not a view of each output
    row: creating those views (reference counts shared by the threads) made the copy
    take longer than the taps (mbnet_stem, the kernel on one thread: 456 against 295 us).
    """
    for o in range(min(8, COg - 8 * b)):
        plane = ((first + 8 * b + o) * OD + od) * OH * OW
        for r in range(start // Wq, min(OH, (start + length - 1) // Wq + 1)):
            lo = max(start, r * Wq)
            hi = min(start + length, r * Wq + OW)
            if hi <= lo:
                continue
            # Unsigned indices: LLVM vectorises the copy (they cannot wrap around).
            dst = np.uint64(plane + r * OW + lo - r * Wq)
            src = np.uint64(o * PITCH + lo - start)
            for j in range(np.uint64(hi - lo)):
                outf[dst + j] = acc[src + j]
