"""Argument normalisation and validation for convolutions of any dimensionality.

Everything a user passes is checked here, once, before any work is done; kernels trust
what they receive. Pure Python and NumPy: nothing here compiles.
"""

from __future__ import annotations

import math
import operator
import sys
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("valid", "same")


def to_3d(values, d: int, fill: int) -> tuple:
    """Per-axis values of a ``d``-dim convolution as (d, h, w) triples."""
    return (fill,) * (3 - d) + tuple(values)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _int_tuple(name: str, value, d: int, minimum: int) -> tuple[int, ...]:
    """``value`` as a tuple of ``d`` ints, each >= ``minimum``."""
    if _is_int(value):
        items = (int(value),) * d
    elif isinstance(value, (tuple, list)):
        if len(value) != d or not all(_is_int(v) for v in value):
            raise ValueError(f"{name}={value!r} must be an int or a tuple of {d} ints")
        items = tuple(int(v) for v in value)
    else:
        raise TypeError(f"{name}={value!r} must be an int or a tuple of {d} ints")
    if any(v < minimum for v in items):
        raise ValueError(f"{name}={value!r} must be >= {minimum}")
    return items


def _padding_pairs(padding, d: int) -> tuple[tuple[int, int], ...] | str:
    """Explicit padding as ``d`` ``(before, after)`` pairs; "same"/"valid" returned as is."""
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise ValueError(
                f"padding={padding!r} is not a padding string; expected one of "
                f"{', '.join(map(repr, PADDING_STRINGS))}, an int or a tuple"
            )
        return padding
    message = (
        f"padding={padding!r} must be an int >= 0, a tuple of {d} ints, a tuple of {d} "
        f"(before, after) pairs, 'valid' or 'same'"
    )
    if _is_int(padding):
        pairs = ((int(padding), int(padding)),) * d
    elif isinstance(padding, (tuple, list)) and len(padding) == d:
        if all(_is_int(p) for p in padding):
            pairs = tuple((int(p), int(p)) for p in padding)
        elif all(
            isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_int(q) for q in p)
            for p in padding
        ):
            pairs = tuple((int(p[0]), int(p[1])) for p in padding)
        else:
            raise ValueError(message)
    else:
        raise (ValueError if isinstance(padding, (tuple, list)) else TypeError)(message)
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"padding={padding!r} must not be negative")
    return pairs


def _same_padding(spatial, kernel, stride, dilation) -> tuple[tuple[int, int], ...]:
    """TensorFlow's "same": output ceil(size / stride), the odd pad element after."""
    pairs = []
    for size, k, s, dil in zip(spatial, kernel, stride, dilation):
        out = -(-size // s)
        total = max((out - 1) * s + dil * (k - 1) + 1 - size, 0)
        pairs.append((total // 2, total - total // 2))
    return tuple(pairs)


def _output_spatial(spatial, kernel, stride, dilation, pads, shape_names) -> tuple[int, ...]:
    out = []
    for axis, (size, k, s, dil, (lo, hi)) in enumerate(
        zip(spatial, kernel, stride, dilation, pads)
    ):
        padded = size + lo + hi
        span = dil * (k - 1) + 1
        if span > padded:
            raise ValueError(
                f"kernel size {k} with dilation {dil} (span {span}) is larger than the padded "
                f"input ({size} + {lo} + {hi} = {padded}) on spatial axis {axis} of "
                f"{shape_names}"
            )
        out.append((padded - span) // s + 1)
    return tuple(out)


def _shape_tuple(name: str, shape) -> tuple[int, ...]:
    try:
        dims = tuple(operator.index(v) for v in shape)
    except TypeError:
        if hasattr(shape, "shape") and hasattr(shape, "dtype"):  # an array, not a shape
            raise TypeError(f"{name} must be a tuple of ints, not an array of shape "
                            f"{tuple(shape.shape)} (pass its .shape)") from None
        raise TypeError(f"{name}={shape!r} must be a tuple of ints") from None
    if any(v < 0 for v in dims):
        raise ValueError(f"{name}={shape!r} must not have negative sizes")
    return dims


@dataclass(frozen=True)
class ConvGeometry:
    """Shapes and normalised parameters of one convolution (no data, no dtype).

    Attributes hold per-axis tuples of length ``d``; ``padding`` is ``d`` (before, after)
    pairs; ``batch`` is ``None`` for unbatched input.
    """

    d: int
    batch: int | None
    in_channels: int
    out_channels: int
    groups: int
    spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    out_spatial: tuple[int, ...]

    @property
    def output_shape(self) -> tuple[int, ...]:
        lead = () if self.batch is None else (self.batch,)
        return lead + (self.out_channels,) + self.out_spatial

    @property
    def macs(self) -> int:
        n = 1 if self.batch is None else self.batch
        return (
            n
            * self.out_channels
            * (self.in_channels // self.groups)
            * math.prod(self.kernel)
            * math.prod(self.out_spatial)
        )


def conv_geometry(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                  *, d: int | None = None) -> ConvGeometry:
    """Validate shapes and parameters; return the normalised :class:`ConvGeometry`.

    ``d`` fixes the dimensionality (conv1d/2d/3d); by default it is ``len(weight_shape) - 2``.
    Results are cached by the arguments' repr (layers call with the same ones over and
    over); errors are raised afresh each time.
    """
    args = (input_shape, weight_shape, stride, padding, dilation, groups, d)
    # Keyed by repr, not by value: 1 == 1.0 == True, but only 1 is a valid stride.
    key = repr(args)
    cached = _GEOMETRIES.get(key)
    if cached is None:
        cached = _conv_geometry(*args)
        if len(_GEOMETRIES) >= 256:
            _GEOMETRIES.clear()
        _GEOMETRIES[key] = cached
    return cached


_GEOMETRIES: dict = {}


def _conv_geometry(
    input_shape,
    weight_shape,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    d: int | None = None,
) -> ConvGeometry:
    input_shape = _shape_tuple("input shape", input_shape)
    weight_shape = _shape_tuple("weight shape", weight_shape)
    if d is None:
        d = len(weight_shape) - 2
        if d not in (1, 2, 3):
            raise ValueError(
                f"weight has shape {weight_shape} (ndim {len(weight_shape)}); expected "
                f"ndim 3, 4 or 5: (out_channels, in_channels/groups, *kernel) for 1, 2 or "
                f"3 spatial dimensions"
            )
    elif len(weight_shape) != d + 2:
        raise ValueError(
            f"weight has shape {weight_shape} (ndim {len(weight_shape)}); a {d}D "
            f"convolution needs ndim {d + 2}: (out_channels, in_channels/groups, *kernel)"
        )
    if len(input_shape) not in (d + 1, d + 2):
        raise ValueError(
            f"input has shape {input_shape} (ndim {len(input_shape)}); a {d}D convolution "
            f"needs ndim {d + 2} (N, C_in, *spatial) or {d + 1} (C_in, *spatial)"
        )
    batched = len(input_shape) == d + 2
    batch = input_shape[0] if batched else None
    in_channels = input_shape[1 if batched else 0]
    spatial = input_shape[-d:]
    out_channels, per_group = weight_shape[:2]
    kernel = weight_shape[2:]
    if out_channels < 1 or per_group < 1 or min(kernel) < 1:
        raise ValueError(f"weight has shape {weight_shape}; every size must be >= 1")
    if not _is_int(groups):
        raise TypeError(f"groups={groups!r} must be an int")
    groups = int(groups)
    if groups < 1:
        raise ValueError(f"groups={groups} must be >= 1")
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide in_channels={in_channels} and "
            f"out_channels={out_channels}"
        )
    if per_group * groups != in_channels:
        raise ValueError(
            f"input has {in_channels} channels but weight of shape {weight_shape} with "
            f"groups={groups} expects {per_group * groups} (in_channels/groups={per_group})"
        )
    stride = _int_tuple("stride", stride, d, 1)
    dilation = _int_tuple("dilation", dilation, d, 1)
    pads = _padding_pairs(padding, d)
    if pads == "valid":
        pads = ((0, 0),) * d
    elif pads == "same":
        pads = _same_padding(spatial, kernel, stride, dilation)
    out_spatial = _output_spatial(
        spatial, kernel, stride, dilation, pads, f"input shape {input_shape}"
    )
    return ConvGeometry(
        d, batch, in_channels, out_channels, groups, spatial, kernel, stride, dilation,
        pads, out_spatial,
    )


def check_padding_mode(padding_mode, geometry: ConvGeometry) -> str:
    """Check ``padding_mode`` by name and against the pad sizes it must support."""
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            f"padding_mode={padding_mode!r} is not one of "
            f"{', '.join(map(repr, PADDING_MODES))}"
        )
    for axis, (size, (lo, hi)) in enumerate(zip(geometry.spatial, geometry.padding)):
        if padding_mode == "reflect" and max(lo, hi) >= size:
            raise ValueError(
                f"padding_mode='reflect' needs each pad < the input size, but spatial axis "
                f"{axis} has size {size} and padding ({lo}, {hi})"
            )
        if padding_mode == "circular" and max(lo, hi) > size:
            raise ValueError(
                f"padding_mode='circular' needs each pad <= the input size, but spatial "
                f"axis {axis} has size {size} and padding ({lo}, {hi})"
            )
        if padding_mode == "replicate" and size == 0 and lo + hi > 0:
            raise ValueError(
                f"padding_mode='replicate' cannot pad the empty spatial axis {axis}"
            )
    return padding_mode


def is_dask_array(value) -> bool:
    """Whether ``value`` is a ``dask.array.Array`` (without importing dask)."""
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(value, dask_array.Array)


def _checked_array(name: str, value) -> np.ndarray:
    if value is None:
        raise TypeError(f"{name} must be an array, not None")
    if is_dask_array(value):
        # np.asarray would compute it whole, silently: the one thing a user with a
        # larger-than-memory array must never get.
        raise TypeError(
            f"{name} is a dask array; only the input x of conv, conv1d, conv2d, conv3d "
            f"and the Conv layers may be one (weight, bias, conv_transpose* and "
            f"conv_backward take NumPy arrays)")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise TypeError(f"{name} could not be converted to an array: {error}") from None
    kind = array.dtype.kind
    if kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {array.dtype}; expected a real number type "
            f"(float32, float64, float16, integer or bool)"
        )
    if kind == "f" and array.dtype.itemsize > 8:
        raise TypeError(f"{name} has dtype {array.dtype}; the widest supported is float64")
    return array


def compute_dtype(*arrays) -> np.dtype:
    """The result dtype of arrays (or dtypes): float32 or float64 (SPEC.md "Numbers")."""
    dtype = np.result_type(*arrays)
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def as_arrays(x, weight, bias):
    """Convert the user's ``x``, ``weight`` and ``bias`` to arrays, checking their types."""
    x = _checked_array("input", x)
    weight = _checked_array("weight", weight)
    if bias is not None:
        bias = _checked_array("bias", bias)
    return x, weight, bias


def check_call(x_shape, x_dtype, weight, bias, stride, padding, dilation, groups,
               padding_mode, method, d, paths):
    """Check a convolution call's arguments (raising their errors); return its
    ``(geometry, padding_mode, method, dtype)``. ``weight`` and ``bias`` are arrays,
    ``paths`` the method names besides ``"auto"``."""
    geom = conv_geometry(x_shape, weight.shape, stride, padding, dilation, groups, d=d)
    check_bias(bias, geom.out_channels)
    padding_mode = check_padding_mode(padding_mode, geom)
    method = check_method(method, paths)
    dtype = compute_dtype(x_dtype, weight, *(() if bias is None else (bias,)))
    return geom, padding_mode, method, dtype


def check_bias(bias, out_channels: int) -> None:
    """``bias`` must be ``None`` or of shape ``(out_channels,)``."""
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError(
            f"bias has shape {bias.shape}; expected ({out_channels},) for "
            f"out_channels={out_channels}"
        )


def check_flag(name: str, value) -> bool:
    """``value`` itself if it is True or False; otherwise a TypeError naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={value!r} must be True or False")
    return bool(value)


def weight_shape_dims(weight_shape) -> tuple[int, ...]:
    """A weight shape ``(C_out, C_in // groups, *kernel)`` as ints, checked."""
    try:
        dims = tuple(int(v) for v in weight_shape)
    except (TypeError, ValueError):
        raise TypeError(f"weight_shape={weight_shape!r} must be a tuple of ints") from None
    if len(dims) not in (3, 4, 5) or min(dims) < 1:
        raise ValueError(
            f"weight_shape={weight_shape!r} must be (C_out, C_in // groups, *kernel) with "
            f"1 to 3 kernel axes and every size >= 1"
        )
    return dims


def transpose_output_shape(input_shape, weight_shape, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1, *, d=None):
    """Validate a transposed convolution's shapes and parameters.

    Returns ``(batched, c_out, out_spatial, stride, padding, dilation)`` with per-axis
    tuples, where ``out = (in - 1) * stride - 2 * padding + dilation * (kernel - 1)
    + output_padding + 1``.
    """
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    if d is None:
        d = len(weight_shape) - 2
    if len(weight_shape) != d + 2 or d not in (1, 2, 3):
        raise ValueError(
            f"weight has shape {weight_shape} (ndim {len(weight_shape)}); a {d}D transposed "
            f"convolution needs ndim {d + 2}: (in_channels, out_channels/groups, *kernel)")
    if len(input_shape) not in (d + 1, d + 2):
        raise ValueError(
            f"input has shape {input_shape} (ndim {len(input_shape)}); a {d}D transposed "
            f"convolution needs ndim {d + 2} (N, C_in, *spatial) or {d + 1}")
    batched = len(input_shape) == d + 2
    c_in = input_shape[1 if batched else 0]
    spatial = input_shape[-d:]
    if min(weight_shape) < 1:
        raise ValueError(f"weight has shape {weight_shape}; every size must be >= 1")
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, (bool, np.bool_)):
        raise TypeError(f"groups={groups!r} must be an int")
    if groups < 1 or weight_shape[0] % groups:
        raise ValueError(f"groups={groups} must be >= 1 and divide "
                         f"in_channels={weight_shape[0]}")
    if c_in != weight_shape[0]:
        raise ValueError(f"input has {c_in} channels but weight of shape {weight_shape} "
                         f"expects {weight_shape[0]} (weight is (in_channels, "
                         f"out_channels/groups, *kernel))")
    stride = _int_tuple("stride", stride, d, 1)
    dilation = _int_tuple("dilation", dilation, d, 1)
    if isinstance(padding, str):
        raise ValueError(f"padding={padding!r}: a transposed convolution takes an int or "
                         f"a tuple of {d} ints")
    padding = _int_tuple("padding", padding, d, 0)
    output_padding = _int_tuple("output_padding", output_padding, d, 0)
    for op, s, dl in zip(output_padding, stride, dilation):
        if op >= s and op >= dl:
            raise ValueError(f"output_padding={output_padding} must be smaller than "
                             f"stride={stride} or dilation={dilation} on every axis")
    kernel = weight_shape[2:]
    out = tuple((i - 1) * s - 2 * p + dl * (k - 1) + op + 1 for i, s, p, dl, k, op
                in zip(spatial, stride, padding, dilation, kernel, output_padding))
    if min(spatial) < 1 or min(out) < 1:
        raise ValueError(f"input of shape {input_shape} with weight {weight_shape}, "
                         f"stride={stride}, padding={padding} gives output size {out}; "
                         f"every size must be >= 1")
    return batched, weight_shape[1] * groups, out, stride, padding, dilation


class LayerArguments(NamedTuple):
    """A layer's constructor arguments, checked and normalised once."""

    in_channels: int
    out_channels: int
    kernel_size: tuple
    stride: tuple
    padding: object       # per-axis ints, (before, after) pairs, "same" or "valid"
    dilation: tuple
    groups: int
    bias: bool
    dtype: np.dtype


def layer_arguments(d, in_channels, out_channels, kernel_size, stride, padding, dilation,
                    groups, bias, dtype) -> LayerArguments:
    """Check a layer's arguments (naming the offending one) and normalise them: ints to
    per-axis tuples, lists to tuples, so that a layer calls with one form each time."""
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups={groups!r} must be an int >= 1")
    groups = int(groups)
    channels = []
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name}={value!r} must be an int >= 1")
        if value % groups:
            raise ValueError(f"groups={groups} must divide {name}={value}")
        channels.append(int(value))
    if _is_int(kernel_size):
        kernel_size = (kernel_size,) * d
    try:
        kernel = tuple(kernel_size)
    except TypeError:
        kernel = ()
    if len(kernel) != d or not all(_is_int(k) and k >= 1 for k in kernel):
        raise ValueError(f"kernel_size={kernel_size!r} must be an int >= 1 or a tuple "
                         f"of {d} of them")
    if _is_int(padding) or (isinstance(padding, (tuple, list))
                            and all(_is_int(p) for p in padding)):
        padding = _int_tuple("padding", padding, d, 0)
    elif isinstance(padding, (tuple, list)) and all(
            isinstance(pair, (tuple, list)) and all(_is_int(v) for v in pair)
            for pair in padding):
        padding = tuple(tuple(int(v) for v in pair) for pair in padding)
    # Anything else ("same", "valid" or a mistake) is left for conv_geometry to judge.
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype={dtype!r} must be float32 or float64")
    return LayerArguments(channels[0], channels[1], tuple(int(k) for k in kernel),
                          _int_tuple("stride", stride, d, 1), padding,
                          _int_tuple("dilation", dilation, d, 1), groups,
                          check_flag("bias", bias), dt)


def check_method(method, paths) -> str:
    """``method`` itself if it is "auto" or one of ``paths``; otherwise a ValueError that
    lists the valid names."""
    if isinstance(method, str) and (method == "auto" or method in paths):
        return method
    valid = ", ".join(repr(m) for m in ("auto", *paths))
    raise ValueError(f"method={method!r} is not one of {valid}")


def dtype_itemsize(dtype) -> int:
    """The computation's itemsize (4 or 8) for a ``dtype=`` argument (``choose_method``,
    ``explain``): float16 and float32 compute in float32, the rest in float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype={dtype!r} is not a NumPy dtype") from None
    if dt.kind not in "fiub" or (dt.kind == "f" and dt.itemsize > 8):
        raise TypeError(f"dtype={dtype!r} must be a real float, integer or bool dtype")
    return 4 if dt.kind == "f" and dt.itemsize <= 4 else 8


LAYOUTS = ("channels_first", "channels_last")


def check_layout(layout) -> str:
    """``layout`` itself if it is "channels_first" or "channels_last"; otherwise a
    ValueError naming it."""
    if isinstance(layout, str) and layout in LAYOUTS:
        return layout
    raise ValueError(f"layout={layout!r} is not one of "
                     f"{', '.join(map(repr, LAYOUTS))}")


def channels_first_shape(shape, d) -> tuple:
    """A channels-last input shape ``(N, *spatial, C)`` (or unbatched) as the
    channels-first one; shapes of the wrong rank are returned as they are, for
    ``conv_geometry`` to report."""
    shape = tuple(shape)
    if d not in (1, 2, 3) or len(shape) not in (d + 1, d + 2):
        return shape
    lead = len(shape) - d - 1
    return shape[:lead] + shape[-1:] + shape[lead:-1]


def channels_last_shape(shape, d) -> tuple:
    """A channels-first shape ``(N, C, *spatial)`` (or unbatched) as the channels-last
    one, ``(N, *spatial, C)``."""
    shape = tuple(shape)
    lead = len(shape) - d - 1
    return shape[:lead] + shape[lead + 1:] + shape[lead:lead + 1]


def check_out(out, shape, dtype, inputs) -> np.ndarray:
    """``out`` itself if it can take a result of ``shape`` and ``dtype``: a writeable,
    C-contiguous NumPy array of exactly those, sharing no memory with any of
    ``inputs`` (``(name, array)`` pairs); otherwise a TypeError or ValueError naming
    ``out`` (SPEC.md "Output reuse")."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array (or None), not {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}; this call's result is {dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}; this call's result is "
                         f"{tuple(shape)}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    for name, array in inputs:
        if array is not None and np.may_share_memory(out, array) and _shares(out, array):
            raise ValueError(f"out shares memory with {name}; the result would "
                             f"overwrite the data it is computed from")
    return out


def _shares(a, b) -> bool:
    """Whether ``a`` and ``b`` overlap (when that is too hard to settle, assume so)."""
    try:
        return np.shares_memory(a, b, max_work=100_000)
    except getattr(np, "exceptions", np).TooHardError:  # np.exceptions: NumPy >= 1.25
        return True
