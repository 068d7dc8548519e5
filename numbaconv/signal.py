"""SciPy-style ``correlate`` and ``convolve`` on numbaconv's paths.

``numbaconv.signal.correlate(in1, in2, mode, method, axes)`` and ``convolve(...)`` give
``scipy.signal.correlate``'s and ``convolve``'s results, shapes and dtypes for real
arrays; ``axes`` works as ``scipy.signal.fftconvolve``'s. Both reduce to one slice of a
full convolution, computed by the public :func:`numbaconv.conv`:

- ``correlate(a, b)`` is ``convolve(a, b reversed along the axes)`` for real inputs.
- Convolution is commutative, so the larger input becomes numbaconv's input ``x`` and the
  other its kernel, flipped (numbaconv, like PyTorch, cross-correlates).
- Output positions ``[start, stop)`` of the full convolution (length ``N + M - 1``) are
  ``conv(x, flip(k), padding=(M - 1 - start, stop - N))``; a negative pad crops ``x``.
- Batch (broadcast) axes become numbaconv's batch, output channels or depthwise groups.
"""

from __future__ import annotations

import math

import numpy as np

from .functional import conv

__all__ = ["correlate", "convolve"]

MODES = ("full", "valid", "same")
METHODS = ("auto", "direct", "im2col", "fft")


def correlate(in1, in2, mode="full", method="auto", axes=None):
    """Cross-correlate two N-dimensional arrays, as ``scipy.signal.correlate``.

    ``z[k] = sum_l in1[l] * in2[l - k + offset]`` along each axis worked on, where the
    offset is set by ``mode``; equal to ``convolve(in1, in2 reversed along the axes)``.

    Parameters
    ----------
    in1, in2 : array_like
        Real inputs (bool, integer or float16/32/64) of the same number of dimensions;
        never modified. Complex inputs raise ``TypeError`` (numbaconv is real-only).
    mode : {"full", "valid", "same"}
        "full": every overlap (``n1 + n2 - 1`` per axis); "same": the centre of "full",
        ``in1``'s size; "valid": only where one input covers the other
        (``|n1 - n2| + 1``), which needs one input at least as large as the other along
        every axis worked on.
    method : {"auto", "direct", "im2col", "fft"}
        numbaconv's path, passed to :func:`numbaconv.conv`: "auto" takes the one with the
        lowest estimated time (never "fft" when an input holds NaN or Inf).
    axes : int or sequence of ints, optional
        The axes to work along (up to 3 of them, after leaving out those of length 1 in
        either input), as ``scipy.signal.fftconvolve``'s; the others are batch axes, of
        equal length or length 1 in one input (broadcast). By default every axis of a
        1-3 dimensional input.

    Returns
    -------
    numpy.ndarray
        C-contiguous, of ``np.result_type(in1, in2)`` as SciPy's: float inputs compute
        in float32 (float16 too) or float64; integer inputs compute in float64 and are
        rounded back, exactly while the sums stay below 2**53 (types narrower than 64
        bits wrap on overflow, as SciPy's direct method; with ``method="auto"`` they
        take the FFT only where it rounds back exactly); bool inputs give True where
        the sum is non-zero. Two 0-d inputs give ``in1 * in2``.

    Raises
    ------
    ValueError, TypeError
        On an invalid argument, before any work, naming the parameter and its value.

    Examples
    --------
    >>> import numpy as np
    >>> from numbaconv import signal
    >>> signal.correlate([1.0, 2.0, 3.0], [0.0, 1.0, 0.5])
    array([0.5, 2. , 3.5, 3. , 0. ])
    >>> signal.correlate([1, 2, 3], [0, 1, 2], mode="same")      # ints stay ints
    array([5, 8, 3])
    """
    return _convolve("correlate", in1, in2, mode, method, axes)


def convolve(in1, in2, mode="full", method="auto", axes=None):
    """Convolve two N-dimensional arrays, as ``scipy.signal.convolve``.

    ``z[k] = sum_l in1[l] * in2[k - l + offset]`` along each axis worked on, where the
    offset is set by ``mode``.

    Parameters
    ----------
    in1, in2 : array_like
        Real inputs (bool, integer or float16/32/64) of the same number of dimensions;
        never modified. Complex inputs raise ``TypeError`` (numbaconv is real-only).
    mode : {"full", "valid", "same"}
        As for :func:`correlate`.
    method : {"auto", "direct", "im2col", "fft"}
        numbaconv's path, passed to :func:`numbaconv.conv`.
    axes : int or sequence of ints, optional
        As for :func:`correlate` (``scipy.signal.fftconvolve``'s ``axes``).

    Returns
    -------
    numpy.ndarray
        C-contiguous, of ``np.result_type(in1, in2)``; see :func:`correlate`.

    Raises
    ------
    ValueError, TypeError
        On an invalid argument, before any work, naming the parameter and its value.

    Examples
    --------
    >>> import numpy as np
    >>> from numbaconv import signal
    >>> signal.convolve([1.0, 2.0, 3.0], [0.0, 1.0, 0.5])
    array([0. , 1. , 2.5, 4. , 1.5])
    >>> x = np.arange(12.0).reshape(3, 4)                # three signals of length 4
    >>> signal.convolve(x, np.array([[1.0, -1.0]]), mode="valid", axes=1)
    array([[1., 1., 1.],
           [1., 1., 1.],
           [1., 1., 1.]])
    """
    return _convolve("convolve", in1, in2, mode, method, axes)


def _convolve(func, in1, in2, mode, method, axes):
    """The shared body: validate, reverse ``in2`` for correlate, convolve."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode={mode!r} must be one of 'full', 'valid', 'same'")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method={method!r} must be one of "
                         f"{', '.join(map(repr, METHODS))}")
    a, b = _real_array("in1", in1), _real_array("in2", in2)
    if a.ndim != b.ndim:
        raise ValueError(f"in1.ndim={a.ndim} and in2.ndim={b.ndim} differ: in1 and in2 "
                         f"should have the same dimensionality")
    requested = _axes_list(axes, a.ndim)
    if a.ndim == 0:
        return a * b  # SciPy's answer for two 0-d inputs (a NumPy scalar)
    if func == "correlate":  # real inputs: no conjugate
        b = b[tuple(slice(None, None, -1) if i in requested else slice(None)
                    for i in range(b.ndim))]
    return _convolve_arrays(a, b, mode, method, requested, axes is None)


def _real_array(name, value):
    """``value`` as a NumPy array of a dtype numbaconv computes, else a TypeError."""
    array = np.asarray(value)
    if array.dtype.kind == "c":
        raise TypeError(f"{name} has dtype {array.dtype}: complex inputs are not supported "
                        f"(numbaconv is real-only; correlate the real and imaginary parts)")
    if array.dtype.kind not in "biuf" or array.dtype.itemsize > 8:
        raise TypeError(f"{name} has dtype {array.dtype}; expected bool, an integer type "
                        f"or float16/32/64")
    return array


def _axes_list(axes, ndim):
    """``axes`` as a sorted list of non-negative ints; ``None``: every axis."""
    if axes is None:
        return list(range(ndim))
    items = list(np.ravel(np.asarray(axes, dtype=object))) if np.ndim(axes) <= 1 else None
    if items is None or not all(isinstance(a, (int, np.integer))
                                and not isinstance(a, (bool, np.bool_)) for a in items):
        raise ValueError(f"axes={axes!r} must be an int or a sequence of ints")
    if not items:
        raise ValueError(f"axes={axes!r}: when provided, axes cannot be empty")
    if any(not -ndim <= a < ndim for a in items):
        raise ValueError(f"axes={axes!r} exceeds the inputs' dimensionality ({ndim})")
    items = [int(a) % ndim for a in items]
    if len(set(items)) != len(items):
        raise ValueError(f"axes={axes!r}: all axes must be unique")
    return sorted(items)


def _convolve_arrays(a, b, mode, method, requested, all_axes):
    """``convolve(a, b, mode)`` along ``requested``, the other axes broadcast."""
    s1, s2 = a.shape, b.shape
    ndim = a.ndim
    batch = [i for i in range(ndim) if i not in requested]
    if any(s1[i] != s2[i] and 1 not in (s1[i], s2[i]) for i in batch):
        raise ValueError(f"incompatible shapes for in1 and in2: {s1} and {s2} (axes "
                         f"outside axes={requested} must be equal or 1 in one input)")
    # SciPy's convolve checks "valid" along every axis; fftconvolve(axes=...) leaves
    # out the axes of length 1 in either input, which it broadcasts.
    checked = requested if all_axes else [i for i in requested if 1 not in (s1[i], s2[i])]
    if mode == "valid" and not (all(s1[i] >= s2[i] for i in checked)
                                or all(s2[i] >= s1[i] for i in checked)):
        raise ValueError(f"mode='valid' needs one input at least as large as the other "
                         f"along every axis: in1 has shape {s1} and in2 {s2}")
    # "same" is in1's shape along every axis, batch axes too (fftconvolve's centred slice)
    out_shape = tuple(_out_size(s1[i], s2[i], mode) if i in requested or mode == "same"
                      else np.broadcast_shapes((s1[i],), (s2[i],))[0] for i in range(ndim))
    result_type = np.result_type(a.dtype, b.dtype)
    if a.size == 0 or b.size == 0:
        return _empty_result(a, b, mode, out_shape, result_type, all_axes and ndim == 1)

    # An axis of length 1 in either input is a broadcast product, not a convolution;
    # in "same" mode a length-1 in1 keeps only in2's centre element there.
    conv_axes = [i for i in requested if s1[i] > 1 and s2[i] > 1]
    if mode == "same":
        b = b[tuple(slice((s2[i] - 1) // 2, (s2[i] - 1) // 2 + 1) if s1[i] == 1
                    else slice(None) for i in range(ndim))]
    if len(conv_axes) > 3:
        raise ValueError(f"numbaconv.signal works along at most 3 axes: in1 of shape {s1} "
                         f"and in2 of shape {s2} need {len(conv_axes)} (axes "
                         f"{conv_axes}); name at most 3 with axes=")
    compute = np.float32 if result_type in (np.float16, np.float32) else np.float64
    if method == "auto" and result_type.kind in "biu" and not _fft_exact(a, b, conv_axes):
        # The FFT's error grows with the sums' scale (SPEC: 1e-10 of it in float64), so
        # integer sums that large would not round back exactly; SciPy's auto likewise
        # keeps such inputs off its FFT.
        method = "direct"
    a, b = a.astype(compute, copy=False), b.astype(compute, copy=False)
    if conv_axes:
        y = _full_slice(a, b, mode, method, conv_axes)
    else:  # a product only: give numbaconv one spatial axis, of length 1
        y = _full_slice(a[..., None], b[..., None], mode, method, [ndim])[..., 0]
    return _to_result_type(y, result_type)


def _fft_exact(a, b, conv_axes) -> bool:
    """Whether an FFT of the integer inputs ``a`` and ``b`` is sure to round back to the
    exact sums: their bound, max|a| * max|b| * terms, times SPEC's float64 tolerance
    (1e-10 of the scale) stays under half a unit."""
    terms = math.prod(min(a.shape[i], b.shape[i]) for i in conv_axes) if conv_axes else 1
    bound = _max_abs(a) * _max_abs(b) * terms
    return bound * 1e-10 < 0.5


def _max_abs(array) -> float:
    return float(max(abs(int(array.max())), abs(int(array.min()))))


def _out_size(n1, n2, mode):
    if mode == "full":
        return n1 + n2 - 1
    return n1 if mode == "same" else abs(n1 - n2) + 1


def _empty_result(a, b, mode, out_shape, result_type, one_d):
    """SciPy's result for an empty input: zeros (empty sums) in N-d "valid" mode; an
    empty result where its shape has a zero (unless in2 is empty in 1-D or in "same"
    mode); otherwise a ValueError, where SciPy raises too."""
    if min(out_shape) >= 0 and (
            (mode == "valid" and not one_d)
            or (math.prod(out_shape) == 0 and not (b.size == 0
                                                   and (one_d or mode == "same")))):
        return np.zeros(out_shape, result_type)
    name, shape = ("in1", a.shape) if a.size == 0 else ("in2", b.shape)
    raise ValueError(f"{name} of shape {shape} is empty: mode={mode!r} has no result for "
                     f"inputs of shapes {a.shape} and {b.shape}")


def _full_slice(a, b, mode, method, conv_axes):
    """``mode``'s slice of the full convolution of ``a`` and ``b`` along ``conv_axes``
    (float arrays of the same ndim; the other axes broadcast), as one numbaconv call."""
    n1 = [a.shape[i] for i in conv_axes]
    # Commutative: the larger input (over the convolved axes) is numbaconv's input.
    swap = math.prod(b.shape[i] for i in conv_axes) > math.prod(n1)
    x, k = (b, a) if swap else (a, b)
    batch = [i for i in range(a.ndim) if i not in conv_axes]
    order = batch + conv_axes
    x, k = x.transpose(order), k.transpose(order)
    nb, d = len(batch), len(conv_axes)
    crop, pads = [], []
    for j in range(d):
        size_x, size_k = x.shape[nb + j], k.shape[nb + j]
        full = size_x + size_k - 1
        if mode == "full":
            start, stop = 0, full
        elif mode == "same":
            start = (full - n1[j]) // 2
            stop = start + n1[j]
        else:
            start, stop = min(size_x, size_k) - 1, max(size_x, size_k)
        before, after = size_k - 1 - start, stop - size_x
        crop.append(slice(max(0, -before), size_x - max(0, -after)))
        pads.append((max(0, before), max(0, after)))
    x = x[(slice(None),) * nb + tuple(crop)]
    k = k[(slice(None),) * nb + (slice(None, None, -1),) * d]  # numbaconv correlates
    bx, bk = x.shape[:nb], k.shape[:nb]
    shape = np.broadcast_shapes(bx, bk)
    count = math.prod(shape)
    if math.prod(bk) == 1:  # one kernel: the batch axes are numbaconv's batch
        y = conv(x.reshape(count, 1, *x.shape[nb:]), k.reshape(1, 1, *k.shape[nb:]),
                 padding=tuple(pads), method=method)
    elif math.prod(bx) == 1:  # one signal, several kernels: output channels
        y = conv(x.reshape(1, 1, *x.shape[nb:]), k.reshape(count, 1, *k.shape[nb:]),
                 padding=tuple(pads), method=method)
    else:  # pairs of signals and kernels: a depthwise convolution, one group per pair
        x = np.broadcast_to(x, shape + x.shape[nb:]).reshape(1, count, *x.shape[nb:])
        k = np.broadcast_to(k, shape + k.shape[nb:]).reshape(count, 1, *k.shape[nb:])
        y = conv(x, k, padding=tuple(pads), groups=count, method=method)
    y = y.reshape(shape + y.shape[2:])
    return y.transpose(np.argsort(order))


def _to_result_type(y, result_type):
    """The float result ``y`` as ``result_type``, C-contiguous."""
    y = np.ascontiguousarray(y)
    if result_type == np.bool_:  # sums of 0/1 products: True where any is 1
        return y > 0.5
    if result_type.kind in "iu":
        # Through 64-bit integers, so a narrower type wraps around as SciPy's direct
        # method does; exact while the sums stay below 2**53.
        wide = np.uint64 if result_type.kind == "u" else np.int64
        return np.rint(y).astype(wide).astype(result_type)
    return y.astype(result_type, copy=False)
