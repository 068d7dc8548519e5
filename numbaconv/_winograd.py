"""Winograd F(4x4, 3x3): the GEMM path's form for unit-stride 3x3 kernels.

A ``(KD, 3, 3)`` kernel (2D, or 3D of any depth) with unit stride takes, per 4x4 block
of outputs and pair of channels, 36 multiplications instead of 144: 4x fewer, run as 36
GEMMs per depth tap (see :mod:`numbaconv._kernels.winograd`). The price is packing the
input (the row half of the input transform, into a tile layout), the column half, the
output transform, and the weight transform (``36 * C_out * C_in/groups * KD``
elements), on every functional call; a layer transforms its weight once and keeps it
(:func:`transform_weight`, :mod:`numbaconv._weight_cache`). Whether that pays is the
cost model's call (:func:`numbaconv._plan.path_forms`): it does for r50_3x3_56 (0.43
against the shifted GEMMs' 0.8 ms) and c3d (31 against 66 ms), not for deeplab_d2 (256
channels, 64 tiles in 4 dilation phases).

F(2x2, 3x3) (16 multiplications per 2x2 block, 2.25x fewer) came first; F(4x4) ran
0.55-0.8x its time wherever either beat the shifted GEMMs. Its float32 error, about 1e-5
of the output's scale with 256 input channels against 5e-7 for F(2x2), stays well
inside SPEC.md's 1e-4.

Tasks are runs of tile rows in one group, sized by ``config.WINOGRAD_TASK_BYTES``, and dealt evenly to
the threads.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import config
from ._blas import single_threaded_blas
from ._kernels.blas import register_blas
from ._compile import Kernel, prepare_all
from ._kernels import winograd as _kernels
from ._threads import kernel_launch
from ._workspace import scratch

transform_weights = Kernel(_kernels.transform_weights, "winograd")
pack_planes = Kernel(_kernels.pack_planes, "winograd_3d")
winograd_forward = Kernel(_kernels.winograd_forward, "winograd")
run_shares = Kernel(_kernels.run_shares, "winograd")

# Points of the transformed tile (6x6), and outputs per tile side.
POINTS = 36
TILE = 4


def tile_grid(out_spatial, kernel_depth, dilation) -> tuple:
    """``(Dp, TH, TW1)``: padded input depth, and the tile rows and tiles per row (one
    more, unused, per row) of each dilation phase, sized for the largest phase."""
    OD, OH, OW = out_spatial
    dd, dh, dw = dilation
    return (OD + (kernel_depth - 1) * dd, -(-OH // (TILE * dh)), -(-OW // (TILE * dw)) + 1)


def winograd_grid(n, groups, cg, cog, kernel, stride, dilation, out_spatial, itemsize,
                  threads, budget):
    """The tile grid ``(Dp, TH, TW1)`` if the Winograd form can take this convolution:
    a ``(KD, 3, 3)`` kernel, unit stride, ``config.WINOGRAD_MIN_CHANNELS`` input channels per group and
    buffers within ``budget`` bytes; else None."""
    if tuple(kernel[1:]) != (3, 3) or tuple(stride) != (1, 1, 1) or cg < config.WINOGRAD_MIN_CHANNELS:
        return None
    grid = tile_grid(out_spatial, kernel[0], dilation)
    extra = extra_elements(n, groups, cg, cog, kernel[0], grid, dilation[1] * dilation[2],
                           itemsize, threads)
    if extra * itemsize > budget:
        return None
    return grid


def extra_elements(n, groups, cg, cog, kd, grid, phases, itemsize, threads) -> int:
    """Elements the Winograd form allocates besides the output: the transformed weight,
    each thread's buffers (at most ``config.WINOGRAD_TASK_BYTES`` of tiles, or a tile row), and with a
    depth kernel the packed input."""
    dp, th, tw1 = grid
    tiles = max(tw1, min(th * tw1, task_tiles(cg, cog, itemsize)))
    rows = th if kd > 1 else -(-tiles // tw1)
    per_thread = (POINTS * (cg + cog) * tiles + 40 * tiles + 24 * (rows * tw1 + 1)
                  + (4 * rows + 2) * 4 * tw1 + 24 * rows * tw1)
    packed = n * groups * cg * dp * phases * 24 * (th * tw1 + 1) if kd > 1 else 0
    return groups * kd * POINTS * cog * cg + threads * per_thread + packed


def task_tiles(cg, cog, itemsize) -> int:
    """Tiles per task at most: ``config.WINOGRAD_TASK_BYTES`` of transformed input and products."""
    return max(1, config.WINOGRAD_TASK_BYTES // (POINTS * (cg + cog) * itemsize))


def plan_tasks(n, groups, od, phases, grid, cg, cog, itemsize, threads):
    """Unit rows ``(n, g, od, phase, tr0, tr1, j0)`` (runs of tile rows of one plane and
    phase, at column ``j0`` of their task) and task rows ``(u0, u1, tiles)`` (runs of
    units in one group): tasks of at most ``task_tiles`` tiles (but a tile row at
    least), as many as a multiple of the threads where there are rows enough, so that
    no thread idles at the end."""
    _, th, tw1 = grid
    rows_total = n * groups * od * phases * th
    limit = max(1, task_tiles(cg, cog, itemsize) // tw1)
    count = max(threads, math.ceil(rows_total / limit))
    count = threads * math.ceil(count / threads)
    target = math.ceil(rows_total / count)
    units, tasks = [], []
    for i in range(n):
        for g in range(groups):
            start, rows = len(units), 0
            for z in range(od):
                for phase in range(phases):
                    tr = 0
                    while tr < th:
                        if rows == target:
                            tasks.append((start, len(units), rows * tw1))
                            start, rows = len(units), 0
                        step = min(th - tr, target - rows)
                        units.append((i, g, z, phase, tr, tr + step, rows * tw1))
                        rows += step
                        tr += step
            tasks.append((start, len(units), rows * tw1))
    return (np.array(units, dtype=np.int64).reshape(-1, 7),
            np.array(tasks, dtype=np.int64).reshape(-1, 3))


def tile_pitch(tiles, itemsize) -> int:
    """Elements between the rows of a thread's tile buffers: at least ``tiles``, and an
    odd multiple of 64 bytes, so that the rows a tile's transform writes (or reads) fall
    into different L1 sets. At a multiple of 4 KiB they shared one set and the input
    transform ran 5x slower."""
    lines = -(-tiles * itemsize // 64)
    lines += 1 - lines % 2
    return lines * 64 // itemsize


def conv_winograd(x6, w6, bias2, out, dilation, pad, grid, threads, units, tasks,
                  weight=None) -> bool:
    """Run the Winograd form on normalised arrays, writing ``out``: arrays and tuples as
    for :func:`numbaconv._direct.conv_direct` (unit stride), ``grid`` from
    :func:`winograd_grid`, on ``threads`` threads, with the tables of
    :func:`plan_tasks`. ``weight``, if given, is ``w6``'s :class:`TransformedWeight`
    (a layer's, cached between calls); else the weight is transformed in this call.
    Returns False if the input or the weight holds a NaN or an Inf (which the transforms
    would spread across a tile), with ``out`` possibly partly written: the caller then
    runs another form, which writes all of it."""
    if weight is not None and not weight.finite:
        return False
    register_blas()
    N, G, Cg = x6.shape[:3]
    COg, KD = w6.shape[1], w6.shape[3]
    phases = dilation[1] * dilation[2]
    most = int(tasks[:, 2].max())
    pitch = tile_pitch(most, out.itemsize)
    _, th, tw1 = grid
    rows = int((units[:, 5] - units[:, 4]).max())
    with single_threaded_blas, kernel_launch:
        u = (scratch("winograd_weight", (G, KD, COg, POINTS, Cg), out.dtype)
             if weight is None else weight.u)
        tbufs = scratch("winograd_taps", (threads, 27, Cg), out.dtype)
        vbufs = scratch("winograd_input", (threads, Cg * POINTS * pitch), out.dtype)
        mbufs = scratch("winograd_products", (threads, COg * POINTS * pitch), out.dtype)
        ybufs = scratch("winograd_output", (threads, 40 * pitch), out.dtype)
        # Per thread: a unit's packed rows of one channel; and, while packing them, the
        # padded input rows and their row combinations (of a whole plane with KD > 1,
        # where all planes are packed first, into ``planes``).
        if KD > 1:
            rows = th
            planes = scratch("padded", (N, G, Cg, grid[0], phases, 6, 4, th * tw1 + 1),
                             out.dtype)
        else:
            planes = np.empty((1,) * 8, out.dtype)
        sbufs = scratch("winograd_packed", (threads, 24 * (rows * tw1 + 1)), out.dtype)
        rbufs = scratch("winograd_rows", (threads, (4 * rows + 2) * 4 * tw1
                                          + 24 * rows * tw1), out.dtype)
        pack = (x6, w6, u, bias2, out, planes, units, tasks, tbufs, vbufs, mbufs, ybufs,
                sbufs, rbufs, *dilation, *pad, tw1, pitch)
        shares = ((winograd_forward,) + ((transform_weights,) if weight is None else ())
                  + ((pack_planes,) if KD > 1 else ()))
        prepare_all((share, (0, threads) + pack) for share in shares)
        return ((weight is not None or _all_finite(transform_weights, threads, pack))
                and (KD == 1 or _all_finite(pack_planes, threads, pack))
                and _all_finite(winograd_forward, threads, pack))


class TransformedWeight(NamedTuple):
    """A weight in the Winograd form's layout, made once for many calls (a layer's)."""

    u: np.ndarray   # (G, KD, COg, 36, Cg): G w G^T per channel pair and depth tap
    finite: bool    # whether the weight held no NaN or Inf (else the form is not run)


def transform_weight(w6, threads) -> TransformedWeight:
    """``w6`` ``(G, COg, Cg, KD, 3, 3)`` transformed for :func:`conv_winograd`, on
    ``threads`` threads (the transform's share of a call, run alone)."""
    G, COg, Cg, KD = w6.shape[:4]
    u = np.empty((G, KD, COg, POINTS, Cg), w6.dtype)
    with kernel_launch:
        tbufs = scratch("winograd_taps", (threads, 27, Cg), w6.dtype)
        # The share reads only w6, u and tbufs; the rest are placeholders of the types
        # conv_winograd passes, so that its compiled signature is the one used.
        six, one = np.empty((1,) * 6, w6.dtype), np.empty((1, 1), w6.dtype)
        table = np.zeros((1, 7), np.int64)
        planes = np.empty((1,) * 8, w6.dtype)
        pack = (six, w6, u, one, six, planes, table, table[:, :3].copy(), tbufs,
                one, one, one, one, one, 1, 1, 1, 0, 0, 0, 1, 1)
        prepare_all([(transform_weights, (0, threads) + pack)])
        finite = _all_finite(transform_weights, threads, pack)
    return TransformedWeight(u, finite)


def _all_finite(share, threads, args) -> bool:
    """Run ``share(th, threads, *args)`` for every thread ``th`` at once (by
    ``run_shares``; the caller has prepared ``share``); whether every share returned 0
    (none met a NaN or an Inf)."""
    address = share.address(0, threads, *args)
    if address is None:  # NUMBA_DISABLE_JIT=1: the shares one after another
        return sum(share(th, threads, *args) for th in range(threads)) == 0
    return run_shares(address, threads, args) == 0
