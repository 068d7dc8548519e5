"""The plan of a call: everything that can be decided before the data is seen.

Arguments -> :func:`get_plan` -> :class:`Plan` -> runner. A plan holds the validated
geometry, the dtype, the path and its form with the form's parameters (tile grid,
padded layout, tasks), the threads and memory budgets it was made for, and the reshape
targets of the arrays. Runners (``numbaconv._registry.METHODS``) take the arrays and
the form and never call back into the cost model; this module is the cost model's only
caller. Plans are cached per (shapes, dtypes, arguments, threads, budgets, machine
constants), so changing ``numba.set_num_threads``, ``config.IM2COL_BUDGET_BYTES`` or
the tuned constants makes a new plan.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import numba
import numpy as np

from . import config
from ._constants import machine_constants
from ._costs import (
    GEMM_ESTIMATORS,
    estimate_direct,
    estimate_fft,
    estimate_taps,
    estimate_winograd,
    problem_dims,
)
from ._direct import plan_direct
from ._fft import plan_fft
from ._im2col import columns_form, GemmForm, shifted_layout
from ._registry import METHODS
from ._channels_last import blocks_extra_elements, blocks_take, channels_last_form
from ._spec import (channels_first_shape, channels_last_shape, check_call, check_layout,
                    to_3d)
from ._winograd import plan_tasks as winograd_tasks
from ._winograd import winograd_grid


class Budgets(NamedTuple):
    """The memory budgets of ``config`` a plan was made for, and all of its tunables
    (``config.snapshot()``: planning reads them, so they are part of every cache key)."""

    im2col: int
    fft: int
    tunables: tuple


def current_budgets() -> Budgets:
    return Budgets(config.IM2COL_BUDGET_BYTES, config.FFT_BUDGET_BYTES, config.snapshot())


def gemm_forms(geom, itemsize, threads, budget) -> list:
    """Every form of the GEMM path that can take ``geom``: Winograd, shifted and the
    register blocks where they apply, and always the column form (shared columns or
    per-task columns)."""
    n, g, cg, cog, kernel, stride, dilation, pad, spatial, out = problem_dims(geom)
    forms = []
    grid = winograd_grid(n, g, cg, cog, kernel, stride, dilation, out, itemsize, threads,
                         budget)
    if grid is not None:
        forms.append(GemmForm("winograd", threads, grid=grid))
    padded = shifted_layout(n, g, cg, kernel, stride, dilation, pad, spatial, out,
                            itemsize, budget)
    if padded is not None:
        forms.append(GemmForm("shifted", threads, padded=padded))
    # The register blocks on a channels-last copy, their copies within the budget as
    # the column form's buffers; _gemm_rank takes them where estimated faster than the
    # shifted or column form. Measured against those forms (whole calls, medians of 6-8
    # alternating processes): r50_3x3_s2 0.55x, c3d_s2 0.63x, a 1 -> 64 1D stem 0.93x;
    # with the weight repacked by vector transposes, incep_1x7 0.83x, incep_7x1 0.93x,
    # r50_3x3_14 0.94x (1.37x when it was repacked one element at a time). The
    # estimate keeps wavenet_d256, textcnn and deeplab_d2 on their columns.
    if blocks_take(g, g * cog, n * math.prod(out), itemsize) and (
            blocks_extra_elements(n, cg, cog, kernel, stride, dilation, out) * itemsize
            <= budget):
        forms.append(GemmForm("blocks", threads))
    forms.append(columns_form(n, g, cg, cog, kernel, stride, pad, spatial, out, itemsize,
                              threads, budget))
    return forms


def _gemm_rank(item, forms):
    """Sort key of the GEMM path's forms, the one it takes first: the shifted form
    wherever it applies, else the column form (measured rules, see ``_im2col``), unless
    Winograd or the register blocks (``_channels_last.blocks_take``) are estimated
    faster than that one (the faster of the two, then); the rest by estimate."""
    names = [f.name for f, _ in forms]
    base = "shifted" if "shifted" in names else names[-1]
    base_seconds = forms[names.index(base)][1].seconds
    form, estimate = item
    if form.name in ("winograd", "blocks") and estimate.seconds < base_seconds:
        return (0, estimate.seconds)
    if form.name == base:
        return (1, 0.0)
    return (2, estimate.seconds)


@functools.lru_cache(maxsize=1024)
def path_forms(geom, itemsize, constants, threads, budgets, cached_weights=False) -> dict:
    """``{path: [(form, Estimate), ...]}``, each path's forms, the one it takes first
    (see ``_gemm_rank``). The GEMM path's Winograd form carries the next form as its
    stand-in for non-finite data. With ``cached_weights`` (a layer's call, which keeps
    the weight's transform: ``numbaconv._weight_cache``) the Winograd form's estimate
    counts a check of the weight in place of its transform.
    (Cached: layers call with the same shapes over and over, and the estimates cost
    tens of microseconds of Python, as much as a small depthwise convolution.)"""
    n, g, cg, cog, kernel, stride, dilation, _, spatial, out = problem_dims(geom)
    direct = plan_direct(n, g, cg, cog, kernel, stride, dilation, out, itemsize, threads,
                         config.MIN_JOBS_PER_THREAD, depth=spatial[0])
    gemm = [(f, estimate_winograd(geom, itemsize, constants, f, cached_weights)
             if f.name == "winograd" else GEMM_ESTIMATORS[f.name](geom, itemsize,
                                                                  constants, f))
            for f in gemm_forms(geom, itemsize, threads, budgets.im2col)]
    gemm = sorted(gemm, key=lambda item: _gemm_rank(item, gemm))
    if gemm[0][0].name == "winograd":
        gemm[0] = (gemm[0][0]._replace(nonfinite=gemm[1][0]), gemm[0][1])
    fft = plan_fft(kernel, stride, dilation, out, threads, budgets.fft)
    return {"direct": [(direct, estimate_direct(geom, itemsize, constants, direct))],
            "im2col": gemm,
            "fft": [(fft, estimate_fft(geom, itemsize, constants, fft))]}


def rank_paths(geom, itemsize, constants, threads, budgets, cached_weights=False,
               finite=True):
    """``(ranking, choice, reason)``: ``ranking`` lists ``(path, form, Estimate)`` of each
    path's best form, fastest first; ``choice`` is the path ``auto`` takes. With
    ``finite=False`` (the data holds NaN or Inf) the FFT path is passed over, since it
    would spread them to every output. ``cached_weights`` as for :func:`path_forms`."""
    forms = path_forms(geom, itemsize, constants, threads, budgets, cached_weights)
    ranking = sorted(((path, *entries[0]) for path, entries in forms.items()),
                     key=lambda item: item[2].seconds)
    fastest = ranking[0][0]
    if finite or fastest != "fft":
        runner_up = ranking[1]
        ratio = runner_up[2].seconds / max(ranking[0][2].seconds, 1e-12)
        return ranking, fastest, (
            f"lowest estimated time, {ratio:.1f}x faster than {runner_up[0]}")
    choice = ranking[1][0]
    return ranking, choice, (
        "fft is estimated fastest, but the input holds NaN or Inf, which the FFT would "
        f"spread to every output; {choice} is next")


def path_estimate(geom, dtype, method, constants):
    """The estimate of ``method``'s best form for ``geom`` with ``constants`` (this
    process's threads and budgets)."""
    forms = path_forms(geom, np.dtype(dtype).itemsize, constants, numba.get_num_threads(),
                       current_budgets())
    return forms[method][0][1]


def run_geometry(geom, padding_mode="zeros"):
    """``(run_geom, pre_pad, subsample)``: the convolution the kernels run for ``geom``.

    - A non-zero padding mode with some padding (``pre_pad``): the input is padded
      explicitly, and the kernels see it with no padding of their own.
    - A 1x1 kernel at stride > 1 with no padding (ResNet's downsampling shortcut):
      each output reads one input position, every ``stride``-th, so the kernels run
      the stride-1 pointwise layer on the input's subsample (``subsample``, the
      ``(d, h, w)`` steps; else None), which needs no columns at all. Measured on
      r50_1x1_s2: 2.0 ms by strided columns, 1.1 ms this way.
    """
    d = geom.d
    pads = geom.padding
    pre_pad = padding_mode != "zeros" and any(p for pair in pads for p in pair)
    if pre_pad:
        return dataclasses.replace(
            geom, padding=((0, 0),) * d,
            spatial=tuple(s + lo + hi for s, (lo, hi) in zip(geom.spatial, pads))
        ), True, None
    if (set(geom.kernel) == {1} and max(geom.stride) > 1
            and not any(p for pair in pads for p in pair)):
        return dataclasses.replace(geom, stride=(1,) * d, dilation=(1,) * d,
                                   spatial=geom.out_spatial), False, to_3d(geom.stride, d, 1)
    return geom, False, None


class Plan(NamedTuple):
    """Everything about a call that its arrays' shapes and dtypes and its arguments fix."""

    geom: object
    dtype: np.dtype
    method: str            # the path; for "auto", its choice for finite data
    form: object           # the path's form, with its parameters
    nonfinite_method: str  # "auto"'s choice when the data holds NaN or Inf
    nonfinite_form: object
    fallback: str          # "auto"'s path while its kernel compiles: "taps", "fft", "none"
    fallback_form: object  # the FFT form, for fallback "fft"
    pre_pad: bool          # pad explicitly (a non-zero padding mode)
    subsample: tuple       # (d, h, w) steps to take the input at first, or None
                           # (see run_geometry)
    x6_shape: tuple
    w6_shape: tuple
    bias2_shape: tuple
    out6_shape: tuple
    stride: tuple
    dilation: tuple
    pad: tuple
    layout: str            # "channels_first" | "channels_last"
    layout_form: str       # channels_last: "blocks" | "gemm" | "depthwise" | "grouped"
                           # | "grouped_stem" | "winograd" | "transpose"
                           # (_channels_last.channels_last_form); else "none"
    x5_shape: tuple        # channels_last: (N, D, H, W, C_in), as run (padded)
    out5_shape: tuple      # channels_last: (N, OD, OH, OW, C_out)
    output_shape: tuple    # the result's shape, in the call's layout


def make_plan(x, weight, bias, stride, padding, dilation, groups, padding_mode, method, d,
              constants, threads, budgets, layout="channels_first",
              cached_weights=False) -> Plan:
    """Validate a call (raising its errors) and work out its :class:`Plan`
    (``cached_weights``: a layer's call, see :func:`path_forms`)."""
    layout = check_layout(layout)
    x_shape = x.shape
    if layout == "channels_last":
        x_shape = channels_first_shape(x_shape, weight.ndim - 2 if d is None else d)
    try:
        geom, padding_mode, method, dtype = check_call(
            x_shape, x.dtype, weight, bias, stride, padding, dilation, groups,
            padding_mode, method, d, METHODS)
    except ValueError as error:
        if layout == "channels_first" or x_shape == x.shape:
            raise
        # The checks speak of the channels-first shape: name the user's too.
        raise ValueError(f"{error} (layout='channels_last': the input of shape "
                         f"{x.shape} read as channels-first {x_shape})") from None
    d = geom.d
    run_geom, pre_pad, subsample = run_geometry(geom, padding_mode)
    args = (run_geom, dtype.itemsize, constants, threads, budgets, cached_weights)
    nonfinite_method = method
    form = nonfinite_form = fallback_form = None
    fallback = "none"
    if geom.batch != 0:  # an empty batch runs nothing
        forms = path_forms(*args)
        if method == "auto":
            method = rank_paths(*args)[1]
            nonfinite_method = rank_paths(*args, finite=False)[1]
            # The tap sums round as the kernels do (exactly, on small integers); the
            # FFT's error is relative to the output's scale. So the FFT only where it
            # is clearly faster.
            fallback_form, fft_estimate = forms["fft"][0]
            fallback = ("fft" if config.FFT_FALLBACK_ADVANTAGE * fft_estimate.seconds
                        < estimate_taps(run_geom, dtype.itemsize, constants).seconds
                        else "taps")
        form = _with_tables(forms[method][0][0], run_geom, dtype.itemsize, layout)
        # Data with NaN or Inf runs channels-first, on transposed copies.
        nonfinite_form = _with_tables(forms[nonfinite_method][0][0], run_geom,
                                      dtype.itemsize, "channels_first")
    n = 1 if geom.batch is None else geom.batch
    g, c_in, c_out = geom.groups, geom.in_channels, geom.out_channels
    output_shape = geom.output_shape
    layout_form = "none"
    if layout == "channels_last":
        output_shape = channels_last_shape(output_shape, d)
        layout_form = ("transpose" if form is None
                       else channels_last_form(run_geom, method, form,
                                               dtype.itemsize))
    return Plan(
        geom=geom, dtype=dtype, method=method, form=form,
        nonfinite_method=nonfinite_method, nonfinite_form=nonfinite_form,
        fallback=fallback, fallback_form=fallback_form, pre_pad=pre_pad,
        subsample=subsample,
        x6_shape=(n, g, c_in // g) + to_3d(run_geom.spatial, d, 1),
        w6_shape=(g, c_out // g, c_in // g) + to_3d(geom.kernel, d, 1),
        bias2_shape=(g, c_out // g),
        out6_shape=(n, g, c_out // g) + to_3d(geom.out_spatial, d, 1),
        stride=to_3d(run_geom.stride, d, 1),
        dilation=to_3d(run_geom.dilation, d, 1),
        pad=to_3d((lo for lo, _ in run_geom.padding), d, 0),
        layout=layout, layout_form=layout_form,
        x5_shape=(n,) + to_3d(run_geom.spatial, d, 1) + (c_in,),
        out5_shape=(n,) + to_3d(geom.out_spatial, d, 1) + (c_out,),
        output_shape=output_shape,
    )


def _with_tables(form, geom, itemsize, layout):
    """A Winograd form with its unit and task tables, and for a channels-last call
    those of the channels-last kernel too, whose rows hold no unused tile (the other
    forms deal their tasks in the runner, from the form's parameters)."""
    if not isinstance(form, GemmForm) or form.name != "winograd":
        return form
    n, g, cg, cog, _, _, dilation, _, _, out = problem_dims(geom)
    phases = dilation[1] * dilation[2]
    tables = winograd_tasks(n, g, out[0], phases, form.grid, cg, cog, itemsize,
                            form.threads)
    last_tables = None
    if layout == "channels_last":
        dp, th, tw1 = form.grid
        last_tables = winograd_tasks(n, g, out[0], phases, (dp, th, tw1 - 1), cg, cog,
                                     itemsize, form.threads)
    return form._replace(tables=tables, last_tables=last_tables)


_PLANS: dict = {}


def get_plan(x, weight, bias, stride, padding, dilation, groups, padding_mode, method,
             d, layout="channels_first", cached_weights=False) -> Plan:
    """The cached :class:`Plan` of a call (made by :func:`make_plan` on a miss)."""
    constants = machine_constants()
    threads = numba.get_num_threads()
    # Keyed by repr for the arguments, as conv_geometry is: 1 == 1.0 == True, but only
    # 1 is a valid stride. The tunables' snapshot holds the budgets too.
    key = (x.shape, x.dtype.str, weight.shape, weight.dtype.str,
           None if bias is None else (bias.shape, bias.dtype.str),
           repr((stride, padding, dilation, groups, padding_mode, method, layout)), d,
           threads, config.snapshot(), constants, cached_weights)
    plan = _PLANS.get(key)
    if plan is None:
        plan = make_plan(x, weight, bias, stride, padding, dilation, groups,
                         padding_mode, method, d, constants, threads, current_budgets(),
                         layout, cached_weights)
        if len(_PLANS) >= 256:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan
