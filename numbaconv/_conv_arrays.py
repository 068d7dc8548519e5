"""Convolution of in-memory arrays: arguments -> plan (:mod:`numbaconv._plan`) -> runner.

This is the only module that allocates outputs; kernels receive normalised arrays. It is
used by the public functions (:mod:`numbaconv.functional`) and by each block of a dask
array's convolution (:mod:`numbaconv._dask`).
"""

from __future__ import annotations

import numpy as np

from ._blas import single_threaded_blas
from ._compile import KernelNotReady, fallback_allowed
from ._fallback import conv_taps
from ._fft import conv_fft
from ._padding import pad_input
from ._plan import get_plan
from ._registry import METHODS
from ._spec import as_arrays


def conv_arrays(x, weight, bias, stride, padding, dilation, groups, padding_mode, method,
                d):
    """The convolution of in-memory arrays (arguments as :func:`numbaconv.conv`'s, ``d``
    the dimensionality or ``None``): arguments -> plan -> runner."""
    x, weight, bias = as_arrays(x, weight, bias)
    plan = get_plan(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                    method, d)
    dtype = plan.dtype
    if plan.out6_shape[0] == 0:
        return np.zeros(plan.geom.output_shape, dtype=dtype)
    if plan.geom.batch is None:
        x = x[None]
    method, form = plan.method, plan.form
    if method == "fft" and method != plan.nonfinite_method and not (
            np.isfinite(x).all() and np.isfinite(weight).all()):
        # The FFT path would spread a NaN or Inf to every output instead of only those
        # whose receptive field holds it.
        method, form = plan.nonfinite_method, plan.nonfinite_form
    if plan.pre_pad:
        x = pad_input(x.astype(dtype, copy=False), plan.geom.padding, padding_mode)
    x6 = np.ascontiguousarray(x, dtype=dtype).reshape(plan.x6_shape)
    w6 = np.ascontiguousarray(weight, dtype=dtype).reshape(plan.w6_shape)
    if bias is None:
        bias2 = np.zeros(plan.bias2_shape, dtype=dtype)
    else:
        bias2 = np.ascontiguousarray(bias, dtype=dtype).reshape(plan.bias2_shape)
    out = np.empty(plan.out6_shape, dtype=dtype)
    arrays = (x6, w6, bias2, out, plan.stride, plan.dilation, plan.pad)
    if plan.fallback == "none" or method == "fft":
        METHODS[method](*arrays, form)
    else:
        try:
            with fallback_allowed():
                METHODS[method](*arrays, form)
        except KernelNotReady:
            # The kernel compiles in a background process: meanwhile, a path that needs
            # none (see numbaconv._compile). One BLAS thread: the compile job has the
            # other core (two BLAS threads against it ran the fallback 6x slower).
            use_fft = (plan.fallback == "fft" and np.isfinite(x6).all()
                       and np.isfinite(w6).all())
            with single_threaded_blas:
                if use_fft:
                    conv_fft(*arrays, plan.fallback_form)
                else:
                    conv_taps(*arrays)
    return out.reshape(plan.geom.output_shape)
