"""The kernel forms of each path, and the example call that compiles each one.

Every compiled kernel belongs to one form (:class:`numbaconv._compile.Kernel`). Each
form's example is the smallest call that runs its kernels: ``warmup`` runs every form for
both dtypes, and a background compile job (:mod:`numbaconv._warm`) runs the one form a
cold call needs. Kernels see normalised arrays (C-contiguous, six-dimensional, one
dtype), so one example per dtype compiles the signature that every 1D, 2D and 3D call
of that form uses.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Form(NamedTuple):
    """One form of a path, with the calls that compile its kernels."""

    path: str          # "direct" | "im2col" (the GEMM path) | "backward"
    group: str         # the kernel module whose cache indices it writes
    summary: str
    examples: tuple    # ((input shape, weight shape), ...): calls that reach the form
    groups: int
    method: str        # the ``method=`` that reaches the form for these shapes


# The shifted-GEMM form needs 16 channels and 2048 output positions (a 3x3 kernel there
# takes the Winograd form instead); 64 output channels on a 5x5 output make the column
# form share its columns between channel blocks; a Winograd depth kernel packs its input
# planes first (a kernel of its own).
_SMALL = (((1, 2, 5, 5), (4, 2, 3, 3)),)
FORMS = {
    "dense": Form("direct", "direct", "packed-row dot products", _SMALL, 1, "direct"),
    "channelwise": Form("direct", "direct", "channel-wise axpys (depthwise)",
                        (((1, 2, 5, 5), (2, 1, 3, 3)),), 2, "direct"),
    "columns": Form("im2col", "im2col", "im2col columns + GEMM", _SMALL, 1, "im2col"),
    "shared": Form("im2col", "im2col", "columns shared by channel blocks + GEMM",
                   (((1, 16, 5, 5), (64, 16, 3, 3)),), 1, "im2col"),
    "shifted": Form("im2col", "im2col", "one GEMM per tap on a padded copy",
                    (((1, 16, 48, 48), (16, 16, 3, 2)),), 1, "im2col"),
    "winograd": Form("im2col", "winograd", "Winograd F(4x4,3x3) GEMMs",
                     (((1, 16, 48, 48), (16, 16, 3, 3)),
                      ((1, 16, 6, 24, 24), (16, 16, 3, 3, 3))), 1, "im2col"),
    "weight_grad": Form("backward", "im2col", "weight gradient by columns",
                        (((1, 2, 5, 5), (2, 2, 3, 3)),), 1, "backward"),
    "shifted_grad": Form("backward", "im2col", "weight gradient by shifted GEMMs",
                         (((1, 16, 48, 48), (16, 16, 3, 3)),), 1, "backward"),
    "channelwise_grad": Form("backward", "direct", "depthwise weight gradient",
                             (((1, 2, 5, 5), (2, 1, 3, 3)),), 2, "backward"),
}

DTYPES = ("float32", "float64")
# Kernel modules, with the helpers they call: ``grad`` calls into ``direct``, so both are
# one group. No cached kernel calls into another group (``blas.gemm`` is compiled into
# each caller), so processes compiling different groups never write one cache index.
GROUPS = ("direct", "im2col", "winograd")


def run_example(form: str, dtype) -> None:
    """Run ``form``'s example calls in ``dtype`` (compiling its kernels, or loading
    them from the cache)."""
    from .functional import conv, output_shape
    from .gradients import weight_grad

    f = FORMS[form]
    for input_shape, weight_shape in f.examples:
        x = np.ones(input_shape, dtype)
        w = np.ones(weight_shape, dtype)
        if f.method == "backward":
            # The weight gradient alone: conv_backward's input gradient is a forward
            # convolution, whose kernels are another group's.
            g = np.ones(output_shape(x.shape, w.shape, padding=1), dtype)
            d = w.ndim - 2
            weight_grad(g, x, w.shape, (1,) * d, (1,) * d, (1,) * d, f.groups)
        else:
            conv(x, w, padding=1, groups=f.groups, method=f.method)
