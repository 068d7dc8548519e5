"""The stem kernel: a few input channels (RGB images and video), many output channels
(Numba, parallel over blocks of output channels and positions).

Layouts as in :mod:`numbaconv._kernels.direct`: ``x`` ``(N, G, Cg, D, H, W)``, ``out``
``(N, G, COg, OD, OH, OW)``, C-contiguous, one dtype; 1D and 2D calls reach it with
leading spatial axes of size 1.

A stem has too few input channels for a GEMM to be deep (a 3-channel 7x7 kernel gives
147-deep columns, written and read again at memory speed) and too many output channels
for the channel-wise kernel's one-output axpys, which load and store the accumulator
for every few taps. Here each input plane is copied once into zero-padded stride phases
(``direct.plane_layout``), so that every (input channel, tap) pair reads one contiguous
run. A job then holds the accumulators of 8 output channels over a chunk of
``CHUNK`` positions in L1, and each pass over them adds 4 taps to all 8: 4 input loads
and 8 accumulator loads and stores feed 32 FMAs. The weight comes packed as
``(G, ceil(COg/8), KD, T4, 8)``: per block of 8 output channels and depth tap, the
``Cg*KH*KW`` (input channel, tap) pairs, zero-padded to a multiple of 4, by channel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import CACHE, FASTMATH
from .direct import fill_plane, plane_layout

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)

# Positions per job: the 8 accumulator rows take 24.5 KiB in float32. Alone, the tap
# passes ran fastest at 384 (resnet_conv1 on one thread: 47 GMAC/s, 34 at 768), but the
# whole kernel on two threads at 768 (0.80-0.95x the time at 384, 0.82x on mbnet_stem):
# fewer jobs, fewer and longer runs copied out.
CHUNK = 768
# The rows' distance apart: no two rows share their addresses' low 12 bits, or the
# loads of one stall behind the stores of another (at a pitch of 512: 20 GMAC/s).
PITCH = CHUNK + 16


@njit(**_JIT)
def _add_four_taps(acc, xp, start, length, offsets, w, t):
    """``acc[o*PITCH + i] += sum_{j<4} w[t+j, o] * xp[offsets[t+j] + start + i]`` for the
    8 rows ``o`` and ``i < length``."""
    x0 = xp[offsets[t] + start: offsets[t] + start + length]
    x1 = xp[offsets[t + 1] + start: offsets[t + 1] + start + length]
    x2 = xp[offsets[t + 2] + start: offsets[t + 2] + start + length]
    x3 = xp[offsets[t + 3] + start: offsets[t + 3] + start + length]
    # Scalars, not rows of w: LLVM cannot tell w from acc, so it would reload them
    # every iteration. The rows of acc sit a constant PITCH apart, which lets it
    # vectorise without run-time overlap checks between them.
    a0, a1, a2, a3, a4, a5, a6, a7 = w[t]
    b0, b1, b2, b3, b4, b5, b6, b7 = w[t + 1]
    c0, c1, c2, c3, c4, c5, c6, c7 = w[t + 2]
    d0, d1, d2, d3, d4, d5, d6, d7 = w[t + 3]
    for i in range(length):
        u, v, p, q = x0[i], x1[i], x2[i], x3[i]
        acc[i] += a0 * u + b0 * v + c0 * p + d0 * q
        acc[PITCH + i] += a1 * u + b1 * v + c1 * p + d1 * q
        acc[2 * PITCH + i] += a2 * u + b2 * v + c2 * p + d2 * q
        acc[3 * PITCH + i] += a3 * u + b3 * v + c3 * p + d3 * q
        acc[4 * PITCH + i] += a4 * u + b4 * v + c4 * p + d4 * q
        acc[5 * PITCH + i] += a5 * u + b5 * v + c5 * p + d5 * q
        acc[6 * PITCH + i] += a6 * u + b6 * v + c6 * p + d6 * q
        acc[7 * PITCH + i] += a7 * u + b7 * v + c7 * p + d7 * q


@njit(parallel=True, **_JIT)
def stem_conv(x, wq, bias, out, kernel, stride, dilation, pad, samples, threads):
    """Write ``out``: the convolution of ``x`` with the packed weight ``wq`` (see the
    module docstring) plus ``bias`` ``(G, COg)``.

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
    N, G, Cg, D = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    COg = out.shape[2]
    OD, OH, OW = out.shape[3], out.shape[4], out.shape[5]
    blocks, T4 = wq.shape[1], wq.shape[3]
    KD, KH, KW = kernel
    Hq, Wq, block, taps = plane_layout(OH, OW, KH, KW, stride, dilation, Cg)
    # Padding taps, with zero weights, read offset 0: the first tap's input, so a NaN
    # or Inf there (0 * NaN is NaN) reaches only outputs that tap gives it to anyway.
    offsets = np.zeros(T4, dtype=np.int64)
    offsets[: taps.shape[0]] = taps
    plane = OH * Wq
    chunks = (plane + CHUNK - 1) // CHUNK
    slab = G * D * Cg
    xp = np.zeros(samples * slab * block, dtype=x.dtype)
    for n0 in range(0, N, samples):
        ns = min(samples, N - n0)
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
                    planes = xp[first: first + Cg * block]
                    wb = wq[g, b, kd]
                    for t4 in range(0, T4, 4):
                        _add_four_taps(acc, planes, start, length, offsets, wb, t4)
                _store_chunk(acc, out[n + n0, g], b, od, start, length, Wq, COg)


@njit(**_JIT)
def _store_chunk(acc, out, b, od, start, length, Wq, COg):
    """Copy the accumulators of output channels ``8b..`` over flattened plane positions
    ``start..start+length`` into ``out`` ``(COg, OD, OH, OW)``, dropping the phase
    plane's extra columns."""
    OH, OW = out.shape[2], out.shape[3]
    for o in range(min(8, COg - 8 * b)):
        for r in range(start // Wq, min(OH, (start + length - 1) // Wq + 1)):
            lo = max(start, r * Wq)
            hi = min(start + length, r * Wq + OW)
            if hi <= lo:
                continue
            orow = out[8 * b + o, od, r]
            run = acc[o * PITCH + lo - start: o * PITCH + hi - start]
            col = lo - r * Wq
            for j in range(hi - lo):
                orow[col + j] = run[j]
