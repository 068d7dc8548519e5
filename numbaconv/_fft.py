"""The FFT path: cross-correlation as a product of spectra (``scipy.fft``).

Correlation needs no flipped kernel: with ``X = rfftn(x)`` and ``K = rfftn(k)`` over a
length ``L``, ``irfftn(X * conj(K))[i] = sum_u k[u] x[i + u]`` wherever ``i + u`` stays
below ``L``, so an FFT as long as the needed input (not input plus kernel) suffices.

- Input channels are summed in the frequency domain: per group and frequency one complex
  matrix product ``(N, Cg) @ (Cg, COg)``, all of them in one stacked ``np.matmul``.
- Stride subsamples the stride-1 result; dilation spreads the kernel's taps with zeros.
- Blocked FFTs (overlap-save) along any axis that is much longer than the kernel: the
  input is cut into overlapping segments of a moderate FFT length ``L`` (as a strided
  view, without copying), each segment yields ``L - kernel + 1`` outputs, and the blocks'
  outputs tile the result. A 1,000,000-sample signal and a 1,025-tap filter take 8,192-point
  FFTs instead of one of a million points.
- float32 stays float32 (complex64 spectra) throughout.
- Output channels are processed in turns when their spectra would exceed the budget
  (``config.FFT_BUDGET_BYTES``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import config
from ._blas import single_threaded_blas



def next_fast_len(n: int) -> int:
    """The smallest 5-smooth number (2^a 3^b 5^c) >= ``n``: the lengths
    ``scipy.fft.next_fast_len(n, real=True)`` picks, computed here so that the cost
    model can plan FFTs without importing ``scipy.fft`` (0.13 s)."""
    if n <= 6:
        return max(n, 1)
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            # the smallest power of two taking p35 to >= n
            q = -(-n // p35)
            p2 = 1 << (q - 1).bit_length()
            best = min(best, p2 * p35)
            p35 *= 3
        p5 *= 5
    return best


@dataclass(frozen=True)
class AxisPlan:
    """FFT length, outputs per block and number of blocks along one spatial axis."""

    length: int
    step: int
    blocks: int


def plan_axis(valid: int, span: int) -> AxisPlan:
    """Choose the FFT length for one axis.

    ``valid`` stride-1 outputs are wanted from a kernel spanning ``span`` inputs. One FFT
    over the whole axis is compared with blocks of a few multiples of the span, by the
    FFT work ``blocks * L * log2(L)`` plus a per-element term for the spectral product.
    """
    whole = next_fast_len(valid + span - 1)
    best = AxisPlan(whole, whole - span + 1, 1)
    best_cost = _axis_cost(best)
    for factor in config.FFT_SEGMENT_FACTORS:
        length = next_fast_len(factor * span)
        if length >= whole:
            break
        step = length - span + 1
        plan = AxisPlan(length, step, math.ceil(valid / step))
        cost = _axis_cost(plan)
        if cost < best_cost:
            best, best_cost = plan, cost
    return best


def _axis_cost(plan: AxisPlan) -> float:
    return plan.blocks * plan.length * (math.log2(max(plan.length, 2)) + 2.0)


def fft_plans(kernel, stride, dilation, out_spatial):
    """Per-axis :class:`AxisPlan` for a (d, h, w) problem."""
    plans = []
    for k, s, d, o in zip(kernel, stride, dilation, out_spatial):
        span = (k - 1) * d + 1
        plans.append(plan_axis((o - 1) * s + 1, span))
    return tuple(plans)


class FftForm(NamedTuple):
    """How the FFT path runs one convolution (see :func:`plan_fft`)."""

    plans: tuple     # an AxisPlan per (d, h, w) axis
    workers: int     # scipy.fft's threads
    budget: int      # bytes of spectra per block of output channels


def plan_fft(kernel, stride, dilation, out_spatial, threads, budget) -> FftForm:
    """The :class:`FftForm` of a ``(d, h, w)`` problem."""
    return FftForm(fft_plans(kernel, stride, dilation, out_spatial), threads, budget)


def conv_fft(x6, w6, bias2, out, stride, dilation, pad, form: FftForm):
    """Run the FFT path on normalised arrays, writing ``out``.

    Arrays and tuples as for :func:`numbaconv._direct.conv_direct`; ``form`` from
    :func:`plan_fft`.
    """
    import scipy.fft

    N, G, Cg = x6.shape[:3]
    COg = w6.shape[1]
    kernel = w6.shape[3:]
    out_spatial = out.shape[3:]
    plans = form.plans
    lengths = tuple(p.length for p in plans)
    axes = tuple(a - 3 for a in range(3) if lengths[a] > 1) or (-1,)
    shape_s = tuple(lengths[a + 3] for a in axes)
    workers = form.workers
    real = out.dtype
    complex_dtype = np.result_type(real, np.complex64)

    # Input segments: zero-padded input, then a strided view of the overlapping blocks.
    total = tuple((p.blocks - 1) * p.step + p.length for p in plans)
    xp = np.zeros((N, G, Cg) + total, dtype=real)
    src = tuple(slice(0, max(0, min(size, t - lo)))
                for size, t, lo in zip(x6.shape[3:], total, pad))
    dst = tuple(slice(lo, lo + s.stop) for lo, s in zip(pad, src))
    xp[(Ellipsis,) + dst] = x6[(Ellipsis,) + src]
    blocks = tuple(p.blocks for p in plans)
    nblocks = math.prod(blocks)
    if nblocks == 1:
        seg = xp.reshape((N, G, Cg, 1, 1, 1) + lengths)
    else:
        st = xp.strides
        seg = as_strided(
            xp,
            shape=(N, G, Cg) + blocks + lengths,
            strides=st[:3] + tuple(p.step * s for p, s in zip(plans, st[3:])) + st[3:],
            writeable=False,
        )
    spec_x = scipy.fft.rfftn(seg, s=shape_s, axes=axes, workers=workers)
    del xp, seg
    freq_shape = spec_x.shape[6:]
    nfreq = math.prod(freq_shape)
    if Cg == 1:
        # One input channel: a broadcast product, laid out (N, G, Co, blocks, F) as the
        # inverse transform wants it.
        xm = spec_x.reshape(N, G, 1, nblocks, nfreq)
    else:
        # (G, blocks, F, N, Cg): per group, block and frequency an (N, Cg) matrix.
        xm = np.ascontiguousarray(
            spec_x.reshape(N, G, Cg, nblocks, nfreq).transpose(1, 3, 4, 0, 2))
    del spec_x

    # Dilated kernels, spread with zeros; same FFT shape as the segments.
    spans = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    per_channel = (N * nblocks + Cg) * nfreq * np.dtype(complex_dtype).itemsize
    chunk = max(1, min(COg, form.budget // max(per_channel, 1)))
    for o0 in range(0, COg, chunk):
        o1 = min(COg, o0 + chunk)
        co = o1 - o0
        wd = np.zeros((G, co, Cg) + spans, dtype=real)
        wd[(Ellipsis,) + tuple(slice(None, None, d) for d in dilation)] = w6[:, o0:o1]
        spec_w = kernel_spectrum(wd, shape_s, axes, workers)
        # The conjugate turns the product into a correlation.
        if Cg == 1:
            prod = xm * np.conj(spec_w.reshape(1, G, co, 1, nfreq))
        else:
            wm = np.ascontiguousarray(
                np.conj(spec_w.reshape(G, co, Cg, 1, nfreq).transpose(0, 3, 4, 2, 1)))
            # OpenBLAS's own threads would spin for up to ~0.1 s after this product,
            # starving the next kernel of the machine's cores (an im2col layer right
            # after ran 8x slower), so it runs on this thread only.
            with single_threaded_blas:
                prod = np.matmul(xm, wm).transpose(3, 0, 4, 1, 2)  # (N, G, Co, blocks, F)
        prod = prod.reshape((N, G, co) + blocks + freq_shape)
        y = scipy.fft.irfftn(prod, s=shape_s, axes=axes, workers=workers)
        del prod
        out[:, :, o0:o1] = _assemble(y, plans, stride, out_spatial)
    out += bias2.reshape(1, G, COg, 1, 1, 1)
    return out


def kernel_spectrum(wd, shape_s, axes, workers):
    """``rfftn(wd, s=shape_s, axes=axes)`` of small kernels, one axis at a time so that
    each transform runs only over the lines that are not all zeros: the kernel spans
    a few taps of each padded axis (a 63x63 kernel in a 1125x1125 FFT needs 63 + 563
    line transforms, not 1125 + 563)."""
    import scipy.fft

    spec = scipy.fft.rfft(wd, n=shape_s[-1], axis=axes[-1], workers=workers)
    for axis, n in zip(reversed(axes[:-1]), reversed(shape_s[:-1])):
        spec = scipy.fft.fft(spec, n=n, axis=axis, workers=workers)
    return spec


def _assemble(y, plans, stride, out_spatial):
    """Tile the blocks' valid outputs ``y`` ``(N, G, Co, bD, bH, bW, LD, LH, LW)`` and
    subsample by the stride: ``(N, G, Co, OD, OH, OW)``."""
    lead = y.shape[:3]
    y = y[(Ellipsis,) + tuple(slice(0, p.step) for p in plans)]
    y = y.transpose(0, 1, 2, 3, 6, 4, 7, 5, 8).reshape(
        lead + tuple(p.blocks * p.step for p in plans))
    return y[(Ellipsis,) + tuple(slice(0, (o - 1) * s + 1, s)
                                 for o, s in zip(out_spatial, stride))]
