"""Public convolution functions: NumPy inputs go to :mod:`numbaconv._conv_arrays`
(arguments -> plan -> runner), dask arrays to :mod:`numbaconv._dask`."""

from __future__ import annotations

import numpy as np

from ._channels_last import to_channels_first, to_channels_last
from ._conv_arrays import conv_arrays
from ._spec import check_flag, check_layout, conv_geometry, is_dask_array, weight_shape_dims

__all__ = [
    "conv", "conv1d", "conv2d", "conv3d", "output_shape", "count_params", "count_macs",
]


def _conv(x, weight, bias, stride, padding, dilation, groups, padding_mode, method, d,
          layout, out, weight_cache=None):
    """The public functions' body; a layer's call passes its ``weight_cache`` (used for
    in-memory inputs: each block of a dask array is a call of its own)."""
    if is_dask_array(x):
        return _dask_conv(x, weight, bias, stride, padding, dilation, groups,
                          padding_mode, method, d, layout, out)
    return conv_arrays(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                       method, d, layout, out, weight_cache)


def _dask_conv(x, weight, bias, stride, padding, dilation, groups, padding_mode, method,
               d, layout, out):
    """A dask input: a lazy result, so no ``out=``; channels-last as a lazy transpose
    (the channel axis is one chunk, so each block is transposed in memory)."""
    from ._dask import dask_conv

    if out is not None:
        raise TypeError("out= does not take a dask input (the result is a lazy dask "
                        "array; store it with dask.array.store or to_zarr instead)")
    if check_layout(layout) == "channels_first":
        return dask_conv(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                         method, d)
    d = np.ndim(weight) - 2 if d is None else d
    # np.moveaxis dispatches to dask's own, which stays lazy.
    y = dask_conv(to_channels_first(x, d), weight, bias, stride, padding, dilation,
                  groups, padding_mode, method, d)
    return to_channels_last(y, d)


_CONV_DOC = """{summary}

    Computes ``y[n, o, i] = bias[o] + sum_{{c, u}} weight[o, c, u] * x_padded[n, g*Cg + c,
    stride*i + dilation*u]`` (cross-correlation, as ``torch.nn.functional.conv{dims}``),
    where ``g`` is the group of output channel ``o`` and ``Cg = C_in / groups``.

    Parameters
    ----------
    x : array_like
        Input {x_shape} (``(N, *spatial, C_in)`` with ``layout="channels_last"``), or
        unbatched without the leading ``N``. Any real dtype and
        memory layout; it is never modified. A ``dask.array.Array`` gives a lazy dask
        array of the same values, computed chunk by chunk (the ``dask`` extra; see the
        README's "Dask arrays").
    weight : array_like
        Kernel ``(C_out, C_in // groups, {kernel})``.
    bias : array_like, optional
        ``(C_out,)``, added to every output of its channel.
    stride, dilation : int or tuple of ints
        Per spatial axis, each >= 1.
    padding : int, tuple, tuple of (before, after) pairs, "valid" or "same"
        "same" gives output size ``ceil(size / stride)`` with the odd pad element after.
    groups : int
        Splits input and output channels into ``groups`` independent convolutions;
        ``groups == C_in`` is depthwise.
    padding_mode : {{"zeros", "reflect", "replicate", "circular"}}
        How the padded border is filled, as ``torch.nn.Conv{dims}``.
    method : {{"auto", "direct", "im2col", "fft"}}
        The computation path. "auto" takes the one with the lowest estimated time (see
        :func:`numbaconv.explain`), never "fft" when the input or weight holds NaN or
        Inf. "direct": Numba loop kernels; "im2col": columns and a BLAS GEMM, in blocks
        of at most ``config.IM2COL_BUDGET_BYTES``; "fft": ``scipy.fft`` spectra, blocked
        along long axes (an explicit "fft" spreads a NaN or Inf to every output).
    layout : {{"channels_first", "channels_last"}}
        Where the channel axis is, in ``x`` and in the result: second (after ``N``),
        as PyTorch, or last, as NumPy images ``(H, W, C)`` and TensorFlow. The weight is
        ``(C_out, C_in // groups, {kernel})`` in both. Channels-last depthwise layers and
        dense layers on the GEMM path (pointwise ones, and others with at least 16 input
        channels) run on that layout in place; the rest on transposed copies.
    out : numpy.ndarray, optional
        Where to write the result: a writeable C-contiguous array of exactly the
        result's shape and dtype that shares no memory with ``x``, ``weight`` or
        ``bias`` (else a ValueError or TypeError naming ``out``, before any work). Not
        with a dask ``x``.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        C-contiguous ``(N, C_out, *out)`` (channels-last ``(N, *out, C_out)``; unbatched
        in, unbatched out; ``out`` itself when given), float32 when every
        input is float32 or float16 (or an integer type mixed with those), else float64.

    Raises
    ------
    ValueError, TypeError
        On any invalid argument, before any work, naming the parameter and its value.
    {extra}"""


def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
         padding_mode="zeros", method="auto", layout="channels_first", out=None):
    return _conv(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                 method, None, layout, out)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", method="auto", layout="channels_first", out=None):
    return _conv(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                 method, 1, layout, out)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", method="auto", layout="channels_first", out=None):
    return _conv(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                 method, 2, layout, out)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", method="auto", layout="channels_first", out=None):
    return _conv(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                 method, 3, layout, out)


conv.__doc__ = _CONV_DOC.format(
    summary="N-dimensional convolution layer (1D, 2D or 3D, taken from ``weight.ndim - 2``).",
    dims="*d", x_shape="``(N, C_in, *spatial)``", kernel="*kernel",
    extra="""
    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x = np.zeros((5, 5)); x[2:] = 1
    >>> k = np.array([[-1., -1, -1], [0, 0, 0], [1, 1, 1]])
    >>> numbaconv.conv(x[None, None], k[None, None])[0, 0]
    array([[3., 3., 3.],
           [3., 3., 3.],
           [0., 0., 0.]])
    """,
)
conv1d.__doc__ = _CONV_DOC.format(
    summary="1D convolution layer over ``(N, C_in, L)`` inputs.",
    dims="1d", x_shape="``(N, C_in, L)``", kernel="k", extra="",
)
conv2d.__doc__ = _CONV_DOC.format(
    summary="2D convolution layer over ``(N, C_in, H, W)`` inputs.",
    dims="2d", x_shape="``(N, C_in, H, W)``", kernel="kh, kw", extra="",
)
conv3d.__doc__ = _CONV_DOC.format(
    summary="3D convolution layer over ``(N, C_in, D, H, W)`` inputs.",
    dims="3d", x_shape="``(N, C_in, D, H, W)``", kernel="kd, kh, kw", extra="",
)


def output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1):
    """Shape of the convolution's output, without computing it.

    Parameters
    ----------
    input_shape : tuple of int
        ``(N, C_in, *spatial)`` or unbatched ``(C_in, *spatial)``.
    weight_shape : tuple of int
        ``(C_out, C_in // groups, *kernel)``; the number of spatial axes is
        ``len(weight_shape) - 2``.
    stride, padding, dilation
        As for :func:`conv`.

    Returns
    -------
    tuple of int
        ``(N, C_out, *out)`` (or ``(C_out, *out)`` for an unbatched input shape).

    Examples
    --------
    >>> output_shape((1, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    (1, 64, 112, 112)
    """
    return conv_geometry(input_shape, weight_shape, stride, padding, dilation,
                         _implied_groups(input_shape, weight_shape)).output_shape


def _implied_groups(input_shape, weight_shape) -> int:
    """groups = C_in / (C_in / groups), where the shapes allow it; else 1, which lets
    conv_geometry report what is wrong with the shapes."""
    try:
        d = len(weight_shape) - 2
        in_channels, per_group = int(input_shape[-d - 1]), int(weight_shape[1])
    except (TypeError, ValueError, IndexError):
        return 1
    if d >= 1 and per_group >= 1 and in_channels % per_group == 0 and in_channels > 0:
        return in_channels // per_group
    return 1


def count_params(weight_shape, bias=True):
    """Number of trainable parameters of a convolution layer.

    Parameters
    ----------
    weight_shape : tuple of int
        ``(C_out, C_in // groups, *kernel)``.
    bias : bool
        Whether the layer has a bias (``C_out`` more parameters).

    Returns
    -------
    int
        ``C_out * (C_in // groups) * prod(kernel) + (C_out if bias else 0)``.

    Examples
    --------
    >>> count_params((64, 3, 7, 7))
    9472
    """
    dims = weight_shape_dims(weight_shape)
    check_flag("bias", bias)
    return int(np.prod(dims, dtype=object)) + (dims[0] if bias else 0)


def count_macs(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1):
    """Multiply-accumulates of one forward convolution (one MAC is two FLOPs).

    Parameters
    ----------
    input_shape, weight_shape, stride, padding, dilation, groups
        As for :func:`conv` (shapes instead of arrays).

    Returns
    -------
    int
        ``N * C_out * (C_in // groups) * prod(kernel) * prod(out)`` (``N = 1`` for an
        unbatched shape).

    Examples
    --------
    >>> count_macs((1, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    118013952
    """
    return conv_geometry(input_shape, weight_shape, stride, padding, dilation, groups).macs
