"""Convolution of in-memory arrays: arguments -> plan (:mod:`numbaconv._plan`) -> runner.

This is the only module that allocates outputs (or takes the user's ``out=``); kernels
receive normalised arrays. It is used by the public functions
(:mod:`numbaconv.functional`) and by each block of a dask array's convolution
(:mod:`numbaconv._dask`).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from ._blas import single_threaded_blas
from ._channels_last import (conv_blocks, conv_depthwise, conv_gemm, conv_grouped,
                             conv_grouped_lanes, conv_winograd_last, move_to_last,
                             moved_to_first)
from ._compile import KernelNotReady, fallback_allowed
from ._fallback import conv_taps
from ._fft import conv_fft
from ._im2col import conv_im2col
from ._padding import pad_input
from ._plan import get_plan
from ._registry import METHODS
from ._spec import as_arrays, check_out
from ._workspace import aligned_empty


def conv_arrays(x, weight, bias, stride, padding, dilation, groups, padding_mode, method,
                d, layout="channels_first", out=None, weight_cache=None):
    """The convolution of in-memory arrays (arguments as :func:`numbaconv.conv`'s, ``d``
    the dimensionality or ``None``): arguments -> plan -> runner, written into ``out``
    when it is given. A layer passes its ``weight_cache``
    (:class:`numbaconv._weight_cache.WeightCache`), which keeps the weight's transform
    between calls."""
    user_arrays = (("input", x), ("weight", weight), ("bias", bias))
    x, weight, bias = as_arrays(x, weight, bias)
    plan = get_plan(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                    method, d, layout, cached_weights=weight_cache is not None)
    if out is None:
        out = aligned_empty(plan.output_shape, plan.dtype)
    else:
        check_out(out, plan.output_shape, plan.dtype, user_arrays)
    if plan.out6_shape[0] == 0:
        return out
    if plan.geom.batch is None:
        x = x[None]
    if plan.layout == "channels_first":
        _run(x, weight, bias, plan, padding_mode, out.reshape(plan.out6_shape),
             weight_cache)
    else:
        _run_channels_last(x, weight, bias, plan, padding_mode,
                           out.reshape(plan.out5_shape), weight_cache)
    return out


def _run_channels_last(x, weight, bias, plan, padding_mode, out5, weight_cache):
    """Run a channels-last plan (``x`` batched ``(N, *spatial, C)``), writing ``out5``
    ``(N, OD, OH, OW, C_out)``: in place by its form, else on transposed copies."""
    dtype = plan.dtype
    if plan.layout_form != "transpose":
        padded = x
        if plan.subsample is not None:
            padded = x[(slice(None),) + _steps(plan.subsample, plan.geom.d)]
        if plan.pre_pad:
            padded = pad_input(padded.astype(dtype, copy=False),
                               plan.geom.padding + ((0, 0),), padding_mode)
        x5 = np.ascontiguousarray(padded, dtype=dtype).reshape(plan.x5_shape)
        w = np.ascontiguousarray(weight, dtype=dtype)
        w5 = w.reshape(w.shape[:2] + plan.w6_shape[3:])
        b = (np.zeros(plan.geom.out_channels, dtype) if bias is None
             else np.ascontiguousarray(bias, dtype=dtype))
        try:
            with fallback_allowed() if plan.fallback != "none" else nullcontext():
                if _run_in_place(x5, w5, b, out5, plan, weight_cache):
                    return
        except KernelNotReady:
            # Compiling in the background: meanwhile the channels-first route's own
            # fallback, which compiles nothing (its kernel would start a second job,
            # for a form this call never uses).
            _run_transposed(x, weight, bias, plan, padding_mode, out5, None,
                            fallback_only=True)
            return
    # Also where the Winograd form met a NaN or an Inf, which the channels-first call
    # hands to another form.
    _run_transposed(x, weight, bias, plan, padding_mode, out5, weight_cache)


def _run_transposed(x, weight, bias, plan, padding_mode, out5, weight_cache,
                    fallback_only=False):
    """Run a channels-last plan as the channels-first call on transposed copies,
    writing ``out5`` (arguments as :func:`_run`'s). With one input channel the two
    layouts share their memory order, so the input is viewed, not copied; with one
    output channel the channels-first result is written into ``out5`` itself (large
    kernels on single-channel data: nothing copied)."""
    if x.shape[-1] == 1:
        x_first = x.reshape((x.shape[0], 1) + x.shape[1:-1])
    else:
        x_first = moved_to_first(x, plan.dtype)
    one_out = plan.geom.out_channels == 1
    out6 = (out5.reshape(plan.out6_shape) if one_out
            else aligned_empty(plan.out6_shape, plan.dtype))
    _run(x_first, weight, bias, plan, padding_mode, out6, weight_cache, fallback_only)
    if not one_out:
        move_to_last(out6, out5)


def _run_in_place(x5, w5, b, out5, plan, weight_cache) -> bool:
    """Run a channels-last plan's in-place form (not ``"transpose"``) on normalised
    arrays, writing ``out5``; False where the Winograd form met a NaN or an Inf (then
    ``out5`` is partly written)."""
    if plan.layout_form == "winograd":
        transformed = (None if weight_cache is None
                       else weight_cache.transformed(plan.form, w5.reshape(plan.w6_shape)))
        return conv_winograd_last(x5, w5, b, out5, plan.dilation, plan.pad, plan.form,
                                  transformed)
    run = {"gemm": conv_gemm, "depthwise": conv_depthwise, "blocks": conv_blocks,
           "grouped": conv_grouped_lanes, "grouped_stem": conv_grouped}[plan.layout_form]
    run(x5, w5, b, out5, plan.stride, plan.dilation, plan.pad)
    return True


def _run(x, weight, bias, plan, padding_mode, out6, weight_cache=None,
         fallback_only=False):
    """Run a channels-first plan on batched ``x`` ``(N, C_in, *spatial)``, writing
    ``out6`` ``(N, G, COg, OD, OH, OW)``, with the weight's transform from
    ``weight_cache`` if one is given; with ``fallback_only``, on the path that needs no
    compiled kernel (as while the plan's kernel compiles)."""
    dtype = plan.dtype
    method, form = plan.method, plan.form
    if method == "fft" and method != plan.nonfinite_method and not (
            np.isfinite(x).all() and np.isfinite(weight).all()):
        # The FFT path would spread a NaN or Inf to every output instead of only those
        # whose receptive field holds it.
        method, form = plan.nonfinite_method, plan.nonfinite_form
    if plan.pre_pad:
        x = pad_input(x.astype(dtype, copy=False), plan.geom.padding, padding_mode)
    if plan.subsample is not None:
        x = x[(slice(None), slice(None)) + _steps(plan.subsample, plan.geom.d)]
    x6 = np.ascontiguousarray(x, dtype=dtype).reshape(plan.x6_shape)
    w6 = np.ascontiguousarray(weight, dtype=dtype).reshape(plan.w6_shape)
    if bias is None:
        bias2 = np.zeros(plan.bias2_shape, dtype=dtype)
    else:
        bias2 = np.ascontiguousarray(bias, dtype=dtype).reshape(plan.bias2_shape)
    arrays = (x6, w6, bias2, out6, plan.stride, plan.dilation, plan.pad)
    if fallback_only:
        _run_fallback(arrays, plan)
        return
    if plan.fallback == "none" or method == "fft":
        _run_form(method, form, arrays, weight_cache)
        return
    try:
        with fallback_allowed():
            _run_form(method, form, arrays, weight_cache)
    except KernelNotReady:
        _run_fallback(arrays, plan)


def _run_form(method, form, arrays, weight_cache):
    """Run ``method``'s runner in ``form``, with the weight transformed ahead where the
    cache keeps a transform for the form (only the Winograd form of the GEMM path)."""
    transformed = None if weight_cache is None else weight_cache.transformed(form,
                                                                             arrays[1])
    if transformed is None:
        METHODS[method](*arrays, form)
    else:
        conv_im2col(*arrays, form, weight=transformed)


def _steps(subsample, d) -> tuple:
    """Slices taking every ``subsample``-th position along the ``d`` spatial axes."""
    return tuple(slice(None, None, step) for step in subsample[3 - d:])


def _run_fallback(arrays, plan):
    """The kernel compiles in a background process: meanwhile, a path that needs none
    (see numbaconv._compile). One BLAS thread: the compile job has the other core (two
    BLAS threads against it ran the fallback 6x slower)."""
    x6, w6 = arrays[:2]
    use_fft = plan.fallback == "fft" and np.isfinite(x6).all() and np.isfinite(w6).all()
    with single_threaded_blas:
        if use_fft:
            conv_fft(*arrays, plan.fallback_form)
        else:
            conv_taps(*arrays)
