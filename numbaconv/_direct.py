"""The direct path: the dense, channel-wise and stem kernels, the form that picks one,
and the split of the work into jobs.

:func:`plan_direct` decides everything before the data is seen (a :class:`DirectForm`);
:func:`conv_direct` only runs it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import config
from ._compile import Kernel
from ._simd import lanes
from ._kernels import direct as _kernels
from ._kernels import stem as _stem_kernels
from ._threads import kernel_launch

dense_conv = Kernel(_kernels.dense_conv, "dense")
channelwise_conv = Kernel(_kernels.channelwise_conv, "channelwise")
stem_conv = Kernel(_stem_kernels.stem_conv, "stem")


class DirectForm(NamedTuple):
    """How the direct path runs one convolution."""

    name: str        # "channelwise", "stem" or "dense"
    threads: int
    ow_chunk: int    # dense: output columns per job
    co_chunk: int    # output channels per job
    samples: int = 0  # stem: samples whose input planes are copied at a time
    vector_width: int = 0  # channelwise: sliding blocks' width (1 or 2 vectors), or 0
    across: int = 0  # channelwise: the plain blocks' vectors along a row


def use_stem(groups: int, groups_in: int, groups_out: int) -> bool:
    """Whether the stem kernel takes a convolution with ``groups_in`` input and
    ``groups_out`` output channels per group: at least ``config.STEM_MIN_OUT_CHANNELS``
    out (it computes 8 output channels at once), and 2 to ``config.STEM_MAX_CHANNELS``
    in when ungrouped (RGB image and video stems), 2 to
    ``config.CHANNELWISE_MAX_CHANNELS`` per group when grouped (ResNeXt's 8 -> 8 3x3
    groups: 0.32-0.41 ms against 0.43-0.45 on the channel-wise kernel, three
    alternating processes; RegNet's 8-channel groups 0.13-0.16 against 0.16-0.17). One
    input channel stays on the channel-wise kernel (a 1->8 5x5x5 layer: 7.4 against
    8.3 ms here; a 1->64 1D stem 0.66 against 0.85 ms; a 32-group 1->8 3x3 layer 2-4x
    slower on this kernel, its jobs too small)."""
    most = config.STEM_MAX_CHANNELS if groups == 1 else config.CHANNELWISE_MAX_CHANNELS
    return 1 < groups_in <= most and groups_out >= config.STEM_MIN_OUT_CHANNELS


def phase_plane_shape(out_spatial, kernel, stride, dilation) -> tuple:
    """``(Hq, Wq, block)`` of one input channel's zero-padded stride-phase planes, as
    ``_kernels.direct.plane_layout`` lays them out."""
    hq = out_spatial[1] + (kernel[1] - 1) * dilation[1] // stride[1]
    wq = out_spatial[2] + (kernel[2] - 1) * dilation[2] // stride[2]
    return hq, wq, stride[1] * stride[2] * hq * wq + wq


def stem_samples(n, groups, cg, depth, out_spatial, kernel, stride, dilation,
                 itemsize) -> int:
    """Samples the stem kernel copies the input planes of at a time: as many as fit in
    ``config.STEM_PLANE_BYTES``, at least one."""
    block = phase_plane_shape(out_spatial, kernel, stride, dilation)[2]
    per_sample = groups * depth * cg * block * itemsize
    return max(1, min(n, config.STEM_PLANE_BYTES // per_sample))


def use_channelwise(groups_in: int, groups_out: int, taps: int, planes: int,
                    threads: int) -> bool:
    """Whether the channel-wise kernel takes a convolution with ``groups_in`` input
    channels per group, ``taps`` kernel taps and ``planes`` output planes (N*C_out*OD):
    its register blocks beat dot products of length taps (3x on a 31x31 depthwise and
    on a 1->8 5x5x5 layer here), but that kernel runs one job per output plane, so with
    few planes per thread (one image with a large kernel) the dense kernel wins. Grouped
    layers of up to ``config.CHANNELWISE_MAX_CHANNELS`` input and output channels per
    group (``groups_in``, ``groups_out``) take it with up to
    ``config.CHANNELWISE_MAX_TAPS`` taps; with more output channels a GEMM does better
    (a 3->32 3x3 stem: 0.67 ms here against 0.36 ms by im2col)."""
    if groups_in > 1 and max(groups_in, groups_out) > config.CHANNELWISE_MAX_CHANNELS:
        return False
    if taps <= config.CHANNELWISE_MAX_TAPS:
        return True
    return groups_in == 1 and planes >= config.CHANNELWISE_MIN_PLANES_PER_THREAD * threads


def channelwise_chunk(planes, cog, jobs_wanted) -> int:
    """Output channels per job of the channel-wise kernel: all of a group's, unless
    ``planes`` (sample, group and depth triples) leave fewer than ``jobs_wanted`` jobs
    (each job copies its input planes)."""
    if planes >= jobs_wanted:
        return cog
    return min(cog, max(1, math.ceil(cog * planes / jobs_wanted)))


def sliding_speedup(kernel_height: int) -> float:
    """How much faster the channel-wise kernel's sliding register blocks run per
    position computed than its plain blocks: their rows share each input row loaded
    over the kernel's height. Fitted to depthwise layers here (AMD EPYC, AVX-512, one
    thread, the kernel alone, alternating calls): 1.3-1.5x at 3x3 (mbv2_dw3 195 against
    278 us; 7x7, 14x14 and 112x112 maps), 1.5x at 5x5 and 7x7, 1.7x at 31x31."""
    return 1 + 0.7 * (kernel_height - 1) / (kernel_height + 1)


def computed_positions(oh: int, ow: int, across: int, down: int, vector: int) -> int:
    """Output positions register blocks of ``across`` vectors of ``vector`` lanes by
    ``down`` rows compute over an ``oh x ow`` plane, those past its rows and columns
    (computed and dropped) included."""
    width = across * vector
    return -(-ow // width) * width * (-(-oh // down) * down)


def plain_across(oh: int, ow: int, vector: int) -> int:
    """Vectors along a row (1, 2, 4 or 8; 8 in all) of the channel-wise kernel's plain
    register blocks for an ``oh x ow`` plane: the shape computing the fewest
    positions, ties to the wider."""
    return min((8, 4, 2, 1),
               key=lambda across: computed_positions(oh, ow, across, 8 // across, vector))


def sliding_shape(oh: int, ow: int, vector: int) -> tuple:
    """``(across, down)`` of the sliding register blocks for an ``oh x ow`` plane: 8
    rows x 1 vector unless 4 rows x 2 vectors compute fewer positions (each new input
    row of the narrow blocks feeds 8 FMAs, not 4: mbv2_dw3, 56 columns either way,
    142-159 against 153-170 us in alternating calls)."""
    if computed_positions(oh, ow, 1, 8, vector) <= computed_positions(oh, ow, 2, 4, vector):
        return 1, 8
    return 2, 4


def channelwise_vector_width(out_spatial, kernel, stride, dilation, itemsize) -> int:
    """Width (1 or 2 vectors: :func:`sliding_shape`) of the channel-wise kernel's
    sliding register blocks, or 0 for its plain ones (:func:`plain_across`): the
    sliding blocks where they need fewer positions' time, weighted by
    :func:`sliding_speedup`. They need unit stride and dilation along H, and a kernel
    taller than one row to share loads."""
    if stride[1] != 1 or dilation[1] != 1 or kernel[1] == 1:
        return 0
    oh, ow, vector = out_spatial[1], out_spatial[2], lanes(itemsize)
    across, down = sliding_shape(oh, ow, vector)
    plain = plain_across(oh, ow, vector)
    sliding = computed_positions(oh, ow, across, down, vector) / sliding_speedup(kernel[1])
    return across * vector if sliding <= computed_positions(
        oh, ow, plain, 8 // plain, vector) else 0


def _work_split(rows: int, out_width: int, out_per_group: int, row_bytes: int,
                jobs_wanted: int):
    """Output columns and channels per job for the dense kernel.

    Rows are the natural job; long rows are cut so the packed buffer stays near
    ``config.DIRECT_PACK_BYTES``, and if there are still fewer than ``jobs_wanted`` jobs, rows are cut
    further, then output channels (in multiples of the 4-channel register block).
    """
    ow_chunk = max(8, min(out_width, config.DIRECT_PACK_BYTES // max(row_bytes, 1)))
    jobs = rows * math.ceil(out_width / ow_chunk)
    if jobs < jobs_wanted:
        ow_chunk = max(16, math.ceil(out_width * jobs / jobs_wanted))
        ow_chunk = min(ow_chunk, out_width)
        jobs = rows * math.ceil(out_width / ow_chunk)
    co_chunk = out_per_group
    if jobs < jobs_wanted and out_per_group >= 16:
        pieces = min(math.ceil(jobs_wanted / jobs), out_per_group // 8)
        co_chunk = 4 * math.ceil(out_per_group / pieces / 4)
    return ow_chunk, co_chunk


def plan_direct(n, groups, cg, cog, kernel, stride, dilation, out_spatial, itemsize,
                threads, jobs_per_thread, depth=1) -> DirectForm:
    """The :class:`DirectForm` of a convolution (per-axis arguments as ``(d, h, w)``;
    ``depth``: the input's)."""
    taps = math.prod(kernel)
    if use_stem(groups, cg, cog):
        return DirectForm("stem", threads, 0, 8,
                          stem_samples(n, groups, cg, depth, out_spatial, kernel, stride,
                                       dilation, itemsize))
    if use_channelwise(cg, cog, taps, n * groups * cog * out_spatial[0], threads):
        return DirectForm("channelwise", threads, 0,
                          channelwise_chunk(n * groups * out_spatial[0], cog,
                                            jobs_per_thread * threads),
                          vector_width=channelwise_vector_width(
                              out_spatial, kernel, stride, dilation, itemsize),
                          across=plain_across(out_spatial[1], out_spatial[2],
                                              lanes(itemsize)))
    # Packed bytes per output column: sw input columns, or all KW taps when dilated.
    per_column = kernel[2] if dilation[2] > 1 else stride[2]
    row_bytes = per_column * kernel[0] * kernel[1] * cg * itemsize
    ow_chunk, co_chunk = _work_split(n * groups * out_spatial[0] * out_spatial[1],
                                     out_spatial[2], cog, row_bytes,
                                     jobs_per_thread * threads)
    return DirectForm("dense", threads, ow_chunk, co_chunk)


def conv_direct(x6, w6, bias2, out, stride, dilation, pad, form: DirectForm):
    """Run the direct path on normalised arrays, writing ``out``.

    ``x6`` ``(N, G, Cg, D, H, W)``, ``w6`` ``(G, COg, Cg, KD, KH, KW)``, ``bias2``
    ``(G, COg)``, ``out`` ``(N, G, COg, OD, OH, OW)``; all C-contiguous, one dtype. The
    tuples are per axis (d, h, w); ``pad`` holds the zero padding before each axis.
    ``form`` comes from :func:`plan_direct`.
    """
    G, COg, Cg, KD, KH, KW = w6.shape
    if form.name == "stem":
        with kernel_launch:
            stem_conv(x6, pack_stem_weight(w6), bias2, out, (KD, KH, KW), stride,
                      dilation, pad, form.samples, form.threads, False)
        return out
    if form.name == "channelwise":
        with kernel_launch:
            # (G, COg, KD, Cg * KH * KW): each depth tap's weights in the kernel's
            # order of (input channel, tap) pairs.
            wt = np.ascontiguousarray(w6.transpose(0, 1, 3, 2, 4, 5)).reshape(
                G, COg, KD, Cg * KH * KW)
            channelwise_conv(x6, wt, bias2, out, (KD, KH, KW), stride, dilation, pad,
                             form.co_chunk, form.threads, form.vector_width, form.across)
        return out
    # Match the packed rows' order [kw, kd, kh, c] so each dot product is contiguous.
    wt = np.ascontiguousarray(w6.transpose(0, 1, 5, 3, 4, 2)).reshape(
        G, COg, KW, KD * KH * Cg
    )
    with kernel_launch:
        dense_conv(x6, wt, bias2, out, (KD, KH, KW), stride, dilation, pad,
                   form.ow_chunk, form.co_chunk)
    return out


def pack_stem_weight(w6):
    """``(G, COg, Cg, KD, KH, KW)`` -> the stem kernel's
    ``(G, ceil(COg/8), KD, Cg*KH*KW, 8)``: per block of 8 output channels and depth tap,
    the (input channel, tap) pairs (the output channels zero-padded to a multiple of
    8)."""
    G, COg, Cg, KD, KH, KW = w6.shape
    taps = Cg * KH * KW
    blocks = -(-COg // 8)
    packed = np.zeros((G, KD, taps, blocks * 8), dtype=w6.dtype)
    packed[..., :COg] = w6.transpose(0, 3, 2, 4, 5, 1).reshape(G, KD, taps, COg)
    return np.ascontiguousarray(
        packed.reshape(G, KD, -1, blocks, 8).transpose(0, 3, 1, 2, 4))
