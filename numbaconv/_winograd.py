"""Winograd F(2x2, 3x3): the GEMM path's form for unit-stride 3x3 kernels.

A ``(KD, 3, 3)`` kernel (2D, or 3D of any depth) with unit stride takes, per 2x2 block
of outputs and pair of channels, 16 multiplications instead of 36: 2.25x fewer, run as
16 GEMMs per depth tap (see :mod:`numbaconv._kernels.winograd`). The price is a pass
over the input (the row half of the input transform, into a padded tile layout), the
column half per task, the output transform, and the weight transform on every call
(``16 * C_out * C_in/groups * KD`` elements): it pays once there are ``MIN_TILES``
tiles per group (r50_3x3_14, 49 tiles of 256 channels, ran 1.17x slower than the
shifted GEMMs; 196 tiles of 128 channels 0.77x; r50_3x3_56, 784 tiles, 0.68x).

Tasks are runs of tiles in one group, sized so a thread's transformed tiles and products
(``TASK_BYTES``) stay in L2, and dealt evenly to the threads.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import config
from ._blas import single_threaded_blas
from ._kernels.blas import register_blas
from ._kernels.winograd import transform_weights, winograd_forward
from ._threads import kernel_launch
from ._workspace import scratch

# Bytes of transformed input tiles and products per task, at most (1-4 MiB measured
# alike; 512 KiB made the 16 GEMMs too thin).
TASK_BYTES = 2 << 20
# Input channels per group at least: each GEMM has depth Cg (16 channels: as fast as the
# shifted GEMMs).
MIN_CHANNELS = 16
# Output tiles per group at least (all samples and output planes): the weight transform
# and thin GEMMs cost more than the 2.25x saved below that.
MIN_TILES = 128


def tile_grid(out_spatial, kernel_depth, dilation) -> tuple:
    """``(Dp, TH, TW1)``: padded input depth, and the tile rows and tiles per row (one
    more, unused, per row) of each dilation phase, sized for the largest phase."""
    OD, OH, OW = out_spatial
    dd, dh, dw = dilation
    return (OD + (kernel_depth - 1) * dd, -(-OH // (2 * dh)), -(-OW // (2 * dw)) + 1)


def tiles_per_plane(out_spatial, dilation) -> int:
    """The 2x2 output tiles of one output plane, over all dilation phases."""
    _, OH, OW = out_spatial
    _, dh, dw = dilation
    rows = sum(-(-((OH - rh + dh - 1) // dh) // 2) for rh in range(dh))
    cols = sum(-(-((OW - rw + dw - 1) // dw) // 2) for rw in range(dw))
    return rows * cols


def packed_elements(n, groups, cg, grid, dilation) -> int:
    """Elements of the packed input (the rows' half of the input transform)."""
    dp, th, tw1 = grid
    return n * groups * cg * dp * dilation[1] * dilation[2] * 8 * (th * tw1 + 1)


def winograd_grid(n, groups, cg, kernel, stride, dilation, out_spatial, itemsize):
    """The tile grid ``(Dp, TH, TW1)`` if the Winograd form takes this convolution:
    a ``(KD, 3, 3)`` kernel, unit stride, ``MIN_CHANNELS`` input channels and
    ``MIN_TILES`` tiles per group, and a packed input within
    ``config.IM2COL_BUDGET_BYTES``; else None."""
    if tuple(kernel[1:]) != (3, 3) or tuple(stride) != (1, 1, 1) or cg < MIN_CHANNELS:
        return None
    if n * out_spatial[0] * tiles_per_plane(out_spatial, dilation) < MIN_TILES:
        return None
    grid = tile_grid(out_spatial, kernel[0], dilation)
    if packed_elements(n, groups, cg, grid, dilation) * itemsize > config.IM2COL_BUDGET_BYTES:
        return None
    return grid


def plan_tasks(n, groups, od, phases, grid, cg, cog, itemsize, threads):
    """Unit rows ``(n, g, od, phase, q0, q1, j0)`` (runs of tiles of one plane and
    phase, at column ``j0`` of their task) and task rows ``(u0, u1, tiles)`` (runs of
    units in one group): tasks of at most ``TASK_BYTES`` of tiles, as many as a
    multiple of the threads, so that no thread idles at the end."""
    _, th, tw1 = grid
    plane = th * tw1
    limit = max(1, TASK_BYTES // (16 * (cg + cog) * itemsize))
    total = n * groups * od * phases * plane
    count = max(threads, math.ceil(total / limit))
    count = threads * math.ceil(count / threads)
    target = math.ceil(total / count)
    units, tasks = [], []
    for i in range(n):
        for g in range(groups):
            start, tiles = len(units), 0
            for z in range(od):
                for phase in range(phases):
                    q = 0
                    while q < plane:
                        if tiles == target:
                            tasks.append((start, len(units), tiles))
                            start, tiles = len(units), 0
                        step = min(plane - q, target - tiles)
                        units.append((i, g, z, phase, q, q + step, tiles))
                        tiles += step
                        q += step
            tasks.append((start, len(units), tiles))
    return (np.array(units, dtype=np.int64).reshape(-1, 7),
            np.array(tasks, dtype=np.int64).reshape(-1, 3))


def tile_pitch(tiles, itemsize) -> int:
    """Elements between the rows of a thread's tile buffers: at least ``tiles``, and an
    odd multiple of 64 bytes, so that the 16 rows a tile's transform writes (or reads)
    fall into 16 different L1 sets. At a multiple of 4 KiB they shared one set and the
    input transform ran 5x slower."""
    lines = -(-tiles * itemsize // 64)
    lines += 1 - lines % 2
    return lines * 64 // itemsize


def conv_winograd(x6, w6, bias2, out, dilation, pad, grid):
    """Run the Winograd form on normalised arrays, writing ``out``: arrays and tuples as
    for :func:`numbaconv._direct.conv_direct` (unit stride), ``grid`` from
    :func:`winograd_grid`."""
    register_blas()
    N, G, Cg = x6.shape[:3]
    COg, KD = w6.shape[1], w6.shape[3]
    phases = dilation[1] * dilation[2]
    threads = numba.get_num_threads()
    units, tasks = plan_tasks(N, G, out.shape[3], phases, grid, Cg, COg, out.itemsize,
                              threads)
    pitch = tile_pitch(int(tasks[:, 2].max()), out.itemsize)
    with single_threaded_blas, kernel_launch:
        u = scratch("winograd_weight", (G, KD, COg, 16, Cg), out.dtype)
        transform_weights(w6, u)
        s = scratch("padded", (N, G, Cg, grid[0], phases, 4, 2, grid[1] * grid[2] + 1),
                    out.dtype)
        vbufs = scratch("winograd_input", (threads, Cg * 16 * pitch), out.dtype)
        mbufs = scratch("winograd_products", (threads, COg * 16 * pitch), out.dtype)
        ybufs = scratch("winograd_output", (threads, 4 * pitch), out.dtype)
        rbufs = scratch("winograd_rows", (threads, 2 * grid[1] + 2, 2, grid[2]), out.dtype)
        winograd_forward(x6, u, bias2, out, tuple(dilation), tuple(pad), grid, s, units,
                         tasks, vbufs, mbufs, ybufs, rbufs, pitch)
    return out
