"""The dispatcher's cost model: operation counts per path, times machine constants.

Each path's estimate is a sum of terms ``count / rate`` (plus a fixed cost per call),
where the counts are pure functions of the shapes and the rates are machine constants
(:class:`MachineConstants`). Counts and constants are kept apart, as in SciPy's
``choose_conv_method``, so that :func:`numbaconv.tune` can re-measure the constants on
another machine without touching the counts.

Default constants
-----------------
Measured on the development machine (2-core AMD EPYC, Zen 5, AVX-512, 24 GiB; Numba
0.68, NumPy 2.4 and SciPy 1.17 with OpenBLAS 0.3.31 on its native SkylakeX kernels) by
timing every path on the 17 cases of ``numbaconv.bench.SUITE`` in float32, one path at a
time (median of 5 after warm-up), and fitting each path's rates by non-negative least
squares on the relative error (``gemm_half_p`` by a scan over 16..256). Against the
final timings, estimates are within a factor of 1.5 for 16 of 17 im2col cases, 15 of 17
direct ones (the misses, at about 1.6x: img_k63 and fir_1025, long single-channel
kernels) and 10 of 17 FFT ones (many-channel shapes are underestimated up to 8x, where
the FFT path is 10-300x slower than the others anyway). With these constants ``auto``
picked the fastest path on all 17 cases of those timings. The machine is shared and
noisy: repeated runs move single timings by 20-50%. On other machines run
:func:`numbaconv.tune`.

The Winograd form of the GEMM path reuses these constants (its transforms count as
column writes, its GEMMs as GEMMs of its task shape, the weight transform at half the
column rate as measured). On 12 unit-stride 3x3 layers (16 to 512 channels, 7x7 to
224x224, one 3D) its estimates were 0.97 to 1.9x the measured times, and the GEMM path
took the faster of its forms on 9 of the 12; the misses cost 1.33x (128 channels at
28x28, estimated too slow) and 1.06-1.22x on two layers under 0.2 ms.

The stem kernel's rate (``stem_macs``) was set later, on a Zen 4 machine 2-5x slower
than these defaults assume, relative to the column form's estimate: so that the ratio
of the two estimates matched the measured ratio of the two paths, stem over columns,
on resnet_conv1 (0.78; estimated 0.78) and a batch of 8 of it (0.71; 0.77), which
also sends r2plus1d_stem (0.39; 0.50) to the stem kernel and leaves mbnet_stem (1.03;
0.77) nearly even.

The dense register blocks' rate (``blocks_macs``) was set the same way, on a Zen 4
machine, once their weight repacking and transposes ran by vector shuffles: each
layer's measured ratio of the blocks to the shifted or column form (one process,
alternating calls) gives the rate at which the estimates' ratio matches it; the median
over 8 layers was 2.6e11 (conv1d_s2 0.71 -> 3.6e11, wavenet_d256 0.80 -> 4.0e11,
deeplab_d2 0.87 -> 2.5e11, textcnn 0.96 -> 2.3e11, r50_1x1_s2 1.03 -> 2.8e11,
incep_1x7 0.88 -> 2.0e11, r50_3x3_14 0.91 -> 1.8e11; r50_1x1_56 1.03 -> 7.9e11). At
that rate the estimates order the two forms as measured on all 8.

float64 runs every compute term at half the float32 rate (half as many lanes per
vector); measured float64/float32 time ratios on 7 suite cases ranged from 1.3 to 2.4,
mostly 1.6 to 2.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._channels_last import blocks_extra_elements
from ._constants import MachineConstants
from ._direct import computed_positions, phase_plane_shape, sliding_speedup
from ._simd import lanes
from . import config
from ._im2col import columns_extra_bytes, is_pointwise, shifted_positions
from ._spec import to_3d
from ._winograd import POINTS as WINOGRAD_POINTS
from ._winograd import extra_elements
from ._winograd import task_tiles as winograd_task_tiles



@dataclass(frozen=True)
class Estimate:
    """One form's estimated cost."""

    seconds: float
    extra_bytes: int
    detail: str


def problem_dims(geom):
    """(N, G, Cg, COg, kernel, stride, dilation, pad_before, in, out), the per-axis
    values as (d, h, w) triples."""
    n = 1 if geom.batch is None else geom.batch
    return (n, geom.groups, geom.in_channels // geom.groups,
            geom.out_channels // geom.groups, to_3d(geom.kernel, geom.d, 1),
            to_3d(geom.stride, geom.d, 1), to_3d(geom.dilation, geom.d, 1),
            to_3d((lo for lo, _ in geom.padding), geom.d, 0),
            to_3d(geom.spatial, geom.d, 1), to_3d(geom.out_spatial, geom.d, 1))


def _precision(itemsize: int) -> float:
    return 1.0 if itemsize <= 4 else 0.5


def estimate_direct(geom, itemsize: int, c: MachineConstants, form) -> Estimate:
    """The direct kernels (a :class:`numbaconv._direct.DirectForm`): dense packed-row
    dot products, channel-wise register blocks, or the stem kernel's passes."""
    n, g, cg, cog, kernel, stride, dilation, _, spatial, out = problem_dims(geom)
    macs = geom.macs
    taps = math.prod(kernel)
    prec = _precision(itemsize)
    if form.name == "stem":
        return _estimate_stem(n, g, cg, cog, kernel, stride, dilation, out, spatial[0],
                              itemsize, c, form)
    if form.name == "channelwise":
        block = phase_plane_shape(out, kernel, stride, dilation)[2]
        vector = lanes(itemsize)
        if form.vector_width:
            # Sliding blocks compute whole blocks, each row load shared by their rows.
            across = form.vector_width // vector
            elements = (computed_positions(out[1], out[2], across, 8 // across, vector)
                        / sliding_speedup(kernel[1]))
            how = "sliding register blocks"
        else:
            across = form.across
            elements = computed_positions(out[1], out[2], across, 8 // across, vector)
            how = "register blocks"
        how += f" of {8 // across} rows x {across} vectors over {taps} taps"
        seconds = c.call + macs * elements / (out[1] * out[2]) / (c.channelwise_macs * prec)
        # Per thread: the group's input planes in stride phases.
        extra = form.threads * itemsize * cg * block
        return Estimate(seconds, extra, how + (f" of {cg} input channels" if cg > 1 else ""))
    dot = cg * taps
    rate = c.direct_macs * prec * dot / (dot + c.direct_dot_half)
    per_column = kernel[2] if dilation[2] > 1 else stride[2]
    packed = n * g * out[0] * out[1] * out[2] * per_column * kernel[0] * kernel[1] * cg
    # Each output row streams its group's packed weight; beyond L2 that is memory traffic.
    weight_bytes = cog * cg * taps * itemsize
    streamed = weight_bytes * n * g * out[0] * out[1] if weight_bytes > config.L2_BYTES else 0
    seconds = (c.call + macs / rate + packed / (c.direct_pack * prec)
               + streamed / c.direct_weight)
    extra = geom.out_channels * cg * taps * itemsize  # the repacked weight
    extra += form.threads * config.DIRECT_PACK_BYTES
    return Estimate(seconds, extra, f"dot products of length {dot}")


def _estimate_stem(n, g, cg, cog, kernel, stride, dilation, out, depth, itemsize, c,
                   form) -> Estimate:
    """The stem kernel: the multiply-adds it runs (whole blocks of 8 output channels,
    over the phase planes' extra columns too), and the copies of the input into stride
    phases and of the accumulators into the output."""
    _, wq, block = phase_plane_shape(out, kernel, stride, dilation)
    taps = cg * kernel[1] * kernel[2]
    run = n * g * out[0] * math.ceil(cog / 8) * 8 * kernel[0] * taps * out[1] * wq
    prec = _precision(itemsize)
    copies = n * g * (cg * depth * block + cog * math.prod(out))
    seconds = c.call + run / (c.stem_macs * prec) + copies / (c.columns * prec)
    extra = form.samples * g * depth * cg * block * itemsize
    return Estimate(seconds, extra, f"register blocks of 8 output channels over "
                                    f"{taps * kernel[0]} taps, on planes in stride phases")


def estimate_winograd(geom, itemsize: int, c: MachineConstants, form,
                      cached_weights=False) -> Estimate:
    """Winograd F(4x4, 3x3) (a ``GemmForm`` with its tile grid): 36 GEMMs ``(COg, Cg)
    @ (Cg, tiles)`` per task and depth tap, and the transforms (element operations, at
    the rate columns are written). With ``cached_weights`` (a layer's call) the weight
    transform is replaced by the check that the weight is unchanged, which reads it
    and its copy."""
    n, g, cg, cog, kernel, _, dilation, _, _, out = problem_dims(geom)
    _, th, tw1 = form.grid
    threads = form.threads
    prec = _precision(itemsize)
    phases = dilation[1] * dilation[2]
    tiles = n * g * out[0] * phases * th * tw1
    # As ``_winograd.plan_tasks`` deals them: a multiple of the threads.
    tasks = max(threads, math.ceil(tiles / winograd_task_tiles(cg, cog, itemsize)))
    per_task = math.ceil(tiles / (threads * math.ceil(tasks / threads)))
    eff = ((cog / (cog + c.gemm_half_m)) * (cg / (cg + c.gemm_half_k))
           * (per_task / (per_task + c.gemm_half_p)))
    gemm = tiles * kernel[0] * WINOGRAD_POINTS * cog * cg / (c.gemm_macs * prec * eff)
    # Packing, per tile and input channel: 16 padded-row elements copied, 24 row
    # combinations, 24 of them split into column phases, all in L1: counted as 32
    # column writes (fitted, see the module docstring). Once per depth tap for a 2D
    # kernel, once in all for a 3D one (which packs every input plane first).
    packed = tiles * cg * 32
    weights = g * kernel[0] * WINOGRAD_POINTS * cog * cg
    # The weight transform writes its output at about half the column rate (4.5e9
    # elements/s measured for 64 to 512 channels: bound by memory writes).
    weight_work = 2 * weights
    if cached_weights:  # two reads of the 9/36 as large untransformed weight
        weight_work = 2 * weights * 9 // WINOGRAD_POINTS
    transforms = (packed + weight_work
                  + tiles * WINOGRAD_POINTS * (kernel[0] * cg + cog))
    seconds = c.call + transforms / (c.columns * prec) + gemm
    extra = extra_elements(n, g, cg, cog, kernel[0], form.grid, phases, itemsize,
                           threads) * itemsize
    return Estimate(seconds, extra, f"Winograd F(4x4,3x3): {WINOGRAD_POINTS * kernel[0]} "
                                    f"GEMMs {cog}x{cg}x{tiles} in tasks of {per_task} tiles")


def estimate_shifted(geom, itemsize: int, c: MachineConstants, form) -> Estimate:
    """The shifted form (a ``GemmForm`` with its padded layout): a padded copy plus one
    GEMM ``(COg, Cg) @ (Cg, chunk)`` per tap."""
    n, g, cg, cog, kernel, _, _, _, _, out = problem_dims(geom)
    p = math.prod(out)
    prec = _precision(itemsize)
    q = shifted_positions(form.padded, out)
    copied = n * g * cg * math.prod(form.padded)
    eff = ((cog / (cog + c.gemm_half_m)) * (cg / (cg + c.gemm_half_k))
           * (config.SHIFTED_CHUNK / (config.SHIFTED_CHUNK + c.gemm_half_p)))
    macs = n * g * cog * cg * math.prod(kernel) * p
    gemm = macs * (q / p) / (c.gemm_macs * prec * eff)
    seconds = c.call + copied / (c.columns * prec) + gemm
    return Estimate(seconds, copied * itemsize,
                    f"{math.prod(kernel)} shifted GEMMs {cog}x{cg}x{q}"
                    + (f" x{n * g}" if n * g > 1 else ""))


def estimate_columns(geom, itemsize: int, c: MachineConstants, form) -> Estimate:
    """The column form (a ``GemmForm`` with its tasks): column building plus one GEMM
    ``(COg, K) @ (K, pc)`` per task."""
    n, g, cg, cog, kernel, stride, _, pad, spatial, out = problem_dims(geom)
    k = cg * math.prod(kernel)
    p = math.prod(out)
    prec = _precision(itemsize)
    pointwise = is_pointwise(kernel, stride, pad, spatial, out)
    # Strided columns gather their inputs, at about half the speed of copies.
    cols = 0 if pointwise else n * g * k * p * (2 if stride[2] > 1 else 1)
    # Each task's GEMM is (COg, K) x (K, pc): thin blocks of positions run slower.
    pc = form.positions
    eff = ((cog / (cog + c.gemm_half_m)) * (k / (k + c.gemm_half_k))
           * (pc / (pc + c.gemm_half_p)))
    gemm = n * g * cog * k * p / (c.gemm_macs * prec * eff)
    seconds = c.call + cols / (c.columns * prec) + gemm
    extra = 0 if pointwise else columns_extra_bytes(form, k, p, itemsize)
    what = "input as columns (1x1)" if pointwise else f"{k} x {p} columns"
    return Estimate(seconds, extra, f"{what}, GEMM {cog}x{k}x{p}")


def estimate_blocks(geom, itemsize: int, c: MachineConstants, form) -> Estimate:
    """The dense register blocks (``_channels_last.conv_blocks``): their multiply-adds
    at their own rate (``blocks_macs``, see the module docstring), and the copies of
    the input (padded and transposed to channels-last), the weight and the output
    (transposed back)."""
    n, _, cg, cog, kernel, stride, dilation, _, _, out = problem_dims(geom)
    prec = _precision(itemsize)
    macs = n * cog * cg * math.prod(kernel) * math.prod(out)
    extra = blocks_extra_elements(n, cg, cog, kernel, stride, dilation, out)
    # Each buffer written once, and the result copied out of its own once more.
    copies = extra + n * cog * math.prod(out)
    seconds = c.call + macs / (c.blocks_macs * prec) + copies / (c.columns * prec)
    return Estimate(seconds, extra * itemsize,
                    "register blocks of 8 positions x 2 vectors of output channels "
                    "on a channels-last copy")


GEMM_ESTIMATORS = {"winograd": estimate_winograd, "shifted": estimate_shifted,
                   "blocks": estimate_blocks, "shared": estimate_columns,
                   "columns": estimate_columns}


def estimate_fft(geom, itemsize: int, c: MachineConstants, form) -> Estimate:
    """FFTs of input segments, kernels and outputs, and the spectral channel product (a
    :class:`numbaconv._fft.FftForm`)."""
    n, g, cg, cog, *_ = problem_dims(geom)
    plans = form.plans
    points = math.prod(p.length for p in plans)
    blocks = math.prod(p.blocks for p in plans)
    half = points // max(1, max(p.length for p in plans)) * (
        max(p.length for p in plans) // 2 + 1)
    log = math.log2(max(points, 2))
    transforms = n * g * cg * blocks + g * cog * cg + n * g * cog * blocks
    flops = 2.5 * transforms * points * log
    cmacs = n * g * cg * cog * blocks * half
    # Padding, tiling and layout changes; the kernel spectra are conjugated and reordered.
    copies = n * g * (cg + 2 * cog) * blocks * points + 2 * g * cog * cg * half
    # Several channels: one small complex matrix product per group, block and frequency.
    products = g * blocks * half if cg > 1 or cog > 1 else 0
    prec = _precision(itemsize)
    seconds = (c.call * 4 + flops / (c.fft_flops * prec) + cmacs / (c.fft_cmacs * prec)
               + copies / (c.fft_elems * prec) + products / c.fft_products)
    complex_size = 2 * itemsize
    spectra = (n * g * cg * blocks * half * 2 + g * cog * cg * half
               + n * g * cog * blocks * half) * complex_size
    extra = spectra + n * g * (cg + cog) * blocks * points * itemsize
    lengths = "x".join(str(p.length) for p in plans if p.length > 1) or "1"
    detail = f"{blocks} block(s) of {lengths}-point FFTs"
    return Estimate(seconds, extra, detail)


def estimate_taps(geom, itemsize: int, c: MachineConstants) -> Estimate:
    """The no-compile NumPy fallback (:mod:`numbaconv._fallback`): per tap, a copy of
    the inputs it reads, a stacked GEMM (or a multiply) and an addition, all at NumPy's
    element rate (``fft_elems``, which measures the same kind of copies) but the GEMM."""
    n, g, cg, cog, kernel, _, _, _, _, out = problem_dims(geom)
    taps = math.prod(kernel)
    p = math.prod(out)
    prec = _precision(itemsize)
    elements = taps * n * g * p * (cg + 2 * cog)
    if cg == 1 and cog == 1:
        gemm = 0.0
    else:
        eff = ((cog / (cog + c.gemm_half_m)) * (cg / (cg + c.gemm_half_k))
               * (p / (p + c.gemm_half_p)))
        gemm = geom.macs / (c.gemm_macs * prec * eff)
    seconds = c.call * taps + elements / (c.fft_elems * prec) + gemm
    extra = n * g * (cg + cog) * p * itemsize
    return Estimate(seconds, extra, f"{taps} NumPy GEMMs (no compiled kernel)")

