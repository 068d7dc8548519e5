"""The registry of computation paths and the choice among them.

``METHODS`` maps each path's name to its runner; every runner takes the same normalised
arrays (see :func:`numbaconv._direct.conv_direct`). ``choose_method`` ranks the paths
by the cost model in :mod:`numbaconv._costs`, with the machine constants that
:func:`numbaconv.tune` stored for this user, or the built-in defaults.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _tuning
from ._costs import ESTIMATORS
from ._direct import conv_direct
from ._fft import conv_fft
from ._im2col import conv_im2col
from ._spec import conv_geometry

METHODS = {"direct": conv_direct, "im2col": conv_im2col, "fft": conv_fft}


def check_method(method) -> str:
    """``method`` itself if it is "auto" or a known path; otherwise a ValueError that
    lists the valid names."""
    if isinstance(method, str) and (method == "auto" or method in METHODS):
        return method
    valid = ", ".join(repr(m) for m in ("auto", *METHODS))
    raise ValueError(f"method={method!r} is not one of {valid}")


def _float_itemsize(dtype) -> int:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype={dtype!r} is not a NumPy dtype") from None
    if dt.kind not in "fiub" or (dt.kind == "f" and dt.itemsize > 8):
        raise TypeError(f"dtype={dtype!r} must be a real float, integer or bool dtype")
    return 4 if dt.kind == "f" and dt.itemsize <= 4 else 8


def rank_paths(geom, itemsize: int, finite: bool = True):
    """Every path's estimate, fastest first, and the chosen path with its reason.

    Returns ``(estimates, choice, reason)`` where ``estimates`` is a list of
    ``(name, Estimate)`` sorted by estimated time. With ``finite=False`` (the input holds
    NaN or Inf) the FFT path is passed over, since it would spread them to every output.
    """
    return _ranked(geom, itemsize, finite, _tuning.machine_constants())


@functools.lru_cache(maxsize=1024)
def _ranked(geom, itemsize, finite, constants):
    # Cached: layers call with the same shapes over and over, and the estimates cost
    # tens of microseconds of Python, as much as a small depthwise convolution.
    estimates = sorted(((name, est(geom, itemsize, constants))
                        for name, est in ESTIMATORS.items()),
                       key=lambda item: item[1].seconds)
    fastest = estimates[0][0]
    if finite or fastest != "fft":
        runner_up = estimates[1]
        ratio = runner_up[1].seconds / max(estimates[0][1].seconds, 1e-12)
        return estimates, fastest, (
            f"lowest estimated time, {ratio:.1f}x faster than {runner_up[0]}")
    choice = estimates[1][0]
    return estimates, choice, (
        "fft is estimated fastest, but the input holds NaN or Inf, which the FFT would "
        f"spread to every output; {choice} is next")


def _geometry(input_shape, weight_shape, stride, padding, dilation, groups):
    return conv_geometry(input_shape, weight_shape, stride, padding, dilation, groups)


def choose_method(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                  dtype="float32"):
    """The path ``method="auto"`` takes for these shapes: "direct", "im2col" or "fft".

    Parameters
    ----------
    input_shape, weight_shape : tuple of int
        ``(N, C_in, *spatial)`` (or unbatched) and ``(C_out, C_in // groups, *kernel)``.
    stride, padding, dilation, groups
        As for :func:`numbaconv.conv`.
    dtype : dtype-like
        The computation's dtype; float64 (and integers, which compute in float64) run
        at half the float32 rate.

    Returns
    -------
    str
        The name of the path with the lowest estimated time (see :func:`explain`). For
        real data ``method="auto"`` also checks that the input is finite before taking
        the FFT path.

    Examples
    --------
    >>> choose_method((1, 64, 56, 56), (256, 64, 1, 1))
    'im2col'
    """
    geom = _geometry(input_shape, weight_shape, stride, padding, dilation, groups)
    return rank_paths(geom, _float_itemsize(dtype))[1]


class Explanation:
    """The dispatcher's reasoning for one convolution; ``str()`` gives a table.

    Attributes
    ----------
    choice : str
        The chosen path.
    reason : str
        Why it was chosen.
    estimates : dict
        Path name -> ``(seconds, extra_bytes, detail)``.
    macs : int
        Multiply-accumulates of the convolution.
    """

    def __init__(self, geom, dtype_name, estimates, choice, reason):
        self.geometry = geom
        self.dtype = dtype_name
        self.choice = choice
        self.reason = reason
        self.macs = geom.macs
        self.estimates = {name: (e.seconds, e.extra_bytes, e.detail) for name, e in estimates}

    def __str__(self):
        g = self.geometry
        lead = () if g.batch is None else (g.batch,)
        lines = [
            f"convolution {lead + (g.in_channels,) + g.spatial} * "
            f"{(g.out_channels, g.in_channels // g.groups) + g.kernel} -> {g.output_shape}"
            f", stride {g.stride}, dilation {g.dilation}, padding {g.padding}, "
            f"groups {g.groups}, {self.dtype}",
            f"{self.macs:,} multiply-accumulates ({2 * self.macs / 1e9:.3f} GFLOP)",
            "",
            f"  {'path':<8}{'est. time':>12}{'extra memory':>15}  how",
        ]
        for name, (seconds, extra, detail) in self.estimates.items():
            mark = "*" if name == self.choice else " "
            lines.append(f"{mark} {name:<8}{_fmt_time(seconds):>12}{_fmt_bytes(extra):>15}"
                         f"  {detail}")
        lines += ["", f"choice: {self.choice} ({self.reason})"]
        return "\n".join(lines)

    def __repr__(self):
        return f"<Explanation choice={self.choice!r}>"


def _fmt_time(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} us"


def _fmt_bytes(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def explain(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
            dtype="float32"):
    """Explain the dispatcher's choice: each path's estimated time and extra memory.

    Parameters
    ----------
    input_shape, weight_shape, stride, padding, dilation, groups, dtype
        As for :func:`choose_method`.

    Returns
    -------
    Explanation
        ``print()`` it for a table; its ``choice``, ``reason`` and ``estimates``
        attributes hold the same information.

    Examples
    --------
    >>> print(explain((1, 1, 1024, 1024), (1, 1, 63, 63), padding=31))  # doctest: +SKIP
    """
    geom = _geometry(input_shape, weight_shape, stride, padding, dilation, groups)
    itemsize = _float_itemsize(dtype)
    estimates, choice, reason = rank_paths(geom, itemsize)
    return Explanation(geom, "float32" if itemsize == 4 else "float64",
                       estimates, choice, reason)
