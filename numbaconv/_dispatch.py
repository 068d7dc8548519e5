"""``choose_method`` and ``explain``: the dispatcher's choice, and why.

Both rank the paths by the cost model (:mod:`numbaconv._costs`) through the plan's
ranking (:func:`numbaconv._plan.rank_paths`), with the machine constants that
:func:`numbaconv.tune` stored for this user, or the built-in defaults, and this
process's thread count and ``config`` budgets.
"""

from __future__ import annotations

import numba

from ._constants import machine_constants
from ._plan import current_budgets, path_forms, rank_paths, run_geometry
from ._spec import conv_geometry, dtype_itemsize


def _context(geom, itemsize, cached_weights=False):
    """The ranking's arguments, for the convolution the kernels run (``run_geometry``:
    a strided 1x1 layer runs as a pointwise one on the input's subsample)."""
    return (run_geometry(geom)[0], itemsize, machine_constants(), numba.get_num_threads(),
            current_budgets(), cached_weights)


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
    return rank_paths(*_context(geom, dtype_itemsize(dtype)))[1]


def chosen_paths(geom, itemsize) -> tuple[str, str]:
    """``auto``'s paths for ``geom``: for finite data, and for data holding NaN or Inf."""
    context = _context(geom, itemsize)
    return rank_paths(*context)[1], rank_paths(*context, finite=False)[1]


class Explanation:
    """The dispatcher's reasoning for one convolution; ``str()`` gives a table.

    Attributes
    ----------
    choice : str
        The chosen path.
    reason : str
        Why it was chosen.
    estimates : dict
        Path name -> ``(seconds, extra_bytes, detail)`` of the form it would take.
    forms : dict
        Path name -> ``[(form name, seconds, extra_bytes, detail), ...]``: every form
        of the path that can take the convolution, fastest first.
    macs : int
        Multiply-accumulates of the convolution.
    """

    def __init__(self, geom, dtype_name, ranking, forms, choice, reason):
        self.geometry = geom
        self.dtype = dtype_name
        self.choice = choice
        self.reason = reason
        self.macs = geom.macs
        self.estimates = {path: (e.seconds, e.extra_bytes, e.detail)
                          for path, _, e in ranking}
        self.forms = {path: [(_form_name(path, f), e.seconds, e.extra_bytes, e.detail)
                             for f, e in forms[path]] for path, _, _ in ranking}

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
            f"  {'path':<8}{'form':<13}{'est. time':>11}{'extra memory':>15}  how",
        ]
        for path, forms in self.forms.items():
            for i, (form, seconds, extra, detail) in enumerate(forms):
                mark = "*" if path == self.choice and i == 0 else " "
                shown = path if i == 0 else ""
                lines.append(f"{mark} {shown:<8}{form:<13}{_fmt_time(seconds):>11}"
                             f"{_fmt_bytes(extra):>15}  {detail}")
        lines += ["", f"choice: {self.choice} ({self.reason})"]
        return "\n".join(lines)

    def __repr__(self):
        return f"<Explanation choice={self.choice!r}>"


def _form_name(path, form) -> str:
    return "fft" if path == "fft" else form.name


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
    """Explain the dispatcher's choice: each path's forms, with their estimated time
    and extra memory.

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
    return explain_geometry(geom, dtype_itemsize(dtype))


def explain_geometry(geom, itemsize, cached_weights=False) -> Explanation:
    """:func:`explain` of a checked geometry; ``cached_weights`` for a layer's calls,
    which keep the weight's transform (see ``numbaconv._plan.path_forms``)."""
    context = _context(geom, itemsize, cached_weights)
    ranking, choice, reason = rank_paths(*context)
    return Explanation(geom, "float32" if itemsize == 4 else "float64", ranking,
                       path_forms(*context), choice, reason)
