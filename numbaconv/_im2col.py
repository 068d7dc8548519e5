"""The im2col + GEMM path: receptive fields as matrix columns, the product by BLAS.

Per sample, every group's columns go into one buffer ``(G, K, P)`` and one stacked
``np.matmul`` multiplies them by the weight ``(G, COg, K)`` straight into the output,
which already has the layout ``(G, COg, P)``: neither batches nor groups cost a copy.
When the columns would exceed ``config.IM2COL_BUDGET_BYTES``, they are built in blocks of
groups and of output positions, each multiplied into a small staging buffer and copied
to its place in the output.
"""

from __future__ import annotations

import math

import numpy as np

from . import config
from ._blas import matmul
from ._kernels.im2col import build_columns
from ._threads import split_rows


def im2col_blocks(groups: int, k: int, cog: int, positions: int, itemsize: int,
                  budget: int | None = None):
    """Groups and output positions per block, so that a block's columns (and, when
    blocked, its staging buffer) fit in ``budget`` bytes.

    Returns ``(groups_per_block, positions_per_block)``. One group's column of a single
    output is the indivisible unit; a budget smaller than that is exceeded by it.
    """
    budget = config.IM2COL_BUDGET_BYTES if budget is None else budget
    units = max(1, budget // itemsize)
    if groups * k * positions <= units:
        return groups, positions
    # Blocked: the product goes through a staging buffer of COg per position per group.
    per_position = k + cog
    if per_position * positions <= units:
        return max(1, units // (per_position * positions)), positions
    return 1, max(1, min(positions, units // per_position))


def im2col_extra_bytes(groups, k, cog, positions, itemsize, budget=None) -> int:
    """Bytes the path allocates besides the output: the column (and staging) buffers."""
    if k == 0:
        return 0
    gc, pc = im2col_blocks(groups, k, cog, positions, itemsize, budget)
    staging = 0 if (gc, pc) == (groups, positions) else gc * cog * pc
    return (gc * k * pc + staging) * itemsize


def _is_pointwise(kernel, stride, pad, in_spatial, out_spatial) -> bool:
    """A 1x1 convolution without stride or padding: the input already is the columns."""
    return (kernel == (1, 1, 1) and stride == (1, 1, 1) and pad == (0, 0, 0)
            and tuple(in_spatial) == tuple(out_spatial))


def column_blocks(x6, kernel, stride, dilation, pad, out_spatial, cog, dtype):
    """Yield ``(n, g0, g1, p0, p1, cols)``: the columns ``(g1 - g0, K, p1 - p0)`` of
    sample ``n`` of ``x6`` ``(N, G, Cg, D, H, W)`` for groups ``g0:g1`` and output
    positions ``p0:p1``, in blocks within ``config.IM2COL_BUDGET_BYTES``. One buffer
    serves every block: each is valid until the next is requested."""
    N, G, Cg = x6.shape[:3]
    K = Cg * math.prod(kernel)
    P = math.prod(out_spatial)
    if _is_pointwise(tuple(kernel), tuple(stride), tuple(pad), x6.shape[3:], out_spatial):
        for n in range(N):
            yield n, 0, G, 0, P, x6[n].reshape(G, Cg, P)
        return
    gc, pc = im2col_blocks(G, K, cog, P, np.dtype(dtype).itemsize)
    # A flat buffer, so that a smaller last block is still a contiguous view.
    buf = np.empty(gc * K * pc, dtype=dtype)
    for n in range(N):
        for g0 in range(0, G, gc):
            g1 = min(G, g0 + gc)
            for p0 in range(0, P, pc):
                p1 = min(P, p0 + pc)
                cols = buf[: (g1 - g0) * K * (p1 - p0)].reshape(g1 - g0, K, p1 - p0)
                split_rows(build_columns, cols.shape[0] * K, x6[n], cols, g0, p0,
                           kernel, stride, dilation, pad, out_spatial)
                yield n, g0, g1, p0, p1, cols


def conv_im2col(x6, w6, bias2, out, stride, dilation, pad):
    """Run the im2col + GEMM path on normalised arrays, writing ``out``.

    Arrays and tuples as for :func:`numbaconv._direct.conv_direct`.
    """
    N, G = x6.shape[:2]
    COg = w6.shape[1]
    kernel = w6.shape[3:]
    out_spatial = out.shape[3:]
    P = math.prod(out_spatial)
    w3 = w6.reshape(G, COg, -1)
    out4 = out.reshape(N, G, COg, P)
    staging = None
    for n, g0, g1, p0, p1, cols in column_blocks(x6, kernel, stride, dilation, pad,
                                                 out_spatial, COg, out.dtype):
        if (g0, g1, p0, p1) == (0, G, 0, P):
            matmul(w3, cols, out4[n])
            continue
        if staging is None:
            staging = np.empty(cols.shape[0] * COg * cols.shape[2], dtype=out.dtype)
        part = staging[: (g1 - g0) * COg * (p1 - p0)].reshape(g1 - g0, COg, p1 - p0)
        matmul(w3[g0:g1], cols, part)
        out4[n, g0:g1, :, p0:p1] = part
    out4 += bias2[None, :, :, None]
    return out
