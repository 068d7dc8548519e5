"""``layout="channels_last"`` and ``out=`` (SPEC.md "Memory layout", "Output reuse"):
against the float64 reference and PyTorch on permuted arrays, on every path and padding
mode; which calls run on the channels-last kernels in place; ``out=``'s checks and that
it allocates no output."""

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import numbaconv
from numbaconv import _channels_last, _plan, config
from _reference import conv_reference
from conftest import assert_close, forcing_winograd, torch

METHODS = ("auto", "direct", "im2col", "fft")
MODES = ("zeros", "reflect", "replicate", "circular")
SPATIAL = {1: (11,), 2: (7, 9), 3: (5, 6, 7)}


def first(a, d):
    return np.moveaxis(a, -1, a.ndim - d - 1)


def last(a, d):
    return np.moveaxis(a, a.ndim - d - 1, -1)


# (C_in, C_out, groups, kernel): dense, pointwise, depthwise, grouped, channel multiplier
LAYERS = ((16, 5, 1, 3), (16, 7, 1, 1), (6, 5, 1, 3), (6, 6, 6, 3), (6, 4, 2, 2), (3, 6, 3, 3))


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("method", METHODS)
def test_channels_last_matches_reference(rng, d, layer, method):
    c_in, c_out, groups, k = layer
    x = rng.standard_normal((2,) + SPATIAL[d] + (c_in,)).astype(np.float32)
    w = rng.standard_normal((c_out, c_in // groups) + (k,) * d).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    for stride, padding, mode in ((1, "same", "zeros"), (2, 1, "reflect"),
                                  (1, 1, "replicate"), (2, 2, "circular"),
                                  (1, "valid", "zeros")):
        kw = dict(stride=stride, padding=padding, groups=groups)
        y = numbaconv.conv(x, w, b, **kw, padding_mode=mode, method=method,
                           layout="channels_last")
        ref = conv_reference(first(x, d), w, b, **kw, padding_mode=mode)
        assert y.flags.c_contiguous and y.dtype == np.float32
        assert_close(first(y, d), ref, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_channels_last_unbatched_dilated_and_views(rng, d, dtype):
    x = rng.standard_normal(SPATIAL[d] + (4,)).astype(dtype)
    w = rng.standard_normal((8, 4) + (2,) * d).astype(dtype)
    view = np.asfortranarray(x)[..., ::-1]  # any memory layout is accepted
    before = view.copy()
    for method in METHODS:
        y = numbaconv.conv(view, w, padding=1, dilation=2, method=method,
                           layout="channels_last")
        assert y.shape == numbaconv.output_shape(first(view, d).shape, w.shape, padding=1,
                                                 dilation=2)[1:] + (8,)
        assert_close(first(y, d), conv_reference(first(view, d), w, padding=1, dilation=2),
                     dtype)
    np.testing.assert_array_equal(view, before)


@pytest.mark.parametrize("case", [
    ((2, 9, 9, 8), (8, 1, 3, 3), 8, "depthwise"),      # depthwise
    ((1, 28, 28, 16), (16, 1, 27, 27), 16, "transpose"),  # tall depthwise: register blocks
    ((2, 9, 9, 16), (8, 16, 1, 1), 1, "gemm"),         # pointwise, under 2 vectors out
    ((1, 20, 20, 16), (8, 16, 3, 3), 1, "gemm"),       # dense, columns, the same
    ((1, 20, 20, 16), (64, 16, 1, 7), 1, "blocks"),    # dense
    ((2, 9, 9, 8), (4, 4, 3, 3), 2, "transpose"),      # grouped, 4 -> 2 per group
    ((2, 9, 9, 32), (32, 4, 3, 3), 8, "grouped"),      # grouped, 4 per group
    ((2, 9, 9, 32), (32, 2, 3, 3), 16, "grouped"),     # grouped, 2 per group
    ((2, 9, 9, 4), (4, 2, 3, 3), 2, "transpose"),      # grouped, under a vector
    ((1, 20, 20, 3), (8, 3, 3, 3), 1, "transpose"),    # a stem, under 2 vectors out
    ((1, 20, 20, 3), (64, 3, 3, 3), 1, "blocks"),      # a 3-channel stem
    ((1, 56, 56, 64), (64, 64, 3, 3), 1, "winograd"),  # r50_3x3_56
])
def test_channels_last_forms(case):
    """Depthwise, pointwise and dense GEMM calls run on the channels-last kernels,
    and dense layers with at least 2 vectors of output channels, in place; the rest
    (depthwise layers whose channels-first form takes the register blocks, and layers
    with under config.CHANNELS_LAST_MIN_CHANNELS input channels) on transposed
    copies."""
    x_shape, w_shape, groups, form = case
    x, w = np.ones(x_shape, np.float32), np.ones(w_shape, np.float32)
    plan = _plan.get_plan(x, w, None, 1, 1, 1, groups, "zeros", "auto", 2, "channels_last")
    assert plan.layout_form == form


def test_channels_last_kernels_run_in_place(rng, monkeypatch):
    """The in-place kernels themselves give the result (not the transposed route that
    serves while they compile)."""
    calls = []
    for name in ("gemm_rows", "depthwise_rows", "dense_blocks"):
        kernel = getattr(_channels_last, name)
        monkeypatch.setattr(_channels_last, name, _Spy(kernel, calls))
    x = rng.standard_normal((2, 9, 9, 16)).astype(np.float32)
    with numbaconv._compile.compiling_in_foreground():
        for w, groups in ((rng.standard_normal((16, 1, 3, 3)), 16),
                          (rng.standard_normal((8, 16, 1, 1)), 1),
                          (rng.standard_normal((8, 16, 1, 1)), 1),
                          (rng.standard_normal((5, 16, 3, 3)), 1)):
            w = w.astype(np.float32)
            stride = 2 if len(calls) == 2 else 1  # a strided pointwise layer gathers
            y = numbaconv.conv2d(x, w, stride=stride, padding=w.shape[-1] // 2,
                                 groups=groups, layout="channels_last")
            ref = conv_reference(first(x, 2), w, stride=stride, padding=w.shape[-1] // 2,
                                 groups=groups)
            assert_close(first(y, 2), ref, np.float32)
        stem = rng.standard_normal((2, 20, 20, 3)).astype(np.float32)
        w = rng.standard_normal((64, 3, 3, 3)).astype(np.float32)
        y = numbaconv.conv2d(stem, w, stride=2, padding=1, method="direct",
                             layout="channels_last")
        assert_close(first(y, 2), conv_reference(first(stem, 2), w, stride=2, padding=1),
                     np.float32)
    assert calls == ["depthwise_rows", "gemm_rows", "gemm_rows", "gemm_rows",
                     "dense_blocks"]


class _Spy:
    def __init__(self, kernel, calls):
        self.kernel, self.calls = kernel, calls

    def __call__(self, *args):
        self.calls.append(self.kernel.name)
        return self.kernel(*args)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", METHODS)
def test_channels_last_against_torch(rng, mode, method):
    """PyTorch on the same data with the channel axis moved, every path and mode."""
    for x_shape, w_shape, groups in (((2, 12, 10, 8), (8, 1, 3, 3), 8),
                                     ((2, 12, 10, 8), (16, 8, 1, 1), 1),
                                     ((2, 12, 10, 8), (12, 8, 3, 3), 1),
                                     ((2, 12, 10, 8), (12, 2, 3, 3), 4)):
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        b = rng.standard_normal(w_shape[0]).astype(np.float32)
        conv = torch.nn.Conv2d(x_shape[-1], w_shape[0], w_shape[2:], stride=2, padding=1,
                               groups=groups, padding_mode=mode)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w))
            conv.bias.copy_(torch.from_numpy(b))
            ref = conv(torch.from_numpy(first(x, 2).copy())).numpy()
        y = numbaconv.conv2d(x, w, b, stride=2, padding=1, groups=groups,
                             padding_mode=mode, method=method, layout="channels_last")
        assert_close(first(y, 2), ref, np.float32)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_channels_last_backward_and_transpose(rng, d):
    x = rng.standard_normal((2,) + SPATIAL[d] + (4,))
    w = rng.standard_normal((6, 2) + (3,) * d)
    g = rng.standard_normal(numbaconv.output_shape(first(x, d).shape, w.shape, stride=2,
                                                   padding=1))
    got = numbaconv.conv_backward(last(g, d), x, w, stride=2, padding=1, groups=2,
                                  padding_mode="reflect", layout="channels_last")
    want = numbaconv.conv_backward(g, first(x, d), w, stride=2, padding=1, groups=2,
                                   padding_mode="reflect")
    assert got[0].flags.c_contiguous
    np.testing.assert_allclose(first(got[0], d), want[0], atol=1e-10)
    np.testing.assert_allclose(got[1], want[1], atol=1e-10)
    np.testing.assert_allclose(got[2], want[2], atol=1e-10)
    assert numbaconv.conv_backward(last(g, d), x, w, stride=2, padding=1, groups=2,
                                   layout="channels_last", input_grad=False)[0] is None
    transpose = (numbaconv.conv_transpose1d, numbaconv.conv_transpose2d,
                 numbaconv.conv_transpose3d)[d - 1]
    wt = rng.standard_normal((4, 3) + (3,) * d)
    y = transpose(x, wt, stride=2, padding=1, groups=2, layout="channels_last")
    assert y.flags.c_contiguous
    np.testing.assert_allclose(first(y, d), transpose(first(x, d), wt, stride=2,
                                                      padding=1, groups=2), atol=1e-10)


@pytest.mark.parametrize("cls", [numbaconv.Conv2d, numbaconv.ConvTranspose2d])
def test_channels_last_layers(rng, cls):
    kw = dict(stride=2, padding=1, groups=2, rng=3)
    cl, cf = cls(4, 6, 3, layout="channels_last", **kw), cls(4, 6, 3, **kw)
    x = rng.standard_normal((2, 9, 8, 4)).astype(np.float32)
    y = cl(x)
    np.testing.assert_allclose(first(y, 2), cf(first(x, 2)), atol=1e-5)
    assert cl.output_shape(x.shape) == y.shape
    assert cl.macs(x.shape) == cf.macs(first(x, 2).shape)
    g = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_allclose(first(cl.backward(g), 2), cf.backward(first(g, 2)),
                               atol=1e-4)
    np.testing.assert_allclose(cl.grad_weight, cf.grad_weight, atol=1e-4)
    with pytest.raises(ValueError, match="grad_out has shape"):
        cl.backward(first(g, 2))
    assert "layout='channels_last'" in repr(cl)


def test_layout_errors():
    x, w = np.ones((1, 5, 5, 2)), np.ones((3, 2, 3, 3))
    for bad in ("NHWC", None, 1):
        with pytest.raises(ValueError, match="layout="):
            numbaconv.conv2d(x, w, layout=bad)
        with pytest.raises(ValueError, match="layout="):
            numbaconv.conv_backward(np.ones((1, 3, 3, 3)), x, w, layout=bad)
        with pytest.raises(ValueError, match="layout="):
            numbaconv.conv_transpose2d(x, np.ones((2, 3, 3, 3)), layout=bad)
        with pytest.raises(ValueError, match="layout="):
            numbaconv.Conv2d(2, 3, 3, layout=bad)
    with pytest.raises(ValueError, match="channels"):  # 5 channels last, weight wants 2
        numbaconv.conv2d(np.ones((1, 2, 5, 5)), w, layout="channels_last")


# ---- out= ----

def test_out_is_written_and_returned(rng):
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    for method in METHODS:
        out = np.full((2, 6, 9, 9), np.nan, np.float32)
        y = numbaconv.conv2d(x, w, padding=1, method=method, out=out)
        assert y is out
        assert_close(out, conv_reference(x, w, padding=1), np.float32)
    xl = np.ascontiguousarray(last(x, 2))
    for w_, groups in ((w, 1), (rng.standard_normal((4, 1, 3, 3)).astype(np.float32), 4)):
        out = np.full((2, 9, 9, w_.shape[0]), np.nan, np.float32)
        y = numbaconv.conv2d(xl, w_, padding=1, groups=groups, layout="channels_last",
                             out=out)
        assert y is out
        assert_close(first(out, 2), conv_reference(x, w_, padding=1, groups=groups),
                     np.float32)
    empty = np.empty((0, 6, 9, 9), np.float32)
    assert numbaconv.conv2d(x[:0], w, padding=1, out=empty) is empty


def test_out_allocates_nothing_large(rng):
    """Repeated calls with out= allocate no output (tracemalloc sees NumPy's
    allocations): well under the output's 1.6 MB, where a call without it takes it."""
    x = rng.standard_normal((1, 16, 50, 50)).astype(np.float32)
    w = rng.standard_normal((160, 16, 1, 1)).astype(np.float32)
    out = np.empty((1, 160, 50, 50), np.float32)
    for layout, xx, o in (("channels_first", x, out),
                          ("channels_last", np.ascontiguousarray(last(x, 2)),
                           np.empty((1, 50, 50, 160), np.float32))):
        for _ in range(2):  # warm: kernels, plans and scratch buffers
            numbaconv.conv2d(xx, w, layout=layout, out=o)
            numbaconv.conv2d(xx, w, layout=layout)
        tracemalloc.start()
        for _ in range(3):
            numbaconv.conv2d(xx, w, layout=layout, out=o)
        with_out = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        tracemalloc.start()
        numbaconv.conv2d(xx, w, layout=layout)
        without = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert without >= o.nbytes
        assert with_out < o.nbytes / 8, (layout, with_out)


def test_layer_out(rng):
    layer = numbaconv.Conv2d(4, 6, 3, padding=1, rng=0)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    out = np.empty((2, 6, 9, 9), np.float32)
    assert layer(x, out=out) is out
    np.testing.assert_allclose(out, layer(x), atol=1e-6)


def test_out_errors(rng):
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = np.zeros(3, np.float32)
    cases = [
        ([[0.0]], TypeError, "out must be a NumPy array"),
        (np.empty((1, 3, 3, 3), np.float64), TypeError, "out has dtype float64"),
        (np.empty((1, 3, 3, 4), np.float32), ValueError, r"out has shape \(1, 3, 3, 4\)"),
        (np.empty((1, 3, 3, 3), np.float32, order="F"), ValueError, "C-contiguous"),
        (np.empty((1, 3, 3, 6), np.float32)[..., ::2], ValueError, "C-contiguous"),
    ]
    readonly = np.empty((1, 3, 3, 3), np.float32)
    readonly.flags.writeable = False
    cases.append((readonly, ValueError, "read-only"))
    for out, error, match in cases:
        with pytest.raises(error, match=match):
            numbaconv.conv2d(x, w, b, out=out)
    big = np.zeros(200, np.float32)
    xs = big[:50].reshape(1, 2, 5, 5)
    for name, call in (("input", lambda o: numbaconv.conv2d(xs, w, out=o)),
                       ("weight", lambda o: numbaconv.conv2d(x, big[:54].reshape(w.shape),
                                                             out=o)),
                       ("bias", lambda o: numbaconv.conv2d(x, w, big[25:28], out=o))):
        with pytest.raises(ValueError, match=f"out shares memory with {name}"):
            call(big[20:47].reshape(1, 3, 3, 3))
    # Neighbouring but disjoint parts of one buffer are fine.
    y = numbaconv.conv2d(xs, w, out=big[100:127].reshape(1, 3, 3, 3))
    assert_close(y, conv_reference(xs, w), np.float32)
    out = np.zeros((1, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="groups"):  # the call's own errors come first
        numbaconv.conv2d(x, w, groups=2, out=out)
    assert not out.any()  # nothing written before an error


def test_channels_last_dask(rng):
    da = pytest.importorskip("dask.array")
    x = rng.standard_normal((2, 12, 10, 4)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    lazy = numbaconv.conv2d(da.from_array(x, chunks=(1, 5, 4, 4)), w, stride=2,
                            padding="same", padding_mode="reflect",
                            layout="channels_last")
    assert isinstance(lazy, da.Array) and lazy.shape == (2, 6, 5, 6)
    want = numbaconv.conv2d(x, w, stride=2, padding="same", padding_mode="reflect",
                            layout="channels_last")
    assert_close(lazy.compute(scheduler="sync"), want, np.float32)
    with pytest.raises(TypeError, match="out= does not take a dask input"):
        numbaconv.conv2d(da.from_array(x), w, out=np.empty((2, 6, 10, 8), np.float32))
    with pytest.raises(ValueError, match="layout="):
        numbaconv.conv2d(da.from_array(x), w, layout="nhwc")


def test_channels_last_forms_examples_reach_their_kernels():
    """warmup and the background compile jobs run each form's example calls: the
    channels-last ones must reach the form's own kernel."""
    from numbaconv._registry import FORMS

    for name, form in FORMS.items():
        if form.layout != "channels_last":
            continue
        for x_shape, w_shape in form.examples:
            x, w = np.ones(x_shape, np.float32), np.ones(w_shape, np.float32)
            plan = _plan.get_plan(x, w, None, 1, 1, 1, form.groups, "zeros", form.method,
                                  None, "channels_last")
            assert plan.layout_form == name.removeprefix("cl_"), name


def test_channels_last_while_compiling_runs_the_fallback_only(rng, monkeypatch):
    """While a channels-last kernel compiles, the call runs the channels-first route's
    fallback, which needs no kernel (so it starts no second compile job)."""
    from numbaconv import _conv_arrays
    from numbaconv._compile import KernelNotReady

    def not_ready(*args):
        raise KernelNotReady

    def must_not_run(*args):
        raise AssertionError("a kernel path ran")

    monkeypatch.setattr(_conv_arrays, "conv_gemm", not_ready)
    monkeypatch.setattr(_conv_arrays, "METHODS", {m: must_not_run for m in METHODS})
    x = rng.standard_normal((2, 9, 9, 16)).astype(np.float32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    plan = _plan.get_plan(x, w, None, 1, 1, 1, 1, "zeros", "auto", 2, "channels_last")
    assert plan.layout_form == "gemm" and plan.fallback != "none"
    y = numbaconv.conv2d(x, w, padding=1, layout="channels_last")
    assert_close(first(y, 2), conv_reference(first(x, 2), w, padding=1), np.float32)


def test_channels_last_errors_name_the_users_shape():
    with pytest.raises(ValueError, match=r"input of shape \(1, 2, 2, 4\) read as "
                                         r"channels-first \(1, 4, 2, 2\)"):
        numbaconv.conv2d(np.ones((1, 2, 2, 4)), np.ones((3, 4, 3, 3)),
                         layout="channels_last")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 3), c=st.integers(1, 20), k=st.integers(1, 6),
       stride=st.integers(1, 3), dilation=st.integers(1, 3), pad=st.integers(0, 4),
       width=st.integers(1, 17), n=st.integers(1, 2), bias=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_channels_last_depthwise_kernel_on_random_layers(d, c, k, stride, dilation, pad,
                                                         width, n, bias, dtype, seed):
    """The channels-last depthwise kernel (positions in pairs inside, one at a time at
    the borders) against the float64 reference: kernels up to 6 taps a side (passes of
    4 taps and their remainders), strides, dilations, paddings past the kernel's reach,
    odd widths."""
    rng = np.random.default_rng(seed)
    spatial = (3,) * (d - 1) + (width,)
    kernel = (2,) * (d - 1) + (k,)
    if any(size + 2 * pad < dilation * (taps - 1) + 1
           for size, taps in zip(spatial, kernel)):
        return  # no output
    x = rng.standard_normal((n,) + spatial + (c,)).astype(dtype)
    w = rng.standard_normal((c, 1) + kernel).astype(dtype)
    b = rng.standard_normal(c).astype(dtype) if bias else None
    kw = dict(stride=stride, padding=pad, dilation=dilation, groups=c)
    plan = _plan.get_plan(x, w, b, stride, pad, dilation, c, "zeros", "direct", d,
                          "channels_last")
    assert plan.layout_form == "depthwise"
    y = numbaconv.conv(x, w, b, method="direct", layout="channels_last", **kw)
    assert_close(first(y, d), conv_reference(first(x, d), w, b, **kw), dtype)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(2, 3), c=st.integers(1, 20), depth_taps=st.integers(1, 3),
       size=st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 12)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       dilation=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       pad=st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, 3)),
       bias=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31))
def test_channels_last_depthwise_whole_3x3_passes(d, c, depth_taps, size, stride,
                                                  dilation, pad, bias, dtype, seed):
    """3x3 kernels in the last two axes, where the kernel takes two positions' whole
    3x3 in one pass that also writes the bias: every stride and dilation (the second
    position's taps overlapping the first's or not), rows and columns at the borders,
    and in 3D depth paddings past the kernel's reach (positions with no tap in depth)."""
    rng = np.random.default_rng(seed)
    spatial, kernel = size[3 - d:], ((depth_taps,) if d == 3 else ()) + (3, 3)
    stride, dilation, pad = stride[3 - d:], dilation[3 - d:], pad[3 - d:]
    if any(s + 2 * p < dl * (t - 1) + 1
           for s, t, dl, p in zip(spatial, kernel, dilation, pad)):
        return  # no output
    x = rng.standard_normal((2,) + spatial + (c,)).astype(dtype)
    w = rng.standard_normal((c, 1) + kernel).astype(dtype)
    b = rng.standard_normal(c).astype(dtype) if bias else None
    kw = dict(stride=stride, padding=pad, dilation=dilation, groups=c)
    y = numbaconv.conv(x, w, b, method="direct", layout="channels_last", **kw)
    assert_close(first(y, d), conv_reference(first(x, d), w, b, **kw), dtype)


@pytest.mark.parametrize("ratio", [0, 1 << 60])  # always / never tap-major columns
@pytest.mark.parametrize("d", [1, 2, 3])
def test_channels_last_gemm_columns_in_both_orders(rng, monkeypatch, ratio, d):
    """The channels-last GEMM's columns, tap-major (the weight permuted to match) or in
    the weight's own order, give the reference's result."""
    monkeypatch.setattr(_channels_last, "TAP_MAJOR_RATIO", ratio)
    x = rng.standard_normal((2,) + SPATIAL[d] + (16,)).astype(np.float32)
    w = rng.standard_normal((5, 16) + (3,) * d).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    kw = dict(stride=2, padding=1, dilation=1)
    plan = _plan.get_plan(x, w, b, 2, 1, 1, 1, "zeros", "im2col", d, "channels_last")
    assert plan.layout_form == "gemm"
    y = numbaconv.conv(x, w, b, method="im2col", layout="channels_last", **kw)
    assert_close(first(y, d), conv_reference(first(x, d), w, b, **kw), np.float32)
    kw = dict(stride=1, padding=2, dilation=2)
    y = numbaconv.conv(x, w, None, method="im2col", layout="channels_last", **kw)
    assert_close(first(y, d), conv_reference(first(x, d), w, None, **kw), np.float32)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 3), channels=st.sampled_from([16, 32, 40, 72, 144]),
       k=st.integers(1, 7), dilation=st.integers(1, 2), pad=st.integers(0, 4),
       extra=st.integers(6, 15), sliding=st.booleans(), stride_w=st.integers(1, 4),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_channels_last_depthwise_register_blocks(d, channels, k, dilation, pad, extra,
                                                 sliding, stride_w, dtype, seed):
    """The channels-last depthwise kernel's runs of four-position register blocks:
    channel counts that 2 vectors do not divide (the last block overlaps), runs that
    leave 1-3 positions, kernel depths partly outside the input; sliding blocks
    (dilation equal to the stride along W, (2, 2)), blocks of stride twice the
    dilation ((2, 1), (4, 2)) and strided ones (any other stride), against the
    oracle. (The input is wide enough for four positions'
    kernels: narrower, a layer whose channels-first form takes register blocks runs on
    transposed copies.)"""
    rng = np.random.default_rng(seed)
    span = (k - 1) * dilation + 1
    spatial = (span + extra,) * (d - 1) + (span + extra * stride_w,)
    stride = (1,) * (d - 1) + (dilation if sliding else stride_w,)
    x = rng.standard_normal((2,) + spatial + (channels,)).astype(dtype)
    w = rng.standard_normal((channels, 1) + (k,) * d).astype(dtype)
    b = rng.standard_normal(channels).astype(dtype)
    kw = dict(stride=stride, padding=pad, dilation=dilation, groups=channels)
    plan = _plan.get_plan(x, w, b, stride, pad, dilation, channels, "zeros", "direct",
                          None, "channels_last")
    assert plan.layout_form == "depthwise"
    y = numbaconv.conv(x, w, b, **kw, method="direct", layout="channels_last")
    assert_close(first(y, d), conv_reference(first(x, d), w, b, **kw), dtype)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 3), c_in=st.sampled_from([1, 2, 3, 7, 16, 33]),
       extra_out=st.integers(0, 40), k=st.integers(1, 5), stride=st.integers(1, 3),
       dilation=st.integers(1, 2), pad=st.integers(0, 3),
       extra=st.lists(st.integers(0, 9), min_size=3, max_size=3),
       batch=st.integers(1, 3), mode=st.sampled_from(["zeros", "reflect"]),
       method=st.sampled_from(["direct", "im2col"]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_channels_last_dense_blocks_on_random_layers(d, c_in, extra_out, k, stride,
                                                     dilation, pad, extra, batch, mode,
                                                     method, dtype, seed):
    """The channels-last dense blocks: output channels that 2 vectors do not divide,
    output positions (flattened over rows and samples) that 8 do not (the last blocks
    overlap), blocks spanning rows and samples, stride, dilation, padding (zero padding
    inside the kernel, other modes padded ahead), 1-3D, against the oracle."""
    from numbaconv._simd import lanes

    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    c_out = 2 * lanes(dtype.itemsize) + extra_out
    span = (k - 1) * dilation + 1
    spatial = tuple(span + e for e in extra[:d])
    pad = min(pad, min(spatial) - 1) if mode == "reflect" else pad
    positions = batch * math.prod((s + 2 * pad - span) // stride + 1 for s in spatial)
    assume(positions >= 8)
    x = rng.standard_normal((batch,) + spatial + (c_in,)).astype(dtype)
    w = rng.standard_normal((c_out, c_in) + (k,) * d).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    kw = dict(stride=stride, padding=pad, dilation=dilation)
    saved = config.BLOCKS_MIN_POSITIONS
    config.BLOCKS_MIN_POSITIONS = 8  # the kernel's least
    try:
        plan = _plan.get_plan(x, w, b, stride, pad, dilation, 1, mode, method, None,
                              "channels_last")
        assume(plan.form.name != "winograd")
        assert plan.layout_form == "blocks"
        y = numbaconv.conv(x, w, b, **kw, padding_mode=mode, method=method,
                           layout="channels_last")
    finally:
        config.BLOCKS_MIN_POSITIONS = saved
    assert_close(first(y, d), conv_reference(first(x, d), w, b, **kw, padding_mode=mode),
                 dtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 3), groups=st.integers(2, 5), cg=st.integers(2, 8),
       cog=st.sampled_from([8, 9, 16]), k=st.integers(1, 4), stride=st.integers(1, 3),
       dilation=st.integers(1, 2), pad=st.integers(0, 2), batch=st.integers(1, 3),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_channels_last_grouped_stem_kernel(d, groups, cg, cog, k, stride, dilation, pad,
                                           batch, dtype, seed):
    """Grouped layers with few channels per group run the stem kernel on the
    channels-last arrays in place (planes filled from, sums written to, that layout),
    against the oracle: 1-3D, batches, stride, dilation, padding, output channels per
    group that 8 does not divide."""
    rng = np.random.default_rng(seed)
    span = (k - 1) * dilation + 1
    spatial = tuple(span + e for e in (3, 5, 8)[:d])
    x = rng.standard_normal((batch,) + spatial + (groups * cg,)).astype(dtype)
    w = rng.standard_normal((groups * cog, cg) + (k,) * d).astype(dtype)
    b = rng.standard_normal(groups * cog).astype(dtype)
    kw = dict(stride=stride, padding=pad, dilation=dilation, groups=groups)
    plan = _plan.get_plan(x, w, b, stride, pad, dilation, groups, "zeros", "direct",
                          None, "channels_last")
    assume(cg != cog)  # those go by the grouped lanes kernel
    assert plan.layout_form == "grouped_stem"
    y = numbaconv.conv(x, w, b, **kw, method="direct", layout="channels_last")
    assert_close(first(y, d), conv_reference(first(x, d), w, b, **kw), dtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 3), cg=st.sampled_from([2, 4, 8]), extra_groups=st.integers(0, 6),
       k=st.integers(1, 4), stride=st.integers(1, 3), dilation=st.integers(1, 2),
       pad=st.integers(0, 3), width=st.integers(0, 12), batch=st.integers(1, 2),
       mode=st.sampled_from(MODES), dtype=st.sampled_from([np.float32, np.float64]),
       one_vector_a_pass=st.booleans(), seed=st.integers(0, 2**31))
def test_channels_last_grouped_lanes_kernel(d, cg, extra_groups, k, stride, dilation, pad,
                                            width, batch, mode, dtype, one_vector_a_pass,
                                            seed):
    """Grouped layers of 2, 4 or 8 channels per group in and out run the grouped lanes
    kernel in place (2 as 4 with block-diagonal weights; channels that the lanes do not
    divide, the last vector overlapping the one before it), against the oracle: 1-3D,
    batches, stride, dilation, padding of every mode, rows from shorter than a block
    of positions to several blocks with edges on both sides, passes over a row of one
    vector of channels and of all."""
    from numbaconv._simd import lanes

    rng = np.random.default_rng(seed)
    group = max(4, cg)
    assume(lanes(np.dtype(dtype).itemsize) % group == 0)
    # At least a vector of channels, a multiple of the group size.
    vector = lanes(np.dtype(dtype).itemsize)
    channels = vector + group * extra_groups
    assume(channels // cg > 1)
    span = (k - 1) * dilation + 1
    spatial = (span + 1,) * (d - 1) + (span + width,)
    assume(mode == "zeros" or pad < min(spatial))  # reflect needs pad < size
    x = rng.standard_normal((batch,) + spatial + (channels,)).astype(dtype)
    w = rng.standard_normal((channels, cg) + (k,) * d).astype(dtype)
    b = rng.standard_normal(channels).astype(dtype)
    kw = dict(stride=stride, padding=pad, dilation=dilation, groups=channels // cg)
    plan = _plan.get_plan(x, w, b, stride, pad, dilation, channels // cg, mode, "direct",
                          None, "channels_last")
    assert plan.layout_form == "grouped"
    saved = _channels_last.GROUPED_PASS_WEIGHT_BYTES
    _channels_last.GROUPED_PASS_WEIGHT_BYTES = 1 if one_vector_a_pass else 1 << 30
    try:
        y = numbaconv.conv(x, w, b, **kw, padding_mode=mode, method="direct",
                           layout="channels_last")
    finally:
        _channels_last.GROUPED_PASS_WEIGHT_BYTES = saved
    assert_close(first(y, d), conv_reference(first(x, d), w, b, **kw, padding_mode=mode),
                 dtype)


def test_rotated_weight_packs_each_groups_weights_once():
    """Every weight lands once in each vector of the grouped lanes kernel's packing
    that holds its input channel, at the rotation that takes that channel to its
    output channel; the rest are zeros (a group of 2 inside a group of 4 is
    block-diagonal)."""
    from numbaconv._channels_last import rotated_weight

    for cg, group, c in ((2, 4, 8), (4, 4, 8), (8, 8, 16), (4, 4, 12)):
        vector = 8
        w = np.arange(1, c * cg * 3 + 1, dtype=np.float64).reshape(c, cg, 3)
        wr = rotated_weight(w, group, vector)
        assert wr.shape == (-(-c // vector), 3, group, vector)
        starts = [min(v * vector, c - vector) for v in range(wr.shape[0])]
        assert np.count_nonzero(wr) == len(starts) * vector * cg * 3  # cg per lane and tap
        for v, start in enumerate(starts):
            for co in range(start, start + vector):
                for j in range(cg):
                    ci = co // cg * cg + j
                    r = (ci % group - co % group) % group
                    np.testing.assert_array_equal(wr[v, :, r, ci - start], w[co, j])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 3), c_in=st.sampled_from([1, 3, 16]), extra_out=st.integers(0, 20),
       k=st.integers(1, 4), stride=st.integers(1, 3), dilation=st.integers(1, 2),
       pad=st.integers(0, 3), long=st.booleans(), batch=st.integers(1, 2),
       channels_first=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31))
def test_dense_blocks_in_both_layouts(d, c_in, extra_out, k, stride, dilation, pad, long,
                                      batch, channels_first, dtype, seed):
    """The dense register blocks on channels-first arrays (the input transposed as it
    is padded, the result transposed back) and channels-last ones, rows longer than a
    piece of the padded copy (1024 columns) included, against the oracle."""
    from numbaconv._simd import lanes

    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    c_out = 2 * lanes(dtype.itemsize) + extra_out
    span = (k - 1) * dilation + 1
    width = 2100 if long and d == 1 else span + 9
    spatial = (span + 2,) * (d - 1) + (width,)
    x = rng.standard_normal((batch, c_in) + spatial).astype(dtype)
    w = rng.standard_normal((c_out, c_in) + (k,) * d).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    want = conv_reference(x, w, b, stride=stride, padding=pad, dilation=dilation)
    assume(batch * math.prod(want.shape[2:]) >= 8)  # the kernel's least (a block)
    lead = (1,) * (3 - d)
    w5 = w.reshape(w.shape[:2] + lead + w.shape[2:])
    args = ((stride,) * d, (dilation,) * d, (pad,) * d)
    stride5, dilation5, pad5 = ((1,) * (3 - d) + args[0], (1,) * (3 - d) + args[1],
                                (0,) * (3 - d) + args[2])
    with numbaconv._compile.compiling_in_foreground():
        if channels_first:
            out = np.empty((batch, c_out) + lead + want.shape[2:], dtype)
            _channels_last.conv_blocks(x.reshape(x.shape[:2] + lead + spatial), w5, b, out,
                                       stride5, dilation5, pad5, channels_first=True)
            got = out.reshape(want.shape)
        else:
            xl = np.ascontiguousarray(last(x, d)).reshape((batch,) + lead + spatial
                                                          + (c_in,))
            out = np.empty((batch,) + lead + want.shape[2:] + (c_out,), dtype)
            _channels_last.conv_blocks(xl, w5, b, out, stride5, dilation5, pad5)
            got = first(out.reshape((batch,) + want.shape[2:] + (c_out,)), d)
    assert_close(got, want, dtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(2, 3), groups=st.integers(1, 2), cg=st.integers(16, 40),
       cog=st.integers(1, 40), kd=st.integers(1, 3), dilation=st.integers(1, 3),
       pad=st.integers(0, 3), extra=st.tuples(*[st.integers(0, 13)] * 3),
       batch=st.integers(1, 2), mode=st.sampled_from(MODES), bias=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_channels_last_winograd_on_random_layers(d, groups, cg, cog, kd, dilation, pad,
                                                 extra, batch, mode, bias, dtype, seed):
    """The channels-last Winograd kernel, in place: channel counts that vectors do not
    divide (masked loads and stores), output channels fewer than a vector, groups,
    dilation (tile phases), partial tiles, 3D with any depth kernel, every padding
    mode, against the oracle."""
    rng = np.random.default_rng(seed)
    kernel = ((kd,) if d == 3 else ()) + (3, 3)
    spans = [(k - 1) * dilation + 1 for k in kernel]
    # Other modes than zeros pad by less than the input's extent.
    least = 1 if mode == "zeros" else pad + 1
    spatial = tuple(max(least, s - 2 * pad + e) for s, e in zip(spans, extra))
    x = rng.standard_normal((batch,) + spatial + (groups * cg,)).astype(dtype)
    w = rng.standard_normal((groups * cog, cg) + kernel).astype(dtype)
    b = rng.standard_normal(groups * cog).astype(dtype) if bias else None
    kw = dict(padding=pad, dilation=dilation, groups=groups, padding_mode=mode)
    with forcing_winograd() as calls:
        y = numbaconv.conv(x, w, b, method="im2col", layout="channels_last", **kw)
    assert calls == [True]  # the channels-last kernel alone
    assert_close(first(y, d), conv_reference(first(x, d), w, b, **kw), dtype)


def test_channels_last_winograd_keeps_the_nan_rule(rng):
    """A NaN or an Inf in the input or the weight: the channels-last Winograd kernel
    steps aside, and only the outputs whose receptive field holds it are non-finite."""
    x = rng.standard_normal((1, 20, 20, 16)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    x[0, 10, 10, 3] = np.inf
    with forcing_winograd() as calls:
        y = numbaconv.conv2d(x, w, padding=1, method="im2col", layout="channels_last")
        bad = np.zeros((20, 20), dtype=bool)
        bad[9:12, 9:12] = True
        np.testing.assert_array_equal(~np.isfinite(y[0]), bad[..., None].repeat(16, -1))
        x[0, 10, 10, 3] = 0
        w[2, 5, 1, 1] = np.nan
        y = numbaconv.conv2d(x, w, padding=1, method="im2col", layout="channels_last")
        np.testing.assert_array_equal(~np.isfinite(y[0]), np.broadcast_to(
            np.arange(16) == 2, y[0].shape))
    # Each call: the channels-last kernel, then the channels-first one on the
    # transposed copies, both stepping aside.
    assert calls == [False, False, False, False]


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("method", METHODS)
def test_channels_last_single_channel_copies_nothing(rng, d, method, monkeypatch):
    """With one channel in and out the layouts share their memory order: the
    transposed route views the input and writes the output in place, with the
    reference's result."""
    from numbaconv import _conv_arrays

    def refuse(*args):
        raise AssertionError("transposed a single-channel array")

    monkeypatch.setattr(_conv_arrays, "moved_to_first", refuse)
    monkeypatch.setattr(_conv_arrays, "move_to_last", refuse)
    x = rng.standard_normal((2,) + SPATIAL[d] + (1,)).astype(np.float32)
    w = rng.standard_normal((1, 1) + (3,) * d).astype(np.float32)
    for mode in MODES:
        y = numbaconv.conv(x, w, np.ones(1, np.float32), padding=1, padding_mode=mode,
                           method=method, layout="channels_last")
        ref = conv_reference(first(x, d), w, np.ones(1), padding=1, padding_mode=mode)
        assert_close(first(y, d), ref, np.float32)
    # One channel in, several out: the input viewed, the output transposed.
    monkeypatch.undo()
    w8 = rng.standard_normal((8, 1) + (3,) * d).astype(np.float32)
    y = numbaconv.conv(x, w8, padding=1, method=method, layout="channels_last")
    assert_close(first(y, d), conv_reference(first(x, d), w8, padding=1), np.float32)
