"""Gradients of the convolution and the transposed convolution (its adjoint).

Both are convolutions again, so both run on the fast paths:

- The input gradient at stride 1 is a convolution of the output gradient with the
  kernel flipped in space and its input and output channels swapped per group, padded
  by the dilated kernel's span minus one. At stride > 1 it is one GEMM of all the taps
  and a scatter (col2im, :mod:`numbaconv._col2im`), which does no work on zeros; with
  fewer than ``_col2im.MIN_CHANNELS`` output channels per group, the convolution again,
  of the output gradient spread out by the stride. That gives the gradient of the
  padded input; the padding is then folded back: cut off for zero padding, added onto
  the input's edges for reflect, replicate and circular padding.
- The weight gradient is ``grad_out[g] (C_out/G, P) @ columns[g].T (P, K)`` summed over
  samples: the forward im2col columns, one GEMM per block, accumulated in place (no two
  threads ever add into the same weight gradient). With one input channel per group
  (depthwise) a Numba kernel in which each thread owns whole output channels does it
  instead.
- The transposed convolution is the input gradient of the convolution whose weight it
  is given, for the input size it is asked to produce.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._col2im import input_grad_col2im, takes_col2im
from ._registry import METHODS
from ._im2col import im2col_weight_grad_of
from ._blas import single_threaded_blas
from ._direct import use_channelwise
from ._compile import Kernel, KernelNotReady, fallback_allowed
from ._fallback import weight_grad_taps
from ._kernels import col2im as _col2im_kernels
from ._kernels import grad as _grad_kernels
from ._kernels import phases as _phase_kernels
from ._channels_last import channels_first_copy, channels_last_copy
from ._padding import pad_input
from .functional import conv
from ._threads import kernel_launch
from ._spec import (
    to_3d,
    _checked_array,
    check_flag,
    check_layout,
    check_method,
    transpose_output_shape,
    as_arrays,
    check_bias,
    check_padding_mode,
    compute_dtype,
    conv_geometry,
)

__all__ = ["conv_backward", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]

channelwise_weight_grad = Kernel(_grad_kernels.channelwise_weight_grad, "channelwise_grad")
depthwise_input_grad = Kernel(_phase_kernels.depthwise_input_grad, "depthwise_input_grad")
flip_taps = Kernel(_col2im_kernels.flip_taps, "flipped_weight")


def _source_index(j: int, size: int, mode: str) -> int:
    """The input index that padded position ``j`` (relative to the input's start)
    copies, for the non-zero padding modes."""
    if mode == "reflect":
        return -j if j < 0 else 2 * (size - 1) - j
    if mode == "replicate":
        return 0 if j < 0 else size - 1
    return j % size  # circular


def fold_padding(grad_padded, pads, spatial, mode):
    """Adjoint of padding: the gradient of the unpadded input from that of the padded one.

    ``grad_padded`` is ``(N, C, *padded)``; ``pads`` the ``(before, after)`` pairs. Zero
    padding drops the border; the other modes add each border element's gradient onto
    the input element it copied, axis by axis (the per-axis paddings commute).
    """
    g = grad_padded
    for axis, (size, (lo, hi)) in enumerate(zip(spatial, pads)):
        axis += 2
        moved = np.moveaxis(g, axis, -1)
        inner = moved[..., lo: lo + size].copy()
        if mode != "zeros":
            for t in [*range(lo), *range(lo + size, lo + size + hi)]:
                inner[..., _source_index(t - lo, size, mode)] += moved[..., t]
        g = np.moveaxis(inner, -1, axis)
    return np.ascontiguousarray(g)


def padded_input_grad(grad_out, weight, padded, stride, dilation, groups, method="auto",
                      crop=None, bias=None):
    """Gradient of the zero-padded input ``(N, C_in, *padded)`` of a convolution, plus
    ``bias`` ``(C_in,)`` if given (the transposed convolution's, added by the kernels as
    they write, not in a pass of its own).

    ``grad_out`` ``(N, C_out, *out)``, ``weight`` ``(C_out, C_in/groups, *kernel)`` and
    the bias are arrays of the computation dtype; ``padded`` is the padded input's
    spatial shape. Positions no output reads (past the last window) get zero (or the
    bias). With ``crop``, ``(start, size)`` per axis, only that window of it is
    returned, computed directly when the window lies within the reach of the kernel (no
    work on the padding).

    At stride > 1 with a few output channels per group or more, one GEMM and a scatter
    (:mod:`numbaconv._col2im`) do it, and for a 1D or 2D depthwise layer a kernel that
    sums each stride phase apart (:mod:`numbaconv._kernels.phases`); ``method`` is then
    not used. Otherwise it is a convolution (on the path ``method``) of the output
    gradient, spread out with zeros at stride > 1, with the kernel flipped and its
    channels swapped per group.
    """
    n, c_out = grad_out.shape[:2]
    kernel = weight.shape[2:]
    cog = c_out // groups
    if takes_col2im(stride, cog):
        try:
            with fallback_allowed():
                return input_grad_col2im(grad_out, weight,
                                         crop or [(0, p) for p in padded], stride,
                                         dilation, groups, bias)
        except KernelNotReady:
            pass  # its kernel compiles in the background: meanwhile, the convolution
    if (any(s > 1 for s in stride) and len(stride) < 3 and groups == c_out
            and weight.shape[1] == 1):
        try:
            with fallback_allowed():
                return _depthwise_input_grad(grad_out, weight, padded, stride, dilation,
                                             crop, bias)
        except KernelNotReady:
            pass  # its kernel compiles in the background: meanwhile, the convolution
    out = grad_out.shape[2:]
    spans = [(k - 1) * dl + 1 for k, dl in zip(kernel, dilation)]
    if any(s > 1 for s in stride):
        spread = np.zeros((n, c_out) + tuple((o - 1) * s + 1 for o, s in zip(out, stride)),
                          dtype=grad_out.dtype)
        spread[(Ellipsis,) + tuple(slice(None, None, s) for s in stride)] = grad_out
    else:
        spread = grad_out
    flipped = flipped_weight(weight, groups)
    if crop is not None:
        # Output t of the flipped convolution is padded position t + start.
        before = [s - 1 - start for s, (start, _) in zip(spans, crop)]
        after = [size - e - b + s - 1 for size, e, b, s in
                 zip((size for _, size in crop), spread.shape[2:], before, spans)]
        if min(before) >= 0 and min(after) >= 0:
            return conv(spread, flipped, bias, 1, tuple(zip(before, after)), dilation,
                        groups, method=method)
    full = conv(spread, flipped, None, 1, tuple((s - 1, s - 1) for s in spans), dilation,
                groups, method=method)
    if full.shape[2:] != tuple(padded):
        grown = np.zeros(full.shape[:2] + tuple(padded), dtype=full.dtype)
        grown[(Ellipsis,) + tuple(slice(0, e) for e in full.shape[2:])] = full
        full = grown
    if crop is not None:
        full = np.ascontiguousarray(
            full[(Ellipsis,) + tuple(slice(a, a + n) for a, n in crop)])
    if bias is not None:  # positions past the convolution's reach get the bias too
        full += bias.reshape((1, -1) + (1,) * (full.ndim - 2))
    return full


def _depthwise_input_grad(grad_out, weight, padded, stride, dilation, crop, bias):
    """:func:`padded_input_grad` of a strided 1D or 2D depthwise layer (one input and
    one output channel per group) by its own kernel
    (:func:`numbaconv._kernels.phases.depthwise_input_grad`), on the window ``crop``
    (or the whole padded input)."""
    n, c = grad_out.shape[:2]
    d = len(padded)
    window = crop or [(0, p) for p in padded]
    dtype = grad_out.dtype

    def plane(values, fill=1):  # per-axis values as (h, w): 1D as H = 1
        return to_3d(values, d, fill)[1:]

    out = np.empty((n, c) + tuple(size for _, size in window), dtype=dtype)
    g4 = np.ascontiguousarray(grad_out).reshape((n, c) + plane(grad_out.shape[2:]))
    w3 = np.ascontiguousarray(weight, dtype=dtype).reshape((c,) + plane(weight.shape[2:]))
    b = np.zeros(c, dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    with kernel_launch:
        depthwise_input_grad(g4, w3, out.reshape((n, c) + plane(out.shape[2:])), b,
                             plane(stride), plane(dilation),
                             plane([start for start, _ in window], 0),
                             numba.get_num_threads())
    return out


def flipped_weight(weight, groups):
    """The kernel of the stride-1 input gradient's convolution: ``weight`` ``(C_out,
    C_in/groups, *kernel)`` flipped in space, its channels swapped per group, as
    ``(C_in, C_out/groups, *kernel)``."""
    c_out, c_in_g = weight.shape[:2]
    kernel = weight.shape[2:]
    cog = c_out // groups
    taps = math.prod(kernel)
    w4 = np.ascontiguousarray(weight).reshape(groups, cog, c_in_g, taps)
    out = np.empty((groups, c_in_g, cog, taps), dtype=weight.dtype)
    try:
        with fallback_allowed(), kernel_launch:
            flip_taps(w4, out)
    except KernelNotReady:  # compiling in the background: NumPy's copy meanwhile
        out[...] = w4[..., ::-1].swapaxes(1, 2)
    return out.reshape((groups * c_in_g, cog) + kernel)


def weight_grad(g, x, weight_shape, stride, dilation, pad_before, groups):
    """im2col columns of ``x`` times the output gradient ``g``, summed over samples.

    ``g`` ``(N, C_out, *out)``, ``x`` ``(N, C_in, *spatial)`` (both of the computation
    dtype) and ``pad_before`` per axis: zero padding before each axis.
    """
    d = len(weight_shape) - 2
    n, c_in = x.shape[:2]
    c_out, c_in_g = weight_shape[:2]
    kernel = tuple(weight_shape[2:])
    cog = c_out // groups
    out = g.shape[2:]
    x6 = np.ascontiguousarray(x).reshape((n, groups, c_in_g) + to_3d(x.shape[2:], d, 1))
    args = (to_3d(kernel, d, 1), to_3d(stride, d, 1), to_3d(dilation, d, 1),
            to_3d(pad_before, d, 0))
    try:
        with fallback_allowed():
            return _weight_grad_kernels(g, x6, weight_shape, *args)
    except KernelNotReady:
        # The kernel compiles in a background process (see numbaconv._compile).
        with single_threaded_blas:
            gw = weight_grad_taps(x6, g.reshape((n, groups, cog) + to_3d(out, d, 1)),
                                  *args)
        return gw.reshape(weight_shape)


def channel_blocks(groups, cog, threads) -> int:
    """Blocks of each group's output channels for the channel-wise weight gradient:
    one (the group's input planes copied once) where the groups alone give every
    thread two jobs, else enough blocks for that (a 1-channel stem's 64 output
    channels, in one group, take 4 blocks of 16 on 2 threads)."""
    return min(cog, max(1, -(-2 * threads // groups)))


def _weight_grad_kernels(g, x6, weight_shape, kernel, stride, dilation, pad_before):
    """:func:`weight_grad` by the compiled kernels (arguments as ``(d, h, w)``)."""
    n, groups, c_in_g = x6.shape[:3]
    cog = weight_shape[0] // groups
    out = g.shape[2:]
    d = len(out)
    # Depthwise always: its GEMM would be thousands of matrix-vector products, even
    # where the forward pass prefers the dense kernel (few planes, many taps).
    if c_in_g == 1 or use_channelwise(c_in_g, cog, math.prod(kernel),
                                      n * groups * cog * to_3d(out, d, 1)[0],
                                      numba.get_num_threads()):
        # (G, COg, KD, Cg, KH, KW), as the kernel writes it
        gw = np.empty((groups, cog, kernel[0], c_in_g) + kernel[1:], dtype=g.dtype)
        with kernel_launch:
            channelwise_weight_grad(x6, g.reshape((n, groups, cog) + to_3d(out, d, 1)),
                                    gw, stride, dilation, pad_before,
                                    channel_blocks(groups, cog, numba.get_num_threads()))
        return np.ascontiguousarray(gw.transpose(0, 1, 3, 2, 4, 5)).reshape(weight_shape)
    g4 = g.reshape(n, groups, cog, -1)
    gw = im2col_weight_grad_of(x6, g4, kernel, stride, dilation, pad_before,
                               to_3d(out, d, 1))
    return gw.reshape(weight_shape)


def conv_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                  padding_mode="zeros", bias=True, input_grad=True,
                  layout="channels_first"):
    """Gradients of a convolution with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : array_like
        Gradient of the loss with respect to the output of
        ``conv(x, weight, bias, stride, padding, dilation, groups, padding_mode=...)``;
        it must have that output's shape.
    x, weight, stride, padding, dilation, groups, padding_mode
        As given to the forward :func:`numbaconv.conv` (the bias does not enter).
    bias : bool
        Whether to return the bias gradient (``grad_out`` summed over all but the
        channel axis) or ``None``.
    input_grad : bool
        Whether to compute the input gradient; with ``False`` (a network's first
        layer needs none) ``grad_x`` is ``None`` and no time is spent on it.
    layout : {"channels_first", "channels_last"}
        The layout of ``x``, ``grad_out`` and ``grad_x`` (see :func:`numbaconv.conv`).
        Channels-last gradients are computed on transposed copies.

    Returns
    -------
    grad_x, grad_weight, grad_bias : numpy.ndarray or None
        Shaped like ``x`` (or ``None``, see ``input_grad``), ``weight`` and
        ``(C_out,)``; float32 when every input is
        float32 or float16, else float64. Reflect, replicate and circular padding add
        the gradient of each padded element onto the input element it copied.

    Raises
    ------
    ValueError, TypeError
        On any invalid argument (including a ``grad_out`` of the wrong shape), before
        any work, naming the parameter and its value.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x = np.ones((1, 1, 4)); w = np.ones((1, 1, 2))
    >>> gx, gw, gb = numbaconv.conv_backward(np.ones((1, 1, 3)), x, w)
    >>> gx[0, 0], gw[0, 0], gb
    (array([1., 2., 2., 1.]), array([3., 3.]), array([3.]))
    """
    x, weight, _ = as_arrays(x, weight, None)
    grad_out = _checked_array("grad_out", grad_out)
    d = weight.ndim - 2
    if check_layout(layout) == "channels_last" and _layout_ranks(d, x, grad_out):
        dtype = compute_dtype(x, weight, grad_out)
        grad_x, grad_weight, grad_bias = conv_backward(
            channels_first_copy(grad_out, d, dtype), channels_first_copy(x, d, dtype),
            weight, stride, padding, dilation, groups, padding_mode=padding_mode,
            bias=bias, input_grad=input_grad)
        if grad_x is not None:
            grad_x = channels_last_copy(grad_x, d)
        return grad_x, grad_weight, grad_bias
    geom = conv_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    padding_mode = check_padding_mode(padding_mode, geom)
    check_flag("bias", bias)
    check_flag("input_grad", input_grad)
    if grad_out.shape != geom.output_shape:
        raise ValueError(
            f"grad_out has shape {grad_out.shape}; expected {geom.output_shape}, the "
            f"output shape of this convolution")
    dtype = compute_dtype(x, weight, grad_out)
    d = geom.d
    batched = geom.batch is not None
    xb = x if batched else x[None]
    g = np.ascontiguousarray(grad_out if batched else grad_out[None], dtype=dtype)
    w = np.ascontiguousarray(weight, dtype=dtype)
    spatial_axes = tuple(range(2, 2 + d))
    grad_bias = g.sum(axis=(0,) + spatial_axes) if bias else None
    if xb.shape[0] == 0:
        return (np.zeros(x.shape, dtype) if input_grad else None,
                np.zeros(weight.shape, dtype), grad_bias)
    pads = geom.padding
    xd = xb.astype(dtype, copy=False)
    if padding_mode != "zeros" and any(p for pair in pads for p in pair):
        xd = pad_input(xd, pads, padding_mode)
        pad_before = (0,) * d
    else:
        pad_before = tuple(lo for lo, _ in pads)
    grad_weight = weight_grad(g, xd, weight.shape, geom.stride, geom.dilation,
                               pad_before, geom.groups)
    if not input_grad:
        return None, grad_weight, grad_bias
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(geom.spatial, pads))
    if padding_mode == "zeros":
        grad_x = padded_input_grad(g, w, padded, geom.stride, geom.dilation, geom.groups,
                                   crop=[(lo, s) for (lo, _), s in zip(pads, geom.spatial)])
    else:
        grad_padded = padded_input_grad(g, w, padded, geom.stride, geom.dilation,
                                        geom.groups)
        grad_x = fold_padding(grad_padded, pads, geom.spatial, padding_mode)
    return (grad_x if batched else grad_x[0]), grad_weight, grad_bias


def _layout_ranks(d, *arrays) -> bool:
    """Whether every array has the rank of a ``d``-dim convolution's input (batched or
    not), so that its channel axis can be moved; otherwise the channels-first checks
    report the shapes."""
    return d in (1, 2, 3) and all(a.ndim in (d + 1, d + 2) for a in arrays)


def _conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation,
                    method, d, layout):
    x, weight, bias = as_arrays(x, weight, bias)
    if check_layout(layout) == "channels_last" and _layout_ranks(d, x):
        dtype = compute_dtype(*(a for a in (x, weight, bias) if a is not None))
        y = _conv_transpose(channels_first_copy(x, d, dtype), weight, bias, stride,
                            padding, output_padding, groups, dilation, method, d,
                            "channels_first")
        return channels_last_copy(y, d)
    batched, c_out, out, stride, padding, dilation = transpose_output_shape(
        x.shape, weight.shape, stride, padding, output_padding, groups, dilation, d=d)
    check_bias(bias, c_out)
    method = check_method(method, METHODS)
    dtype = compute_dtype(x, weight, *(() if bias is None else (bias,)))
    xb = x if batched else x[None]
    if xb.shape[0] == 0:
        return np.zeros((0, c_out) + out, dtype=dtype)
    g = np.ascontiguousarray(xb, dtype=dtype)
    w = np.ascontiguousarray(weight, dtype=dtype)
    padded = tuple(o + 2 * p for o, p in zip(out, padding))
    y = padded_input_grad(g, w, padded, stride, dilation, groups, method,
                          crop=list(zip(padding, out)),
                          bias=None if bias is None else np.ascontiguousarray(bias, dtype))
    return y if batched else y[0]


_TRANSPOSE_DOC = """{d}D transposed convolution, as ``torch.nn.functional.conv_transpose{d}d``.

    The adjoint of ``conv{d}d``: each input element scatters ``weight[c]``, scaled, into
    the output at ``stride`` spacing. Output size per axis: ``(in - 1) * stride - 2 *
    padding + dilation * (kernel - 1) + output_padding + 1``.

    Parameters
    ----------
    x : array_like
        ``(N, C_in, {spatial})`` or unbatched ``(C_in, {spatial})``.
    weight : array_like
        ``(C_in, C_out // groups, {kernel})``.
    bias : array_like, optional
        ``(C_out,)``.
    stride, dilation : int or tuple of {d} ints, each >= 1
    padding : int or tuple of {d} ints, each >= 0
        Removed from both ends of every axis of the full result (zeros padding).
    output_padding : int or tuple of {d} ints
        Extra size on the far end of each axis; must be smaller than the stride or the
        dilation of that axis.
    groups : int
        Divides ``C_in``.
    method : {{"auto", "direct", "im2col", "fft"}}
        The path of the underlying convolution. At stride > 1 with at least
        ``numbaconv._col2im.MIN_CHANNELS`` output channels per group the result is one
        GEMM and a scatter (col2im) whatever the ``method``, which then only applies
        while that kernel compiles.
    layout : {{"channels_first", "channels_last"}}
        With "channels_last", ``x`` is ``(N, {spatial}, C_in)`` and the result
        ``(N, {spatial_out}, C_out)`` (computed on transposed copies); the weight's
        order is the same in both.

    Returns
    -------
    numpy.ndarray
        ``(N, C_out, {spatial_out})``, float32 or float64 as for :func:`numbaconv.conv`.

    Raises
    ------
    ValueError, TypeError
        On any invalid argument, before any work, naming the parameter and its value.
    """


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, method="auto", layout="channels_first"):
    return _conv_transpose(x, weight, bias, stride, padding, output_padding, groups,
                           dilation, method, 1, layout)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, method="auto", layout="channels_first"):
    return _conv_transpose(x, weight, bias, stride, padding, output_padding, groups,
                           dilation, method, 2, layout)


def conv_transpose3d(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, method="auto", layout="channels_first"):
    return _conv_transpose(x, weight, bias, stride, padding, output_padding, groups,
                           dilation, method, 3, layout)


for _fn, _d, _sp, _k, _so in (
        (conv_transpose1d, 1, "L", "k", "L_out"),
        (conv_transpose2d, 2, "H, W", "kh, kw", "H_out, W_out"),
        (conv_transpose3d, 3, "D, H, W", "kd, kh, kw", "D_out, H_out, W_out")):
    _fn.__doc__ = _TRANSPOSE_DOC.format(d=_d, spatial=_sp, kernel=_k, spatial_out=_so)
