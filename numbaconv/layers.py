"""Layer objects: Conv1d/2d/3d and ConvTranspose1d/2d/3d with forward and backward.

Each layer holds its ``weight`` and ``bias`` as NumPy arrays, initialised as PyTorch does
(uniform in ``+-1/sqrt(fan_in)``), keeps the input of its last forward call, and turns
an output gradient into the input gradient while setting ``grad_weight``/``grad_bias``.
"""

from __future__ import annotations

import math

import numpy as np

from ._spec import (
    PADDING_MODES,
    channels_first_shape,
    channels_last_shape,
    check_flag,
    check_layout,
    conv_geometry,
    dtype_itemsize,
    is_dask_array,
    layer_arguments,
    transpose_output_shape,
)
from ._channels_last import to_channels_first, to_channels_last
from ._dispatch import explain_geometry
from ._weight_cache import WeightCache
from .functional import _conv, conv, count_macs, count_params
from .gradients import (
    conv_backward,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
    weight_grad,
)

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
           "ConvTranspose3d"]


def _generator(rng):
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng={rng!r} must be None, an int seed or a numpy.random.Generator")


class _Layer:
    d = None
    transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 groups, bias, dtype, rng, layout):
        self.layout = check_layout(layout)
        args = layer_arguments(self.d, in_channels, out_channels, kernel_size, stride,
                               padding, dilation, groups, bias, dtype)
        self.in_channels, self.out_channels = args.in_channels, args.out_channels
        self.kernel_size = kernel_size = args.kernel_size
        self.stride, self.padding, self.dilation = args.stride, args.padding, args.dilation
        self.groups = groups = args.groups
        self.dtype = args.dtype
        bias = args.bias
        gen = _generator(rng)
        if self.transposed:
            shape = (self.in_channels, self.out_channels // groups) + kernel_size
            fan_in = (self.out_channels // groups) * math.prod(kernel_size)
        else:
            shape = (self.out_channels, self.in_channels // groups) + kernel_size
            fan_in = (self.in_channels // groups) * math.prod(kernel_size)
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = gen.uniform(-bound, bound, shape).astype(self.dtype)
        self.bias = (gen.uniform(-bound, bound, self.out_channels).astype(self.dtype)
                     if bias else None)
        self.grad_weight = None
        self.grad_bias = None
        self._input = None

    @property
    def num_params(self) -> int:
        """Trainable parameters: the weight's elements plus the bias's."""
        if self.transposed:  # the weight's first axis is in_channels, not the bias's
            return int(self.weight.size) + (0 if self.bias is None else self.out_channels)
        return count_params(self.weight.shape, bias=self.bias is not None)

    def __call__(self, x, **kwargs):
        return self.forward(x, **kwargs)

    def output_shape(self, input_shape):
        """Output shape for an input of ``input_shape`` (both in the layer's layout),
        without computing it."""
        shape = tuple(input_shape)
        if self.layout == "channels_first":
            return self._output_shape_of(shape)
        return channels_last_shape(self._output_shape_of(channels_first_shape(shape, self.d)),
                                   self.d)

    def _first_shape(self, input_shape) -> tuple:
        """``input_shape`` in the channels-first order."""
        if self.layout == "channels_first":
            return tuple(input_shape)
        return channels_first_shape(input_shape, self.d)

    def _check_grad(self, grad_out):
        if self._input is None:
            raise RuntimeError("backward() called before forward(): there is no input "
                               "to differentiate at")
        expected = self.output_shape(self._input.shape)
        grad_out = np.asarray(grad_out)
        if grad_out.shape != expected:
            raise ValueError(f"grad_out has shape {grad_out.shape}; expected {expected}, "
                             f"the shape of the last forward output")
        return grad_out

    def __repr__(self):
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}"
                + ("" if self.layout == "channels_first" else f", layout={self.layout!r}")
                + ")")


class _ConvNd(_Layer):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", *,
                 dtype=np.float32, rng=None, layout="channels_first"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, dtype, rng, layout)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode={padding_mode!r} is not one of "
                             f"{', '.join(map(repr, PADDING_MODES))}")
        self.padding_mode = padding_mode
        self._weight_cache = WeightCache()
        # Checks stride, padding and dilation now, on an input large enough for any.
        conv_geometry((self.in_channels,) + (1 << 30,) * self.d, self.weight.shape,
                      **self._kwargs())

    def _kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def forward(self, x, *, out=None):
        """The convolution of ``x`` ``(N, C_in, *spatial)`` (``(N, *spatial, C_in)`` in
        the channels-last layout), written into ``out`` when given (as
        :func:`numbaconv.conv`'s); keeps ``x`` for backward."""
        y = _conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                  self.groups, self.padding_mode, "auto", self.d, self.layout, out,
                  self._weight_cache)
        # A dask input stays lazy (np.asarray would compute all of it); backward then
        # refuses it, as conv_backward does.
        self._input = x if is_dask_array(x) else np.asarray(x)
        return y

    def backward(self, grad_out, *, input_grad=True):
        """Input gradient of the last forward call; sets ``grad_weight``, ``grad_bias``.

        With ``input_grad=False`` (a network's first layer) the input gradient is not
        computed and ``None`` is returned."""
        grad_out = self._check_grad(grad_out)
        gx, gw, gb = conv_backward(grad_out, self._input, self.weight, **self._kwargs(),
                                   padding_mode=self.padding_mode, bias=self.bias is not None,
                                   input_grad=input_grad, layout=self.layout)
        self.grad_weight = gw.astype(self.dtype, copy=False)
        self.grad_bias = None if gb is None else gb.astype(self.dtype, copy=False)
        return gx

    def _output_shape_of(self, input_shape):
        return conv_geometry(tuple(input_shape), self.weight.shape, **self._kwargs()
                             ).output_shape

    def macs(self, input_shape) -> int:
        """Multiply-accumulates of one forward call on ``input_shape``."""
        return count_macs(self._first_shape(input_shape), self.weight.shape,
                          **self._kwargs())

    def explain(self, input_shape, dtype=None):
        """The dispatcher's choice for this layer's forward call.

        As :func:`numbaconv.explain`, but counting the weight's transform as kept
        between calls (the layer caches it), which can make the layer's choice differ
        from the function's.

        Parameters
        ----------
        input_shape : tuple of int
            The input's shape, in the layer's layout.
        dtype : dtype-like, optional
            The computation's dtype; by default the layer's.

        Returns
        -------
        Explanation
            As :func:`numbaconv.explain` returns: ``print()`` it for the table of
            paths, forms and estimates.
        """
        geom = conv_geometry(self._first_shape(input_shape), self.weight.shape,
                             **self._kwargs())
        return explain_geometry(geom, dtype_itemsize(self.dtype if dtype is None
                                                     else dtype), cached_weights=True)


class _ConvTransposeNd(_Layer):
    transposed = True
    _functions = {1: conv_transpose1d, 2: conv_transpose2d, 3: conv_transpose3d}

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, *,
                 dtype=np.float32, rng=None, layout="channels_first"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, dtype, rng, layout)
        # Validates stride, padding, output_padding and dilation now.
        *_, self.stride, self.padding, self.dilation = transpose_output_shape(
            (self.in_channels,) + (1 << 30,) * self.d, self.weight.shape, stride, padding,
            output_padding, groups, dilation, d=self.d)
        self.output_padding = tuple(int(v) for v in (
            (output_padding,) * self.d if isinstance(output_padding, (int, np.integer))
            else output_padding))

    def _kwargs(self):
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding, groups=self.groups,
                    dilation=self.dilation)

    def forward(self, x):
        """The transposed convolution of ``x``; keeps ``x`` for backward."""
        y = self._functions[self.d](x, self.weight, self.bias, **self._kwargs(),
                                    layout=self.layout)
        self._input = np.asarray(x)
        return y

    def backward(self, grad_out, *, input_grad=True):
        """Input gradient of the last forward call; sets ``grad_weight``, ``grad_bias``.
        With ``input_grad=False`` the input gradient is not computed and ``None`` is
        returned.

        The transposed convolution's input gradient is the ordinary convolution of
        ``grad_out`` with the same weight; its weight gradient is the forward weight
        gradient with the roles of input and output gradient exchanged.
        """
        grad_out = self._check_grad(grad_out)
        check_flag("input_grad", input_grad)
        x = self._input
        if self.layout == "channels_last":  # computed channels-first, on copies
            x, grad_out = to_channels_first(x, self.d), to_channels_first(grad_out, self.d)
        dtype = np.result_type(x.dtype, self.weight.dtype, grad_out.dtype)
        dtype = np.float32 if dtype.kind == "f" and dtype.itemsize <= 4 else np.float64
        padding = self.padding
        stride, dilation = self.stride, self.dilation
        batched = x.ndim == self.d + 2
        g = grad_out if batched else grad_out[None]
        xb = x if batched else x[None]
        # y = conv_transpose(x)  <=>  x is the output gradient of conv(y_like, weight)
        # with y cropped: grad_x = conv(grad_out, weight) over the same geometry.
        gw = weight_grad(np.ascontiguousarray(xb, dtype=dtype),
                         np.ascontiguousarray(g, dtype=dtype),
                         self.weight.shape, stride, dilation, padding, self.groups)
        self.grad_weight = gw.astype(self.dtype, copy=False)
        self.grad_bias = (None if self.bias is None else
                          g.sum(axis=(0,) + tuple(range(2, 2 + self.d))).astype(self.dtype))
        if not input_grad:
            return None
        gx = conv(g, self.weight, None, stride, padding, dilation, self.groups)
        crop = tuple(slice(0, s) for s in xb.shape[2:])
        gx = gx[(Ellipsis,) + crop]
        if self.layout == "channels_last":
            gx = to_channels_last(gx, self.d)
        return np.ascontiguousarray(gx if batched else gx[0])

    def _output_shape_of(self, input_shape):
        batched, c_out, out, *_ = transpose_output_shape(
            tuple(input_shape), self.weight.shape, **self._kwargs(), d=self.d)
        lead = (input_shape[0],) if batched else ()
        return lead + (c_out,) + out

    def macs(self, input_shape) -> int:
        """Multiply-accumulates of one forward call: each input element times each
        kernel tap and output channel of its group."""
        shape = self._first_shape(input_shape)
        n = shape[0] if len(shape) == self.d + 2 else 1
        spatial = shape[-self.d:]
        return (n * self.in_channels * (self.out_channels // self.groups)
                * math.prod(self.kernel_size) * math.prod(spatial))


_CONV_DOC = """{d}D convolution layer, as ``torch.nn.Conv{d}d`` (NumPy arrays, float32 by
    default).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or tuple of {d} ints
    stride, padding, dilation, groups, padding_mode
        As for :func:`numbaconv.conv` (padding may be "same" or "valid").
    bias : bool
    dtype : float32 or float64
    rng : int, numpy.random.Generator or None
        Seeds the initialisation: weight and bias uniform in ``+-1/sqrt(fan_in)``,
        ``fan_in = in_channels / groups * prod(kernel_size)``.
    layout : {{"channels_first", "channels_last"}}
        The layout of inputs, outputs and their gradients (see
        :func:`numbaconv.conv`); ``layer(x, out=array)`` writes the result into
        ``array``.

    Attributes
    ----------
    weight : ndarray ``(out_channels, in_channels // groups, *kernel_size)``
    bias : ndarray ``(out_channels,)`` or None
    grad_weight, grad_bias : ndarray or None
        Set by :meth:`backward`.
    """

_TRANSPOSE_DOC = """{d}D transposed convolution layer, as ``torch.nn.ConvTranspose{d}d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or tuple of {d} ints
    stride, padding, output_padding, groups, dilation
        As for :func:`numbaconv.conv_transpose{d}d`.
    bias : bool
    dtype : float32 or float64
    rng : int, numpy.random.Generator or None
        Seeds the initialisation: uniform in ``+-1/sqrt(fan_in)``,
        ``fan_in = out_channels / groups * prod(kernel_size)`` (PyTorch's, computed
        from the weight's second axis).
    layout : {{"channels_first", "channels_last"}}
        The layout of inputs, outputs and their gradients.

    Attributes
    ----------
    weight : ndarray ``(in_channels, out_channels // groups, *kernel_size)``
    bias : ndarray ``(out_channels,)`` or None
    grad_weight, grad_bias : ndarray or None
        Set by :meth:`backward`.
    """

class Conv1d(_ConvNd):
    __doc__ = _CONV_DOC.format(d=1)
    d = 1


class Conv2d(_ConvNd):
    __doc__ = _CONV_DOC.format(d=2)
    d = 2


class Conv3d(_ConvNd):
    __doc__ = _CONV_DOC.format(d=3)
    d = 3


class ConvTranspose1d(_ConvTransposeNd):
    __doc__ = _TRANSPOSE_DOC.format(d=1)
    d = 1


class ConvTranspose2d(_ConvTransposeNd):
    __doc__ = _TRANSPOSE_DOC.format(d=2)
    d = 2


class ConvTranspose3d(_ConvTransposeNd):
    __doc__ = _TRANSPOSE_DOC.format(d=3)
    d = 3
