"""Channels-last convolutions (``layout="channels_last"``): ``x`` ``(N, *spatial, C)``.

Which form takes a call follows the channels-first plan's choice for the same data, so
``auto`` keeps one cost model:

- ``"depthwise"``: a depthwise layer (``groups == C_in == C_out``) the plan gives the
  direct path; a kernel vectorised over channels (:mod:`numbaconv._kernels.channels_last`).
- ``"gemm"``: a dense layer (``groups == 1``) the plan gives a GEMM form other than
  Winograd, with at least ``config.CHANNELS_LAST_MIN_CHANNELS`` input channels (any
  number for a pointwise stride-1 layer without padding, which gathers no columns),
  that the blocks do not take (under 2 vectors of output channels); one GEMM per
  block of output positions, written straight into the output.
- ``"blocks"`` (before ``"gemm"``): an ungrouped layer the plan gives the direct
  path or a GEMM form other than Winograd, with at least 2 vectors of output channels
  and ``config.BLOCKS_MIN_POSITIONS`` output positions: register blocks of 8
  positions x 2 vectors of output channels summed over every (tap, input channel)
  pair, on a zero-padded copy of the input
  (:func:`numbaconv._kernels.channels_last.dense_blocks`). The positions are
  flattened over rows and samples, so blocks waste nothing on narrow maps. The
  kernel with its weight packed ahead, against the GEMM form's whole call, in one
  process: r50_3x3_s2 1.26 against 1.51 ms, incep_1x7 0.33 against 0.47, r50_3x3_14
  1.09 against 1.46, c3d_s2 7.3 against 10.1, wavenet_d256 1.29 against 2.05 (90-114
  GMAC/s on the two cores, where one thread's OpenBLAS GEMM runs at 40-50). The
  kernel packs the weight on every call, by vector transposes (see ``dense_blocks``).
- ``"grouped"``: a grouped layer the plan gives the direct path, with 2, 4 or 8
  channels per group in and out (ResNeXt's and RegNet's) in at least a vector of
  channels: a kernel vectorised over channels with whole groups in a vector's lanes
  (:func:`numbaconv._kernels.channels_last.grouped_rows`, weights packed by
  :func:`rotated_weight`), written in place.
- ``"grouped_stem"``: other grouped layers the plan gives the stem kernel (2 to
  ``config.CHANNELWISE_MAX_CHANNELS`` input channels per group): that kernel itself,
  filling its planes from the channels-last input and writing the channels-last
  output (``stem_conv(..., channels_last=True)``).
- ``"winograd"``: a layer the plan gives the Winograd form (unit-stride 3x3, any
  depth kernel, groups, dilation): the same transforms with every step a loop over
  channels, and one GEMM per transform point on rows of ``(tiles, channels)``,
  written straight into the output
  (:func:`numbaconv._kernels.winograd_last.winograd_rows`). ``python -m numbaconv
  bench --layout --rounds 5``: r50_3x3_56 0.76, b8_3x3_56 0.71, c3d 0.58 of the
  channels-first call's time (0.61, 0.53, 0.45 of PyTorch channels_last's).
- ``"transpose"``: everything else (FFT, the dense direct kernel, other grouped
  layers, channel multipliers): the channels-first call on transposed copies.

While a channels-last kernel compiles (``auto`` in a cold process), its call takes the
``"transpose"`` route's fallback, which needs no compiled kernel.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from . import config
from ._blas import single_threaded_blas
from ._compile import Kernel
from ._direct import pack_stem_weight, stem_conv, stem_samples
from ._kernels import channels_last as _kernels
from ._kernels import winograd_last as _winograd_kernels
from ._kernels.blas import register_blas
from ._simd import lanes
from ._threads import kernel_launch
from ._transpose import transpose_into
from ._winograd import POINTS, tile_pitch, transform_weight
from ._workspace import aligned_empty, scratch

gemm_rows = Kernel(_kernels.gemm_rows, "cl_gemm")
depthwise_rows = Kernel(_kernels.depthwise_rows, "cl_depthwise")
dense_blocks = Kernel(_kernels.dense_blocks, "cl_blocks")
grouped_rows = Kernel(_kernels.grouped_rows, "cl_grouped")
winograd_rows = Kernel(_winograd_kernels.winograd_rows, "cl_winograd")


def channels_last_form(geom, method: str, form, itemsize: int) -> str:
    """``"depthwise"``, ``"winograd"``, ``"grouped"``, ``"grouped_stem"``, ``"blocks"``,
    ``"gemm"`` or ``"transpose"`` for a call of ``itemsize``-byte numbers whose
    channels-first plan runs ``method`` in ``form`` (see the module docstring). A
    depthwise layer with more than ``config.CHANNELWISE_MAX_TAPS`` taps runs the
    channels-first kernel's register blocks on transposed copies where no four
    neighbouring positions have their whole kernel inside the input, which the
    channels-last kernel's blocks need (replk_dw31, a kernel as large as the map: 4.3
    ms in place against 1.3 ms channels-first); elsewhere it adds at most 5 taps a
    pass, few passes for a small kernel."""
    if method == "direct" and geom.groups == geom.in_channels == geom.out_channels:
        if (math.prod(geom.kernel) <= config.CHANNELWISE_MAX_TAPS
                or _four_positions_fit(geom)):
            return "depthwise"
    if method == "im2col" and form.name == "winograd":
        return "winograd"
    if (method == "direct" and geom.groups > 1
            and lane_group(geom.groups, geom.in_channels, geom.out_channels, itemsize)):
        return "grouped"
    if method == "direct" and form.name == "stem" and geom.groups > 1:
        return "grouped_stem"
    if (method in ("direct", "im2col") and form.name != "winograd"
            and blocks_take(geom.groups, geom.out_channels,
                            (geom.batch or 1) * math.prod(geom.out_spatial), itemsize)):
        return "blocks"
    pointwise = (set(geom.kernel) == {1} and set(geom.stride) == {1}
                 and not any(p for pair in geom.padding for p in pair))
    if (method == "im2col" and geom.groups == 1 and form.name != "winograd"
            and (pointwise or geom.in_channels >= config.CHANNELS_LAST_MIN_CHANNELS)):
        return "gemm"
    return "transpose"


def blocks_take(groups: int, out_channels: int, positions: int, itemsize: int) -> bool:
    """Whether the dense register blocks (:func:`conv_blocks`) take an ungrouped layer
    with ``out_channels`` and ``positions`` output positions (over the batch) of
    ``itemsize``-byte numbers: 2 vectors of output channels (a block's width) and
    ``config.BLOCKS_MIN_POSITIONS`` positions (at least a block's 8)."""
    return (groups == 1 and out_channels >= 2 * lanes(itemsize)
            and positions >= max(config.BLOCKS_MIN_POSITIONS, _kernels.BLOCK_POSITIONS))


def blocks_padded_spatial(out_spatial, kernel, stride, dilation) -> tuple:
    """``(Dp, Hp, Wp)`` of the blocks kernel's zero-padded input: the extent the
    outputs read."""
    return tuple((o - 1) * s + (k - 1) * d + 1 for o, s, k, d in
                 zip(out_spatial, stride, kernel, dilation))


def blocks_extra_elements(n, c_in, c_out, kernel, stride, dilation, out_spatial) -> int:
    """Elements the blocks kernel allocates besides the output on channels-first data:
    the padded channels-last input, the packed weight and the channels-last result
    (channels-last calls write their output itself, one term less)."""
    padded = math.prod(blocks_padded_spatial(out_spatial, kernel, stride, dilation))
    return (n * c_in * padded + c_out * c_in * math.prod(kernel)
            + n * c_out * math.prod(out_spatial))


def _four_positions_fit(geom) -> bool:
    """Whether four neighbouring output positions can have their whole kernel inside
    the input (the channels-last depthwise kernel's register blocks)."""
    span = (geom.kernel[-1] - 1) * geom.dilation[-1] + 3 * geom.stride[-1] + 1
    return span <= geom.spatial[-1] and all(
        (k - 1) * dl < n
        for k, dl, n in zip(geom.kernel[:-1], geom.dilation[:-1], geom.spatial[:-1]))


def moved_to_first(x, dtype) -> np.ndarray:
    """Batched channels-last ``x`` ``(N, *spatial, C)`` as a new C-contiguous
    ``(N, C, *spatial)`` array of ``dtype``, by OpenBLAS's transpose where it can
    (:mod:`numbaconv._transpose`: 0.03 against NumPy's 0.20 ms on 0.8 MB; a parallel
    tile kernel in Numba was no faster than NumPy)."""
    x = np.ascontiguousarray(x, dtype=dtype)
    n, c = x.shape[0], x.shape[-1]
    moved = aligned_empty((n, c) + x.shape[1:-1], x.dtype)
    transpose_into(x.reshape(n, -1, c), moved.reshape(n, c, -1))
    return moved


def move_to_last(y, out) -> None:
    """Write C-contiguous channels-first ``y`` (``(N, C, *spatial)``, in any shape of
    that order) into the C-contiguous channels-last ``out`` ``(N, *spatial, C)``."""
    n, c = out.shape[0], out.shape[-1]
    transpose_into(y.reshape(n, c, -1), out.reshape(n, -1, c))


def channels_first_copy(x: np.ndarray, d: int, dtype) -> np.ndarray:
    """A new C-contiguous channels-first copy of channels-last ``x`` (batched or not) in
    ``dtype``, made by :func:`moved_to_first` (a gradient's or a transposed
    convolution's inputs)."""
    batched = x.ndim == d + 2
    moved = moved_to_first(x if batched else x[None], dtype)
    return moved if batched else moved[0]


def channels_last_copy(y: np.ndarray, d: int) -> np.ndarray:
    """A new C-contiguous channels-last copy of channels-first ``y`` (batched or not),
    made by :func:`move_to_last` (a gradient's or a transposed convolution's result)."""
    batched = y.ndim == d + 2
    yb = np.ascontiguousarray(y if batched else y[None])
    out = aligned_empty((yb.shape[0],) + yb.shape[2:] + (yb.shape[1],), yb.dtype)
    move_to_last(yb, out)
    return out if batched else out[0]


def to_channels_first(x: np.ndarray, d: int) -> np.ndarray:
    """A view of channels-last ``x`` (batched or not) with the channel axis first."""
    return np.moveaxis(x, -1, x.ndim - d - 1)


def to_channels_last(x: np.ndarray, d: int) -> np.ndarray:
    """A view of channels-first ``x`` (batched or not) with the channel axis last."""
    return np.moveaxis(x, x.ndim - d - 1, -1)


def gemm_tasks(n, positions, c_out, row_bytes, threads) -> np.ndarray:
    """Rows ``(n, p0, p1, o0, o1)``: blocks of output positions whose columns take at
    most ``config.IM2COL_TASK_BYTES``, one block per thread where each keeps
    ``config.IM2COL_MIN_TASK_POSITIONS``; where that leaves threads idle (small maps:
    r50_3x3_7 has 49 positions), blocks of output channels of at least
    ``config.IM2COL_MIN_TASK_CHANNELS`` (each rebuilds its columns, a small cost next
    to its GEMM; thinner position blocks made every GEMM pack the whole weight)."""
    per_task = max(1, config.IM2COL_TASK_BYTES // max(row_bytes, 1))
    blocks = math.ceil(positions / per_task)
    wanted = math.ceil(threads / n)
    if blocks < wanted:
        blocks = max(blocks, min(wanted, positions // config.IM2COL_MIN_TASK_POSITIONS))
    per_task = math.ceil(positions / blocks)
    channel_blocks = 1
    if n * blocks < threads:
        channel_blocks = max(1, min(math.ceil(threads / (n * blocks)),
                                    c_out // config.IM2COL_MIN_TASK_CHANNELS))
    per_block = math.ceil(c_out / channel_blocks)
    return np.array([(i, p0, min(positions, p0 + per_task), o0, min(c_out, o0 + per_block))
                     for i in range(n) for p0 in range(0, positions, per_task)
                     for o0 in range(0, c_out, per_block)], dtype=np.int64)


def conv_gemm(x5, weight, bias, out5, stride, dilation, pad):
    """Write ``out5`` ``(N, OD, OH, OW, C_out)``, the dense convolution of ``x5``
    ``(N, D, H, W, C_in)`` with ``weight`` ``(C_out, C_in, KD, KH, KW)`` and ``bias``
    ``(C_out,)``, by GEMMs on channels-last rows (arrays C-contiguous, one dtype).

    The GEMMs run single-threaded inside the parallel kernel, as numbaconv's others:
    a pointwise layer by one NumPy matmul on OpenBLAS's threads took 0.69 against
    1.1 ms alone (r50_1x1_56), but a MobileNet block alternating it with the depthwise
    kernel took 8.0 ms against 1.2 (the two thread pools spinning against each other).
    """
    register_blas()
    n = x5.shape[0]
    kernel = tuple(weight.shape[2:])
    ck = math.prod(weight.shape[1:])
    gather = not (ck == weight.shape[1] and stride == (1, 1, 1) and pad == (0, 0, 0))
    positions = math.prod(out5.shape[1:4])
    threads = numba.get_num_threads()
    tasks = gemm_tasks(n, positions, weight.shape[0], ck * x5.dtype.itemsize, threads)
    per_task = int((tasks[:, 2] - tasks[:, 1]).max())
    taps = ck // weight.shape[1]
    tap_major = gather and taps > 1 and n * positions * ck >= TAP_MAJOR_RATIO * weight.size
    w2 = weight.reshape(weight.shape[0], ck)
    if tap_major:
        w2 = np.ascontiguousarray(
            weight.reshape(weight.shape[:2] + (taps,)).transpose(0, 2, 1)).reshape(
            weight.shape[0], ck)
    with single_threaded_blas, kernel_launch:
        cols = scratch("columns", (min(threads, len(tasks)), per_task * ck if gather
                                   else 1), x5.dtype)
        gemm_rows(x5, w2, bias, out5, kernel, stride, dilation, pad, tasks, cols, gather,
                  tap_major)
    return out5


# Columns this many times the weight's size or more are gathered tap-major (each tap's
# channels one contiguous copy), the weight permuted to match per call. Measured
# against the weight's own order: c3d_s2 (columns 98x the weight) 9.4 -> 7.0 ms,
# wavenet_d256 (250x) -12%, textcnn (32x) -10%; but incep_1x7 (2.3x) +10%, deeplab_d2
# (3x) +5%, r50_3x3_14 (0.8x) +20% and r50_3x3_7 (0.1x) +75%, where permuting the
# weight costs more than the copies save.
TAP_MAJOR_RATIO = 16


def conv_depthwise(x5, weight, bias, out5, stride, dilation, pad):
    """Write ``out5``, the depthwise convolution of ``x5`` ``(N, D, H, W, C)`` with
    ``weight`` ``(C, 1, KD, KH, KW)`` and ``bias`` ``(C,)``, vectorised over channels."""
    c = x5.shape[-1]
    kernel = tuple(weight.shape[2:])
    wt = np.ascontiguousarray(weight.reshape(c, -1).T)  # (K, C): a tap's channels contiguous
    rows = math.prod(out5.shape[:3])
    ow = out5.shape[3]
    jobs = config.MIN_JOBS_PER_THREAD * numba.get_num_threads()
    ow_chunk = ow if rows >= jobs else max(64, math.ceil(ow * rows / jobs))
    with kernel_launch:
        depthwise_rows(x5, wt, bias, out5, kernel, stride, dilation, pad, ow_chunk)
    return out5


def conv_blocks(x5, weight, bias, out5, stride, dilation, pad, channels_first=False):
    """Write ``out5`` ``(N, OD, OH, OW, C_out)``, the dense convolution of ``x5``
    ``(N, D, H, W, C_in)`` with ``weight`` ``(C_out, C_in, KD, KH, KW)`` and ``bias``
    ``(C_out,)``, by register blocks over the output channels
    (:func:`numbaconv._kernels.channels_last.dense_blocks`) on a zero-padded copy of
    the input of the extent the outputs read. With ``channels_first``, ``x5`` is
    ``(N, C_in, D, H, W)`` and ``out5`` ``(N, C_out, OD, OH, OW)``: the kernel
    transposes the input as it pads it, and its result into ``out5``."""
    n = x5.shape[0]
    c_out, c_in = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    taps = math.prod(kernel)
    out_spatial = tuple(out5.shape[2:] if channels_first else out5.shape[1:4])
    padded = blocks_padded_spatial(out_spatial, kernel, stride, dilation)
    positions = n * math.prod(out_spatial)
    jobs = config.MIN_JOBS_PER_THREAD * numba.get_num_threads()
    block = _kernels.BLOCK_POSITIONS
    per_job = max(block, positions // jobs // block * block)
    with kernel_launch:
        xp = scratch("blocks_padded", (n,) + padded + (c_in,), x5.dtype)
        wp = scratch("blocks_weight", (taps * c_in, c_out), x5.dtype)
        rows = (scratch("blocks_rows", (n,) + out_spatial + (c_out,), x5.dtype)
                if channels_first else out5)
        dense_blocks(x5, weight.reshape(c_out, c_in, taps), bias, out5, xp, wp, rows,
                     kernel, stride, dilation, pad, per_job, channels_first)
    return out5


def lane_group(groups: int, c_in: int, c_out: int, itemsize: int) -> int:
    """The group size (4 or 8) the grouped lanes kernel (:func:`conv_grouped_lanes`)
    runs a grouped layer of ``groups`` in, or 0 where it does not take it: 2, 4 or 8
    channels per group, in and out alike (2 run as 4 with block-diagonal weights), in
    at least a vector of channels that the group size divides."""
    per_group = c_in // groups
    if groups == 1 or c_out != c_in or per_group not in (2, 4, 8):
        return 0
    group = max(4, per_group)
    vector = lanes(itemsize)
    return group if vector % group == 0 and c_in % group == 0 and c_in >= vector else 0


def rotated_weight(weight, group: int, vector: int) -> np.ndarray:
    """``wr`` ``(V, K, group, vector)`` for the grouped lanes kernel from ``weight``
    ``(C, cg, *k)`` (``cg`` dividing ``group``), one block for each vector of
    ``vector`` channels (the last ending at ``C``): ``wr[v, t, r, l]`` is the weight
    by which input channel ``c`` (lane ``l`` of vector ``v``) adds to the output
    channel ``r`` places before it in its group of ``group`` (cyclically), zero where
    that channel is outside ``c``'s own group of ``cg``."""
    c, cg = weight.shape[:2]
    taps = math.prod(weight.shape[2:])
    flat = np.concatenate([weight.reshape(-1), np.zeros(1, weight.dtype)])
    return flat[_rotation_index(c, cg, taps, group, vector)]


@functools.lru_cache(maxsize=32)
def _rotation_index(c: int, cg: int, taps: int, group: int, vector: int) -> np.ndarray:
    """Indices into a ``(c, cg, taps)`` weight, flat with a zero appended, that gather
    :func:`rotated_weight`."""
    lane = np.arange(c)
    rotation = np.arange(group)[:, None]
    out_channel = lane // group * group + (lane % group - rotation) % group
    source = (out_channel * cg + lane % cg) * taps  # (group, c): tap 0's element
    index = source[None] + np.arange(taps)[:, None, None]
    index[:, out_channel // cg != lane // cg] = c * cg * taps  # the appended zero
    starts = np.minimum(np.arange(0, c, vector), c - vector)
    lanes_ = starts[:, None] + np.arange(vector)  # (V, vector)
    return np.ascontiguousarray(index[:, :, lanes_].transpose(2, 0, 1, 3))


def conv_grouped_lanes(x5, weight, bias, out5, stride, dilation, pad):
    """Write ``out5`` ``(N, OD, OH, OW, C)``, the grouped convolution of ``x5``
    ``(N, D, H, W, C)`` with ``weight`` ``(C, cg, KD, KH, KW)`` (``lane_group`` takes
    it) and ``bias`` ``(C,)``, vectorised over channels with whole groups in a
    vector's lanes (:func:`numbaconv._kernels.channels_last.grouped_rows`)."""
    c, cg = weight.shape[:2]
    itemsize = x5.dtype.itemsize
    group = lane_group(c // cg, c, c, itemsize)
    vector = lanes(itemsize)
    vectors = -(-c // vector)
    # Vectors of channels a pass over a row computes: as many as keep their packed
    # weights within GROUPED_PASS_WEIGHT_BYTES, in passes of equal size.
    per_vector = math.prod(weight.shape[2:]) * group * vector * itemsize
    passes = -(-vectors * per_vector // GROUPED_PASS_WEIGHT_BYTES)
    rows = math.prod(out5.shape[:3])
    ow = out5.shape[3]
    jobs = config.MIN_JOBS_PER_THREAD * numba.get_num_threads()
    ow_chunk = ow if rows >= jobs else max(16, math.ceil(ow * rows / jobs))
    with kernel_launch:
        grouped_rows(x5, rotated_weight(weight, group, vector), bias, out5,
                     tuple(weight.shape[2:]), stride, dilation, pad, group, ow_chunk,
                     -(-vectors // passes))
    return out5


# Half of a 32 KiB L1 data cache: with 4-channel groups, passes of this size took 0.74x
# the time of one vector per pass (128 channels, 56x56 3x3), as did all 8 vectors
# (their weights 18 KiB); with 8-channel groups, 1.02-1.08x (4 layers).
GROUPED_PASS_WEIGHT_BYTES = 16384


def conv_grouped(x5, weight, bias, out5, stride, dilation, pad):
    """Write ``out5`` ``(N, OD, OH, OW, C_out)``, the grouped convolution of ``x5``
    ``(N, D, H, W, C_in)`` with ``weight`` ``(C_out, C_in // G, KD, KH, KW)`` and
    ``bias`` ``(C_out,)``, by the channels-first stem kernel reading and writing the
    channels-last arrays in place (each split by group: ``(..., G, C // G)``)."""
    n, d, h, w, c_in = x5.shape
    c_out, cg = weight.shape[:2]
    groups = c_in // cg
    cog = c_out // groups
    kernel = tuple(weight.shape[2:])
    out_spatial = tuple(out5.shape[1:4])
    w6 = weight.reshape((groups, cog) + weight.shape[1:])
    samples = stem_samples(n, groups, cg, d, out_spatial, kernel, stride, dilation,
                           x5.dtype.itemsize)
    with kernel_launch:
        stem_conv(x5.reshape(n, d, h, w, groups, cg), pack_stem_weight(w6),
                  bias.reshape(groups, cog), out5.reshape(out5.shape[:4] + (groups, cog)),
                  kernel, stride, dilation, pad, samples, numba.get_num_threads(), True)
    return out5


def conv_winograd_last(x5, weight, bias, out5, dilation, pad, form, transformed=None):
    """Write ``out5`` ``(N, OD, OH, OW, C_out)``, the unit-stride convolution of ``x5``
    ``(N, D, H, W, C_in)`` with a ``(C_out, C_in // G, KD, 3, 3)`` ``weight`` and
    ``bias`` ``(C_out,)``, by Winograd F(4x4, 3x3) in place
    (:func:`numbaconv._kernels.winograd_last.winograd_rows`). ``form`` is the plan's
    Winograd form (its tile grid and ``last_tables``); ``transformed`` the weight's
    transform (a layer's, cached), else it is made here.

    Returns False, with ``out5`` possibly partly written, if the input or the weight
    holds a NaN or an Inf (the transforms would spread it beyond its receptive field):
    the caller then runs another form, which writes all of ``out5``."""
    register_blas()
    c_out, cg = weight.shape[:2]
    groups = x5.shape[-1] // cg
    cog = c_out // groups
    threads = numba.get_num_threads()
    if transformed is None:
        transformed = transform_weight(
            weight.reshape((groups, cog) + weight.shape[1:]), threads)
    if not transformed.finite:
        return False
    itemsize = x5.dtype.itemsize
    tiles_per_row = form.grid[2] - 1  # without the channels-first layout's unused one
    units, tasks = form.last_tables
    most = int(tasks[:, 2].max())
    # The buffers hold whole vectors of channels; a tile's rows of points (and of
    # products) lie an odd number of cache lines apart.
    vector = lanes(itemsize)
    cp, cop = -(-cg // vector) * vector, -(-cog // vector) * vector
    vpitch = tile_pitch(POINTS * cp, itemsize)
    mpitch = tile_pitch(POINTS * cop, itemsize)
    workers = min(threads, len(tasks))
    with single_threaded_blas, kernel_launch:
        columns = scratch("winograd_last_columns",
                          (workers, (4 * tiles_per_row + 2) * 6 * cp), x5.dtype)
        points = scratch("winograd_last_input", (workers, most * vpitch), x5.dtype)
        products = scratch("winograd_last_products", (workers, most * mpitch), x5.dtype)
        sums = scratch("winograd_last_output", (workers, 24 * cop), x5.dtype)
        return winograd_rows(x5, transformed.u, bias, out5, units, tasks, columns, points,
                             products, sums, *dilation, *pad, tiles_per_row, vpitch,
                             mpitch) == 0
