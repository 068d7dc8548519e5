"""The im2col + GEMM path: receptive fields as matrix columns, the product by BLAS.

Three forms share the path (``method="im2col"``), all of them GEMMs by BLAS: unit-stride
3x3 kernels take Winograd F(4x4, 3x3) where it pays (:mod:`numbaconv._winograd`), other
kernels with enough channels and positions the shifted-GEMM form (no columns: one GEMM
per tap on a padded copy split into its stride phases), and the rest the column form
described here.

The work is cut into tasks of one sample, one group and a block of output positions,
dealt to Numba's threads (:mod:`numbaconv._kernels.im2col`). Each task builds its
columns in its thread's buffer and multiplies them, by a single-threaded BLAS GEMM, by
the weight ``(COg, K)`` straight into its place in the output, which already has the
product's layout ``(G, COg, P)`` and was filled with the bias first: neither batches nor
groups nor the bias cost a pass. Column buffers take at most ``config.IM2COL_TASK_BYTES`` per thread
and ``config.IM2COL_BUDGET_BYTES`` in all. (Tasks small enough for their columns to
stay in L2 were slower: OpenBLAS runs a single-threaded GEMM best from about 8 MiB of
columns up, 1.10 ms against 1.26 ms at 512 KiB on r50_3x3_56.)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from . import config
from ._blas import single_threaded_blas
from ._channels_last import conv_blocks
from ._kernels.blas import register_blas
from ._compile import Kernel
from ._kernels import im2col as _kernels
from ._threads import kernel_launch
from ._winograd import conv_winograd
from ._workspace import scratch

im2col_forward = Kernel(_kernels.im2col_forward, "columns")
im2col_forward_shared = Kernel(_kernels.im2col_forward_shared, "shared")
shifted_gemm_forward = Kernel(_kernels.shifted_gemm_forward, "shifted")
im2col_weight_grad = Kernel(_kernels.im2col_weight_grad, "weight_grad")
shifted_weight_grad = Kernel(_kernels.shifted_weight_grad, "shifted_grad")



class GemmForm(NamedTuple):
    """How the GEMM path (``method="im2col"``) runs one convolution: made by
    :func:`numbaconv._plan.plan_gemm`, only read by :func:`conv_im2col`."""

    name: str                # "winograd" | "shifted" | "blocks" | "shared" | "columns"
    threads: int
    grid: tuple = None       # winograd: the tile grid (see _winograd.tile_grid)
    padded: tuple = None     # shifted: the padded input's (Dp, Hp, Wp)
    positions: int = 0       # columns / shared: output positions per task
    channels: int = 0        # columns / shared: output channels per task
    nonfinite: object = None  # winograd: the form that takes data with NaN or Inf
    tables: tuple = None     # winograd: (units, tasks) of _winograd.plan_tasks
    last_tables: tuple = None  # winograd, channels-last calls: the channels-last
                               # kernel's (rows without the unused tile)


def plan_tasks(n, groups, k, cog, positions, itemsize, threads, budget,
               min_tasks_per_thread=None):
    """``(positions_per_task, channels_per_task)`` for the column form of im2col.

    A task's columns take at most ``config.IM2COL_TASK_BYTES`` (and all threads' buffers at most the
    ``budget``). Where that leaves fewer than ``min_tasks_per_thread`` tasks per thread,
    tasks are cut further by output positions while each keeps ``config.IM2COL_MIN_TASK_POSITIONS``;
    past that, by output channels (each channel block then rebuilds the columns, a
    small cost next to its GEMM). On r50_3x3_7 (49 positions, 512 channels) halves of
    the channels ran a single-threaded GEMM at 169 GFLOP/s, blocks of 25 positions at
    110; but cutting r50_3x3_14 (196 positions) 6 ways by channels was 2x slower than
    2 ways by positions.
    """
    if min_tasks_per_thread is None:
        min_tasks_per_thread = config.IM2COL_MIN_TASKS_PER_THREAD
    limit = max(1, min(config.IM2COL_TASK_BYTES, budget // threads) // itemsize)
    pc = max(1, min(positions, limit // max(k, 1)))
    cc = cog
    want = min_tasks_per_thread * threads
    if n * groups * math.ceil(positions / pc) < want:
        pieces = math.ceil(want / (n * groups))
        if positions >= pieces * config.IM2COL_MIN_TASK_POSITIONS:
            pc = min(pc, math.ceil(positions / pieces))
        else:
            cc = max(min(cog, config.IM2COL_MIN_TASK_CHANNELS), math.ceil(cog / pieces))
    return pc, cc


def columns_form(n, groups, cg, cog, kernel, stride, pad, in_spatial, out_spatial,
                 itemsize, threads, budget) -> GemmForm:
    """The column form: its tasks, and whether they share one set of columns (few
    positions, cut by channels: the columns are built once for all channel blocks)."""
    k = cg * math.prod(kernel)
    p = math.prod(out_spatial)
    pc, cc = plan_tasks(n, groups, k, cog, p, itemsize, threads, budget)
    shared = (cc < cog and k * p * itemsize <= budget
              and not is_pointwise(kernel, stride, pad, in_spatial, out_spatial))
    return GemmForm("shared" if shared else "columns", threads, positions=pc, channels=cc)


def columns_extra_bytes(form: GemmForm, k, positions, itemsize) -> int:
    """Bytes the column form allocates besides the output: a column buffer per thread
    (or the shared columns)."""
    if form.name == "shared":
        return k * positions * itemsize
    return form.threads * k * form.positions * itemsize


def is_pointwise(kernel, stride, pad, in_spatial, out_spatial) -> bool:
    """A 1x1 convolution without stride or padding: the input already is the columns."""
    return (tuple(kernel) == (1, 1, 1) and tuple(stride) == (1, 1, 1)
            and tuple(pad) == (0, 0, 0) and tuple(in_spatial) == tuple(out_spatial))


def _tasks(n, groups, cog, positions, pc, cc):
    """Task rows ``(n, g, p0, p1, c0, c1)`` of the column form."""
    rows = [(i, g, p0, min(positions, p0 + pc), c0, min(cog, c0 + cc))
            for i in range(n) for g in range(groups)
            for p0 in range(0, positions, pc) for c0 in range(0, cog, cc)]
    return np.array(rows, dtype=np.int64).reshape(-1, 6)


def shifted_layout(n, groups, cg, kernel, stride, dilation, pad, in_spatial, out_spatial,
                   itemsize, budget):
    """``(P, Dq, Hq, Wq)`` of the padded input if the shifted-GEMM form applies (at
    least ``config.SHIFTED_MIN_CHANNELS`` input channels per group and
    ``config.SHIFTED_MIN_TAPS`` taps, not a plain 1x1 whose input already is its
    columns, padded inputs within the ``budget``, ``config.SHIFTED_MIN_POSITIONS``
    positions), else None. The padded input is split into its ``P = sd*sh*sw`` stride
    phases (``_kernels.im2col._pad_plane``), each ``Dq x Hq x Wq`` with ``Dq = OD +
    (KD-1)*dd // sd`` and so on. Each tap is then one shifted GEMM, as at unit stride
    (``P = 1``: the padded input itself)."""
    if cg < config.SHIFTED_MIN_CHANNELS or math.prod(kernel) < config.SHIFTED_MIN_TAPS:
        return None
    if is_pointwise(kernel, stride, pad, in_spatial, out_spatial):
        return None
    padded = (math.prod(stride),) + tuple(o + (k - 1) * d // s for o, k, d, s in
                                          zip(out_spatial, kernel, dilation, stride))
    if n * groups * cg * math.prod(padded) * itemsize > budget:
        return None
    if n * shifted_positions(padded, out_spatial) < config.SHIFTED_MIN_POSITIONS:
        return None
    return padded


def shifted_positions(padded, out_spatial) -> int:
    """Output positions the shifted form computes per sample and group, counted over
    the padded pitch (the last valid one is ``(OD-1, OH-1, OW-1)``)."""
    hp, wp = padded[-2:]
    return (out_spatial[0] - 1) * hp * wp + (out_spatial[1] - 1) * wp + out_spatial[2]


def _shifted_tasks(n, groups, cog, positions, threads):
    """Task rows ``(n, g, q0, q1, c0, c1)``: chunks of ``config.SHIFTED_CHUNK`` positions, and
    blocks of output channels too when that leaves fewer than two tasks per thread."""
    chunks = math.ceil(positions / config.SHIFTED_CHUNK)
    want = 2 * threads
    cc = cog
    if n * groups * chunks < want:
        pieces = math.ceil(want / (n * groups * chunks))
        cc = max(min(cog, config.IM2COL_MIN_TASK_CHANNELS), math.ceil(cog / pieces))
    rows = [(i, g, q0, min(positions, q0 + config.SHIFTED_CHUNK), c0, min(cog, c0 + cc))
            for i in range(n) for g in range(groups)
            for q0 in range(0, positions, config.SHIFTED_CHUNK) for c0 in range(0, cog, cc)]
    return np.array(rows, dtype=np.int64).reshape(-1, 6)


def stride_phases(x6, sw):
    """``x6`` ``(N, G, Cg, D, H, W)`` with each row split into its ``sw`` stride phases,
    ``(N, G, Cg, D, H, sw, ceil(W / sw))`` (a view when ``sw == 1``)."""
    if sw == 1:
        return x6.reshape(x6.shape[:5] + (1, x6.shape[5]))
    W = x6.shape[5]
    if W % sw == 0:  # one pass: 0.13 against 0.26 ms (zero-padded copy, then split)
        return np.ascontiguousarray(
            x6.reshape(x6.shape[:5] + (W // sw, sw)).swapaxes(-1, -2))
    wq = -(-W // sw)
    split = np.empty(x6.shape[:5] + (sw, wq), dtype=x6.dtype)
    for phase in range(sw):
        filled = len(range(phase, W, sw))
        split[..., phase, :filled] = x6[..., phase::sw]
        split[..., phase, filled:] = 0
    return split


def conv_im2col(x6, w6, bias2, out, stride, dilation, pad, form: GemmForm, weight=None):
    """Run the im2col + GEMM path on normalised arrays, writing ``out``, in ``form``.

    Arrays and tuples as for :func:`numbaconv._direct.conv_direct`. ``weight`` is
    ``w6`` transformed ahead for the Winograd form (``_winograd.transform_weight``,
    cached by a layer), or None. The Winograd form hands data holding NaN or Inf to
    ``form.nonfinite`` (its transforms would spread them beyond their receptive fields).
    """
    if form.name == "blocks":
        n, _, c_in = x6.shape[:3]
        c_out = w6.shape[1]
        return conv_blocks(x6.reshape((n, c_in) + x6.shape[3:]),
                           w6.reshape((c_out, c_in) + w6.shape[3:]), bias2.reshape(c_out),
                           out.reshape((n, c_out) + out.shape[3:]), tuple(stride),
                           tuple(dilation), tuple(pad), channels_first=True)
    register_blas()
    if form.name == "winograd":
        if conv_winograd(x6, w6, bias2, out, tuple(dilation), tuple(pad), form.grid,
                         form.threads, *form.tables, weight=weight):
            return out
        form = form.nonfinite
    N, G, Cg = x6.shape[:3]
    COg = w6.shape[1]
    kernel = tuple(w6.shape[3:])
    out_spatial = tuple(out.shape[3:])
    if form.name == "shifted":
        taps = math.prod(kernel)
        wt = np.ascontiguousarray(
            w6.reshape(G, COg, Cg, taps).transpose(0, 3, 1, 2))  # (G, taps, COg, Cg)
        positions = shifted_positions(form.padded, out_spatial)
        tasks = _shifted_tasks(N, G, COg, positions, form.threads)
        with single_threaded_blas, kernel_launch:
            xp = scratch("padded", (N, G, Cg, math.prod(form.padded)), out.dtype)
            cbufs = scratch("accumulators", (form.threads, COg * config.SHIFTED_CHUNK), out.dtype)
            shifted_gemm_forward(x6, wt, bias2, out, kernel, tuple(stride), tuple(dilation),
                                 tuple(pad), form.padded, xp, tasks, cbufs)
        return out
    P = math.prod(out_spatial)
    w3 = w6.reshape(G, COg, -1)
    K = w3.shape[2]
    if form.name == "shared":
        with single_threaded_blas, kernel_launch:
            im2col_forward_shared(stride_phases(x6, stride[2]), w3, bias2,
                                  out.reshape(N, G, COg, P),
                                  scratch("columns", (K, P), out.dtype),
                                  kernel, tuple(stride), tuple(dilation), tuple(pad),
                                  out_spatial, form.channels, form.threads, x6.shape[5])
        return out
    tasks = _tasks(N, G, COg, P, form.positions, form.channels)
    pointwise = is_pointwise(kernel, stride, pad, x6.shape[3:], out_spatial)
    threads = min(form.threads, len(tasks))
    with single_threaded_blas, kernel_launch:
        cols = scratch("columns", (threads, K * form.positions), out.dtype)
        im2col_forward(stride_phases(x6, stride[2]), w3, bias2, out.reshape(N, G, COg, P),
                       tasks, kernel, tuple(stride), tuple(dilation), tuple(pad),
                       out_spatial, pointwise, cols, x6.shape[5])
    return out


def im2col_weight_grad_of(x6, g4, kernel, stride, dilation, pad, out_spatial):
    """Weight gradient ``(G, COg, Cg * prod(kernel))`` from the input ``x6`` (as for the
    forward) and the output gradient ``g4`` ``(N, G, COg, P)``: per task, the output
    gradient block times the columns' transpose, summed over tasks in one partial sum
    per thread (no two threads add into the same array)."""
    register_blas()
    N, G, Cg = x6.shape[:3]
    COg = g4.shape[2]
    K = Cg * math.prod(kernel)
    P = g4.shape[3]
    threads, budget = numba.get_num_threads(), config.IM2COL_BUDGET_BYTES
    padded = shifted_layout(N, G, Cg, tuple(kernel), tuple(stride), tuple(dilation),
                            tuple(pad), x6.shape[3:], tuple(out_spatial), g4.itemsize,
                            budget)
    if padded is not None:
        return _shifted_weight_grad(x6, g4, kernel, stride, dilation, pad, out_spatial,
                                    padded)
    pc, cc = plan_tasks(N, G, K, COg, P, g4.itemsize, threads, budget, 1)
    owned = owns_channel_blocks(N, G, COg, P, threads)
    if owned:
        cc = COg // threads
    tasks = _tasks(N, G, COg, P, pc, cc)
    threads = min(threads, len(tasks))
    if owned:
        partial = np.empty((1, G, COg, K), dtype=g4.dtype)
    else:
        partial = np.zeros((threads, G, COg, K), dtype=g4.dtype)
    pointwise = is_pointwise(tuple(kernel), tuple(stride), tuple(pad), x6.shape[3:],
                             tuple(out_spatial))
    with single_threaded_blas, kernel_launch:
        cols = scratch("columns", (threads, K * pc), g4.dtype)
        im2col_weight_grad(stride_phases(x6, stride[2]), g4, partial, tasks, tuple(kernel),
                           tuple(stride), tuple(dilation), tuple(pad), tuple(out_spatial),
                           pointwise, cols, x6.shape[5], threads)
    return partial[0] if owned else partial.sum(axis=0)


def owns_channel_blocks(n, groups, cog, positions, threads) -> bool:
    """Whether the column weight gradient gives each thread its own block of output
    channels (writing one gradient, with no per-thread partial sums to zero and add)
    rather than its own positions. Each thread then builds the columns of all
    positions: worth it where the gradient (``groups * cog * K`` per thread, zeroed and
    summed) outweighs the columns (``K * positions * n``). r50_3x3_14's backward: the
    partial sums cost 0.55 ms of 3.8."""
    return (threads > 1 and cog % threads == 0 and cog // threads >= 16
            and groups * cog * threads > n * positions * (threads - 1))


def _shifted_weight_grad(x6, g4, kernel, stride, dilation, pad, out_spatial, padded):
    """The weight gradient in the shifted form: one GEMM per tap and block of positions,
    of depth the block's positions (see ``shifted_weight_grad``)."""
    N, G, Cg = x6.shape[:3]
    COg = g4.shape[2]
    taps = math.prod(kernel)
    Q = shifted_positions(padded, out_spatial)
    threads = numba.get_num_threads()
    # Enough tasks for every thread, and an even share each (9 taps on 2 threads would
    # leave one thread idle for a ninth of the time).
    pieces = max(1, math.ceil(2 * threads / (N * G * taps)))
    if (N * G * taps * pieces) % threads:
        pieces *= threads
    step = math.ceil(Q / pieces)
    tasks = np.array([(n, g, tap, q0, min(Q, q0 + step)) for n in range(N)
                      for g in range(G) for tap in range(taps) for q0 in range(0, Q, step)],
                     dtype=np.int64).reshape(-1, 5)
    threads = min(threads, len(tasks))
    partial = np.zeros((threads, G, taps, COg, Cg), dtype=g4.dtype)
    g6 = g4.reshape((N, G, COg) + tuple(out_spatial))
    with single_threaded_blas, kernel_launch:
        xp = scratch("padded", (N, G, Cg, math.prod(padded)), g4.dtype)
        gp = scratch("gradient", (N, G, COg, Q), g4.dtype)
        shifted_weight_grad(x6, g6, partial, tuple(kernel), tuple(stride), tuple(dilation),
                            tuple(pad), padded, xp, gp, tasks, threads)
    # (G, taps, COg, Cg) -> (G, COg, Cg * taps) in the weight's (c, kd, kh, kw) order.
    return np.ascontiguousarray(partial.sum(axis=0).transpose(0, 2, 3, 1)).reshape(
        G, COg, Cg * taps)
