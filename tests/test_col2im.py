"""The col2im form of the input gradient (strided conv_backward, conv_transpose*), and
conv_backward's input_grad=False."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numbaconv
from numbaconv import _col2im, gradients
from numbaconv._compile import KernelNotReady
from _reference import conv_reference
from conftest import assert_close, torch

TRANSPOSE = {1: numbaconv.conv_transpose1d, 2: numbaconv.conv_transpose2d,
             3: numbaconv.conv_transpose3d}


@st.composite
def strided_layers(draw):
    """Layers whose input gradient takes the col2im form: stride > 1 somewhere and at
    least MIN_CHANNELS output channels per group; kernels smaller and larger than the
    stride, dilation, padding."""
    d = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2]))
    cog = draw(st.integers(_col2im.MIN_CHANNELS, _col2im.MIN_CHANNELS + 2))
    cg = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 4)) for _ in range(d))
    if max(stride) == 1:
        stride = (2,) + stride[1:]
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(d))
    padding = tuple(draw(st.integers(0, (k - 1) * dl)) for k, dl in zip(kernel, dilation))
    spatial = tuple(draw(st.integers(max(1, (k - 1) * dl + 1 - 2 * p), 3 * (k - 1) * dl + 9))
                    for k, dl, p in zip(kernel, dilation, padding))
    return dict(d=d, groups=groups, c_in=groups * cg, c_out=groups * cog, kernel=kernel,
                stride=stride, dilation=dilation, padding=padding, spatial=spatial)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=strided_layers(), seed=st.integers(0, 2**31), dtype=st.sampled_from(
    [np.float32, np.float64]))
def test_col2im_input_grad_is_the_adjoint(cfg, seed, dtype):
    """<conv(x), g> == <x, grad_x> in float64 (the input gradient is the adjoint), and
    float32 within SPEC tolerance of it; the transposed convolution the same."""
    rng = np.random.default_rng(seed)
    d = cfg["d"]
    x = rng.standard_normal((2, cfg["c_in"]) + cfg["spatial"])
    w = rng.standard_normal((cfg["c_out"], cfg["c_in"] // cfg["groups"]) + cfg["kernel"])
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
              groups=cfg["groups"])
    y = conv_reference(x, w, **kw)
    g = rng.standard_normal(y.shape)
    gx = numbaconv.conv_backward(g.astype(dtype), x.astype(dtype), w.astype(dtype), **kw,
                                 bias=False)[0]
    assert gx.dtype == dtype and gx.shape == x.shape
    gx64 = numbaconv.conv_backward(g, x, w, **kw, bias=False)[0]
    assert np.vdot(y, g) == pytest.approx(np.vdot(x, gx64), rel=1e-9, abs=1e-9)
    # Each input element's gradient on its own: against a finite difference of the
    # float64 oracle would cost a convolution per element, so against unit inputs.
    for idx in [(0, 0) + (0,) * d, (1, cfg["c_in"] - 1) + tuple(s - 1 for s in cfg["spatial"])]:
        e = np.zeros_like(x)
        e[idx] = 1.0
        assert gx64[idx] == pytest.approx(np.vdot(conv_reference(e, w, **kw), g),
                                          rel=1e-9, abs=1e-9)
    assert_close(gx.astype(np.float64), gx64, dtype)
    out_pad = _output_padding(cfg, y.shape[2:])
    if out_pad is not None:
        xt = TRANSPOSE[d](g, w, None, kw["stride"], kw["padding"], out_pad, kw["groups"],
                          kw["dilation"])
        np.testing.assert_allclose(xt, gx64, rtol=1e-10, atol=1e-10)


def _output_padding(cfg, out_spatial):
    """The transposed convolution's output_padding that gives back the layer's input
    size from its output size, or None where no valid one does."""
    out_pad = tuple(s - ((o - 1) * st_ - 2 * p + dl * (k - 1) + 1)
                    for s, o, st_, p, dl, k in zip(cfg["spatial"], out_spatial,
                                                   cfg["stride"], cfg["padding"],
                                                   cfg["dilation"], cfg["kernel"]))
    if all(op < max(s, dl) for op, s, dl in zip(out_pad, cfg["stride"], cfg["dilation"])):
        return out_pad
    return None


def _spy(monkeypatch):
    calls = []
    real = gradients.input_grad_col2im

    def spy(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(gradients, "input_grad_col2im", spy)
    return calls


@pytest.mark.parametrize("weight,groups,used", [
    ((8, 4, 3, 3), 1, True),        # dense stride 2
    ((8, 1, 3, 3), 4, False),       # 2 output channels per group: the spread conv
    ((4, 1, 3, 3), 4, False),       # depthwise
])
def test_strided_input_grad_takes_col2im_where_it_pays(monkeypatch, rng, weight, groups,
                                                      used):
    calls = _spy(monkeypatch)
    x = rng.standard_normal((1, 4, 9, 8))
    w = rng.standard_normal(weight)
    g = rng.standard_normal(numbaconv.output_shape(x.shape, w.shape, 2, 1))
    gx = numbaconv.conv_backward(g, x, w, 2, 1, groups=groups)[0]
    assert bool(calls) == used
    y = conv_reference(x, w, stride=2, padding=1, groups=groups)
    assert np.vdot(y, g) == pytest.approx(np.vdot(x, gx), rel=1e-9)
    calls.clear()
    numbaconv.conv_backward(rng.standard_normal((1, weight[0], 9, 8)), x, w, 1, 1,
                            groups=groups)
    assert not calls  # stride 1: the flipped convolution (Winograd, shifted GEMM)


def test_col2im_while_its_kernel_compiles_gives_the_same(monkeypatch, rng):
    """A cold col2im kernel: the spread convolution serves the call meanwhile."""
    x = rng.standard_normal((2, 6, 11, 10)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal(numbaconv.output_shape(x.shape, w.shape, 2, 1)).astype(
        np.float32)
    warm = numbaconv.conv_backward(g, x, w, 2, 1, groups=2)[0]

    def not_ready(*args, **kwargs):
        raise KernelNotReady("col2im")

    monkeypatch.setattr(gradients, "input_grad_col2im", not_ready)
    cold = numbaconv.conv_backward(g, x, w, 2, 1, groups=2)[0]
    assert_close(cold.astype(np.float64), warm.astype(np.float64), np.float32)


def test_col2im_keeps_nan_in_its_receptive_field(rng):
    """A NaN in the output gradient reaches only the inputs that output read."""
    x = rng.standard_normal((1, 4, 12, 12))
    w = rng.standard_normal((8, 4, 3, 3))
    g = rng.standard_normal(numbaconv.output_shape(x.shape, w.shape, 2, 1))
    g[0, 3, 2, 4] = np.nan
    gx = numbaconv.conv_backward(g, x, w, 2, 1, bias=False)[0]
    reached = np.zeros(x.shape[2:], bool)
    reached[2 * 2 - 1: 2 * 2 + 2, 2 * 4 - 1: 2 * 4 + 2] = True
    assert np.isnan(gx[0]).any(axis=0).tolist() == reached.tolist()
    assert np.isnan(gx[0][:, reached]).all()


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("d,shape,weight,kw", [
    (2, (1, 16, 8, 8), (16, 8, 4, 4), dict(stride=2, padding=1)),        # DCGAN
    (2, (2, 16, 9, 7), (16, 8, 2, 2), dict(stride=2)),                   # U-Net
    (3, (1, 8, 3, 5, 4), (8, 4, 4, 4, 4), dict(stride=4)),
    (1, (2, 8, 21), (8, 6, 8), dict(stride=4, padding=2, output_padding=1)),
    (2, (1, 8, 7, 6), (8, 4, 3, 3), dict(stride=(2, 3), dilation=(1, 2), groups=2,
                                         output_padding=(1, 0))),
])
def test_strided_transpose_matches_pytorch(rng, d, shape, weight, kw):
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(weight).astype(np.float32)
    b = rng.standard_normal(weight[1] * kw.get("groups", 1)).astype(np.float32)
    y = TRANSPOSE[d](x, w, b, **kw)
    ref = getattr(torch.nn.functional, f"conv_transpose{d}d")(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **kw).numpy()
    assert_close(y.astype(np.float64), ref.astype(np.float64), np.float32)


def test_backward_without_input_grad(rng):
    x = rng.standard_normal((2, 3, 10, 9))
    w = rng.standard_normal((8, 3, 3, 3))
    g = rng.standard_normal(numbaconv.output_shape(x.shape, w.shape, 2, 1))
    gx, gw, gb = numbaconv.conv_backward(g, x, w, 2, 1)
    none, gw2, gb2 = numbaconv.conv_backward(g, x, w, 2, 1, input_grad=False)
    assert none is None and gx is not None
    np.testing.assert_array_equal(gw2, gw)
    np.testing.assert_array_equal(gb2, gb)
    empty = numbaconv.conv_backward(g[:0], x[:0], w, 2, 1, input_grad=False)
    assert empty[0] is None and empty[1].shape == w.shape
    with pytest.raises(TypeError, match="input_grad=1 must be True or False"):
        numbaconv.conv_backward(g, x, w, 2, 1, input_grad=1)


@pytest.mark.parametrize("cls,kwargs", [(numbaconv.Conv2d, dict(stride=2, padding=1)),
                                        (numbaconv.ConvTranspose2d, dict(stride=2))])
def test_layer_backward_without_input_grad(rng, cls, kwargs):
    layer = cls(3, 8, 3, **kwargs, rng=0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    y = layer(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = layer.backward(g)
    gw, gb = layer.grad_weight.copy(), layer.grad_bias.copy()
    assert layer.backward(g, input_grad=False) is None
    np.testing.assert_array_equal(layer.grad_weight, gw)
    np.testing.assert_array_equal(layer.grad_bias, gb)
    assert gx.shape == x.shape
    with pytest.raises(TypeError, match="input_grad=None must be True or False"):
        layer.backward(g, input_grad=None)


@st.composite
def strided_depthwise_layers(draw):
    """1D and 2D depthwise layers with stride > 1 somewhere: kernels smaller and larger
    than the stride, dilation, padding, a map narrower or wider than a vector."""
    d = draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 5)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 4)) for _ in range(d))
    if max(stride) == 1:
        stride = stride[:-1] + (2,)
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(d))
    padding = tuple(draw(st.integers(0, (k - 1) * dl)) for k, dl in zip(kernel, dilation))
    spatial = tuple(draw(st.integers(max(1, (k - 1) * dl + 1 - 2 * p),
                                     3 * (k - 1) * dl + 40))
                    for k, dl, p in zip(kernel, dilation, padding))
    return dict(d=d, c=draw(st.integers(1, 5)), kernel=kernel, stride=stride,
                dilation=dilation, padding=padding, spatial=spatial)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=strided_depthwise_layers(), seed=st.integers(0, 2**31), dtype=st.sampled_from(
    [np.float32, np.float64]))
def test_strided_depthwise_input_grad_kernel(cfg, seed, dtype):
    """The strided depthwise input gradient's own kernel (phase by phase, no zeros
    spread): the adjoint of the oracle in float64, float32 within SPEC tolerance of it,
    and the transposed convolution (with a bias) against the oracle's adjoint too."""
    calls = []
    real = gradients._depthwise_input_grad

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gradients, "_depthwise_input_grad", spy)
        _check_strided_depthwise(cfg, seed, dtype, calls)


def _check_strided_depthwise(cfg, seed, dtype, calls):
    rng = np.random.default_rng(seed)
    d, c = cfg["d"], cfg["c"]
    x = rng.standard_normal((2, c) + cfg["spatial"])
    w = rng.standard_normal((c, 1) + cfg["kernel"])
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
              groups=c)
    y = conv_reference(x, w, **kw)
    g = rng.standard_normal(y.shape)
    gx64 = numbaconv.conv_backward(g, x, w, **kw, bias=False)[0]
    assert calls and gx64.shape == x.shape
    assert np.vdot(y, g) == pytest.approx(np.vdot(x, gx64), rel=1e-9, abs=1e-9)
    for idx in [(0, 0) + (0,) * d, (1, c - 1) + tuple(s - 1 for s in cfg["spatial"]),
                (0, c // 2) + tuple(s // 2 for s in cfg["spatial"])]:
        e = np.zeros_like(x)
        e[idx] = 1.0
        assert gx64[idx] == pytest.approx(np.vdot(conv_reference(e, w, **kw), g),
                                          rel=1e-9, abs=1e-9)
    gx = numbaconv.conv_backward(g.astype(dtype), x.astype(dtype), w.astype(dtype), **kw,
                                 bias=False)[0]
    assert gx.dtype == dtype
    assert_close(gx.astype(np.float64), gx64, dtype)
    out_pad = _output_padding(cfg, y.shape[2:])
    if out_pad is not None:
        b = rng.standard_normal(c)
        xt = TRANSPOSE[d](g, w, b, kw["stride"], kw["padding"], out_pad, c, kw["dilation"])
        np.testing.assert_allclose(xt, gx64 + b.reshape((1, c) + (1,) * d), rtol=1e-10,
                                   atol=1e-10)


def test_strided_depthwise_input_grad_while_its_kernel_compiles(monkeypatch, rng):
    """A cold kernel: the spread convolution serves the call meanwhile, with the same
    result; a NaN in the output gradient reaches only the inputs it was computed
    from."""
    x = rng.standard_normal((2, 6, 21, 20)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    g = rng.standard_normal(numbaconv.output_shape(x.shape, w.shape, 2, 1)).astype(
        np.float32)
    warm = numbaconv.conv_backward(g, x, w, 2, 1, groups=6)[0]
    g[1, 4, 5, 3] = np.nan
    nan_warm = numbaconv.conv_backward(g, x, w, 2, 1, groups=6)[0]

    def not_ready(*args, **kwargs):
        raise KernelNotReady("depthwise_input_grad")

    monkeypatch.setattr(gradients, "_depthwise_input_grad", not_ready)
    nan_cold = numbaconv.conv_backward(g, x, w, 2, 1, groups=6)[0]
    np.testing.assert_array_equal(np.isnan(nan_warm), np.isnan(nan_cold))
    reach = np.zeros(x.shape, dtype=bool)
    reach[1, 4, 2 * 5 - 1: 2 * 5 + 2, 2 * 3 - 1: 2 * 3 + 2] = True  # its 3x3 window
    np.testing.assert_array_equal(np.isnan(nan_warm), reach)
    g[1, 4, 5, 3] = 0.0
    cold = numbaconv.conv_backward(g, x, w, 2, 1, groups=6)[0]
    monkeypatch.undo()
    again = numbaconv.conv_backward(g, x, w, 2, 1, groups=6)[0]
    assert_close(cold.astype(np.float64), again.astype(np.float64), np.float32)
    assert not np.allclose(warm, again)  # the gradient changed with g
