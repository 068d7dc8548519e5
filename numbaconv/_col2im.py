"""The col2im form of the input gradient (and so of the transposed convolution): one
GEMM of all the kernel's taps per block of output rows, then a scatter onto the input
(:mod:`numbaconv._kernels.col2im`).

The other way to the input gradient, a stride-1 convolution of the output gradient
spread out with zeros, does ``prod(stride)`` times the work at stride > 1. At stride 1
that convolution is the better way: it runs Winograd and the shifted GEMM, and needs no
scatter.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import config
from ._blas import single_threaded_blas
from ._compile import Kernel
from ._kernels import col2im as _kernels
from ._kernels.blas import register_blas
from ._spec import to_3d
from ._threads import kernel_launch
from ._workspace import scratch

col2im_input_grad = Kernel(_kernels.col2im_input_grad, "col2im")

# Fewer output channels per group than this make the GEMM a thin matrix product; the
# spread convolution's channel-wise kernel does better there (depthwise layers).
MIN_CHANNELS = 4


def takes_col2im(stride, out_channels_per_group: int) -> bool:
    """Whether the input gradient takes the col2im form."""
    return any(s > 1 for s in stride) and out_channels_per_group >= MIN_CHANNELS


def plan_col2im(n, groups, cg, k, out_rows, out_width, itemsize, threads):
    """``(channels per task, output rows per chunk)``: one task per thread where the
    channels allow it (more, thinner GEMMs measured slower: a 1D 64->32 stride-2 layer
    1.2 ms with 4 per thread, 0.9 ms with 1), and a chunk's columns within
    ``config.COL2IM_TASK_BYTES``."""
    blocks = min(cg, max(1, math.ceil(threads / (n * groups))))
    cb = math.ceil(cg / blocks)
    rows = max(1, min(out_rows, config.COL2IM_TASK_BYTES // (itemsize * cb * k
                                                             * out_width)))
    return cb, rows


def input_grad_col2im(grad_out, weight, crop, stride, dilation, groups, bias=None):
    """The input gradient over the window ``crop`` (``(start, size)`` per axis, in padded
    coordinates) of a convolution with ``weight`` ``(C_out, C_in/groups, *kernel)``, by
    col2im, plus ``bias`` ``(C_in,)`` if given (a transposed convolution's).
    ``grad_out`` ``(N, C_out, *out)``, the weight and the bias have the computation
    dtype."""
    register_blas()
    d = weight.ndim - 2
    n, c_out = grad_out.shape[:2]
    cg = weight.shape[1]
    cog = c_out // groups
    kernel = to_3d(weight.shape[2:], d, 1)
    out_spatial = to_3d(grad_out.shape[2:], d, 1)
    k = math.prod(kernel)
    threads = numba.get_num_threads()
    cb, rows = plan_col2im(n, groups, cg, k, out_spatial[0] * out_spatial[1],
                           out_spatial[2], grad_out.dtype.itemsize, threads)
    tasks = np.array([(i, g, c0, min(cg, c0 + cb)) for i in range(n)
                      for g in range(groups) for c0 in range(0, cg, cb)], dtype=np.int64)
    threads = min(threads, len(tasks))
    g4 = np.ascontiguousarray(grad_out).reshape(n, groups, cog, -1)
    w3 = np.ascontiguousarray(weight).reshape(groups, cog, cg * k)
    sizes = tuple(size for _, size in crop)
    gx = np.empty((n, groups, cg) + to_3d(sizes, d, 1), dtype=grad_out.dtype)
    base = (np.zeros((groups, cg), grad_out.dtype) if bias is None
            else np.ascontiguousarray(bias, dtype=grad_out.dtype).reshape(groups, cg))
    with single_threaded_blas, kernel_launch:
        cols = scratch("columns", (threads, cb * k * rows * out_spatial[2]),
                       grad_out.dtype)
        col2im_input_grad(g4, w3, base, gx, tasks, kernel, to_3d(stride, d, 1),
                          to_3d(dilation, d, 1),
                          to_3d(tuple(start for start, _ in crop), d, 0), out_spatial,
                          rows, cols)
    return gx.reshape((n, groups * cg) + sizes)
