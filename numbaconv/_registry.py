"""The registry of paths and of the kernel forms they run.

``METHODS`` maps each path's name to its runner, ``runner(x6, w6, bias2, out, stride,
dilation, pad, form)``, whose form comes from the plan (:mod:`numbaconv._plan`; the
forms of each path are listed by ``_plan.path_forms``, which ``explain`` prints);
``_spec.check_method`` checks a ``method=`` against it.

``FORMS`` lists the compiled forms: every kernel belongs to one
(:class:`numbaconv._compile.Kernel`), and each form's examples are the smallest calls
that run its kernels. ``warmup`` runs every form for both dtypes, and a background
compile job (:mod:`numbaconv._warm`) the one form a cold call needs. Kernels see
normalised arrays (C-contiguous, six-dimensional, one dtype), so one example per dtype
compiles the signature that every 1D, 2D and 3D call of the form uses.
"""

from __future__ import annotations

from typing import NamedTuple

from ._direct import conv_direct
from ._fft import conv_fft
from ._im2col import conv_im2col

METHODS = {"direct": conv_direct, "im2col": conv_im2col, "fft": conv_fft}




class Form(NamedTuple):
    """One form of a path, with the calls that compile its kernels."""

    path: str          # "direct" | "im2col" (the GEMM path) | "backward"
    group: str         # the kernel module whose cache indices it writes
    summary: str
    examples: tuple    # ((input shape, weight shape), ...): calls that reach the form
    groups: int
    method: str        # the ``method=`` that reaches the form for these shapes
    layout: str = "channels_first"  # the examples' layout (input shapes in it)


# The shifted-GEMM form needs 16 channels and 2048 output positions (a 3x3 kernel there
# takes the Winograd form instead); 64 output channels on a 5x5 output make the column
# form share its columns between channel blocks; a Winograd depth kernel packs its input
# planes first (a kernel of its own, a form of its own so that 2D calls need not wait
# for it).
_SMALL = (((1, 2, 5, 5), (4, 2, 3, 3)),)
FORMS = {
    "dense": Form("direct", "dense", "packed-row dot products", _SMALL, 1, "direct"),
    "channelwise": Form("direct", "channelwise",
                        "channel-wise register blocks (depthwise)",
                        (((1, 2, 5, 5), (2, 1, 3, 3)),), 2, "direct"),
    "stem": Form("direct", "stem", "stem: register blocks of 8 output channels",
                 (((1, 2, 5, 5), (8, 2, 3, 3)),), 1, "direct"),
    "columns": Form("im2col", "columns", "im2col columns + GEMM", _SMALL, 1, "im2col"),
    "shared": Form("im2col", "columns", "columns shared by channel blocks + GEMM",
                   (((1, 16, 5, 5), (64, 16, 3, 3)),), 1, "im2col"),
    "shifted": Form("im2col", "shifted", "one GEMM per tap on a padded copy",
                    (((1, 16, 48, 48), (16, 16, 3, 2)),), 1, "im2col"),
    "winograd": Form("im2col", "winograd", "Winograd F(4x4,3x3) GEMMs",
                     (((1, 16, 48, 48), (16, 16, 3, 3)),), 1, "im2col"),
    "winograd_3d": Form("im2col", "winograd", "Winograd with a depth kernel: input "
                        "planes packed first", (((1, 16, 6, 24, 24), (16, 16, 3, 3, 3)),),
                        1, "im2col"),
    "weight_grad": Form("backward", "columns", "weight gradient by columns",
                        (((1, 2, 5, 5), (2, 2, 3, 3)),), 1, "backward"),
    "shifted_grad": Form("backward", "shifted", "weight gradient by shifted GEMMs",
                         (((1, 16, 48, 48), (16, 16, 3, 3)),), 1, "backward"),
    "col2im": Form("backward", "col2im", "input gradient by one GEMM and a scatter",
                   (((1, 4, 6, 6), (4, 4, 3, 3)),), 1, "input_grad"),
    "flipped_weight": Form("backward", "col2im", "the stride-1 input gradient's flipped "
                           "weight", (((1, 2, 5, 5), (2, 2, 3, 3)),), 1, "flipped_weight"),
    "channelwise_grad": Form("backward", "channelwise_grad", "depthwise weight gradient",
                             (((1, 2, 5, 5), (2, 1, 3, 3)),), 2, "backward"),
    "depthwise_input_grad": Form("backward", "phases", "strided depthwise input "
                                 "gradient, phase by phase",
                                 (((1, 2, 6, 6), (2, 1, 3, 3)),), 2, "input_grad"),
    "cl_gemm": Form("im2col", "channels_last", "channels-last rows + GEMM",
                    (((1, 5, 5, 16), (4, 16, 3, 3)),), 1, "im2col", "channels_last"),
    "cl_depthwise": Form("direct", "channels_last", "channels-last depthwise, "
                         "vectorised over channels", (((1, 8, 8, 2), (2, 1, 3, 3)),), 2,
                         "direct", "channels_last"),
    "cl_blocks": Form("direct", "channels_last", "channels-last dense: register "
                      "blocks of 8 positions x 2 vectors of output channels",
                      (((1, 16, 16, 2), (32, 2, 3, 3)),), 1, "direct", "channels_last"),
    "cl_grouped": Form("direct", "channels_last", "channels-last grouped: groups of 4 or "
                       "8 channels in a vector's lanes", (((1, 6, 6, 32), (32, 8, 3, 3)),),
                       4, "direct", "channels_last"),
    "cl_winograd": Form("im2col", "winograd_last", "channels-last Winograd F(4x4, 3x3), "
                        "in place", (((1, 48, 48, 16), (16, 16, 3, 3)),), 1, "im2col",
                        "channels_last"),
}

DTYPES = ("float32", "float64")
# Sets of kernels with the cached helpers only they call (helpers that kernels of two
# groups call, ``blas.gemm``, ``direct.plane_layout`` and ``direct.fill_plane``, are
# compiled into each caller):
# processes compiling different groups never write one cache index. Slowest to compile
# first, the order ``warmup`` deals them to its workers in.
GROUPS = ("stem", "winograd", "columns", "shifted", "channelwise", "dense",
          "channelwise_grad", "col2im", "channels_last", "winograd_last", "phases")
