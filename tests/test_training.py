"""Gradients, transposed convolution, layers and the digits example."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numbaconv
from _reference import conv_reference, reference_pads
from conftest import assert_close, torch

FUNCS = {1: numbaconv.conv1d, 2: numbaconv.conv2d, 3: numbaconv.conv3d}
TRANSPOSE = {1: numbaconv.conv_transpose1d, 2: numbaconv.conv_transpose2d,
             3: numbaconv.conv_transpose3d}
SPATIAL = {1: (9,), 2: (6, 7), 3: (4, 5, 4)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}

CONFIGS = [
    dict(),
    dict(stride=2, padding=1),
    dict(dilation=2, padding=((2, 1),) * 1),
    dict(groups=2, padding="same"),
    dict(groups=4, padding=1),  # depthwise
    dict(padding=2, padding_mode="reflect"),
    dict(padding=1, padding_mode="replicate", stride=2),
    dict(padding=((1, 2),), padding_mode="circular"),
]


def _kwargs(cfg, d):
    kw = dict(cfg)
    if isinstance(kw.get("padding"), tuple):
        kw["padding"] = kw["padding"] * d
    return kw


def _loss_and_grads(rng, d, cfg):
    kw = _kwargs(cfg, d)
    groups = kw.get("groups", 1)
    x = rng.standard_normal((2, 4) + SPATIAL[d])
    w = rng.standard_normal((4, 4 // groups) + KERNEL[d])
    b = rng.standard_normal(4)
    y = conv_reference(x, w, b, **kw)
    g = rng.standard_normal(y.shape)

    def loss(x_, w_, b_):
        return float(np.sum(conv_reference(x_, w_, b_, **kw) * g))
    return x, w, b, g, kw, loss


@pytest.mark.parametrize("cfg", CONFIGS, ids=[str(c) for c in CONFIGS])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_gradients_match_finite_differences(rng, d, cfg):
    x, w, b, g, kw, loss = _loss_and_grads(rng, d, cfg)
    gx, gw, gb = numbaconv.conv_backward(g, x, w, **kw)
    eps = 1e-6
    for name, arr, grad in (("x", x, gx), ("w", w, gw), ("b", b, gb)):
        assert grad.shape == arr.shape and grad.dtype == np.float64
        for idx in [tuple(rng.integers(0, s) for s in arr.shape) for _ in range(6)] + \
                [(0,) * arr.ndim, tuple(s - 1 for s in arr.shape)]:
            args = {"x": x, "w": w, "b": b}
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += eps
            minus[idx] -= eps
            fd = (loss(**{**{k + "_": v for k, v in args.items()}, name + "_": plus})
                  - loss(**{**{k + "_": v for k, v in args.items()}, name + "_": minus}))
            fd /= 2 * eps
            assert grad[idx] == pytest.approx(fd, rel=1e-6, abs=1e-6), (name, idx)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[str(c) for c in CONFIGS])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_gradients_match_pytorch_autograd(rng, d, cfg, dtype):
    kw = _kwargs(cfg, d)
    groups = kw.get("groups", 1)
    x = rng.standard_normal((2, 4) + SPATIAL[d]).astype(dtype)
    w = rng.standard_normal((4, 4 // groups) + KERNEL[d]).astype(dtype)
    stride, dilation = kw.get("stride", 1), kw.get("dilation", 1)
    pads = reference_pads(x.shape[2:], w.shape[2:], (stride,) * d, (dilation,) * d,
                          kw.get("padding", 0))
    flat = [p for pair in reversed(pads) for p in pair]
    mode = {"zeros": "constant"}.get(kw.get("padding_mode", "zeros"),
                                     kw.get("padding_mode"))
    tx = torch.from_numpy(x).requires_grad_(True)
    tw = torch.from_numpy(w).requires_grad_(True)
    tb = torch.zeros(4, dtype=tw.dtype, requires_grad=True)
    ty = getattr(torch.nn.functional, f"conv{d}d")(
        torch.nn.functional.pad(tx, flat, mode=mode), tw, tb, stride=stride,
        dilation=dilation, groups=groups)
    g = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.from_numpy(g))
    gx, gw, gb = numbaconv.conv_backward(g, x, w, **kw)
    assert gx.dtype == dtype
    assert_close(gx, tx.grad.numpy().astype(np.float64), dtype)
    assert_close(gw, tw.grad.numpy().astype(np.float64), dtype)
    assert_close(gb, tb.grad.numpy().astype(np.float64), dtype)


@st.composite
def transpose_configs(draw):
    d = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(d))
    padding = tuple(draw(st.integers(0, 1)) for _ in range(d))
    spatial = tuple(draw(st.integers(max(1, (k - 1) * dl + 1 - 2 * p), 6))
                    for k, dl, p in zip(kernel, dilation, padding))
    return dict(d=d, groups=groups, c_in=c_in, c_out=c_out, kernel=kernel, stride=stride,
                dilation=dilation, padding=padding, spatial=spatial)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=transpose_configs(), seed=st.integers(0, 2**31))
def test_adjoint_identity(cfg, seed):
    """<conv(x), g> == <x, conv_transpose(g)>, for random strides, dilations, groups."""
    rng = np.random.default_rng(seed)
    d = cfg["d"]
    x = rng.standard_normal((2, cfg["c_in"]) + cfg["spatial"])
    w = rng.standard_normal((cfg["c_out"], cfg["c_in"] // cfg["groups"]) + cfg["kernel"])
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
              groups=cfg["groups"])
    y = FUNCS[d](x, w, **kw)
    g = rng.standard_normal(y.shape)
    # The transposed convolution's output_padding recovers the input size exactly.
    out_pad = tuple(
        s - ((o - 1) * st_ - 2 * p + dl * (k - 1) + 1) for s, o, st_, p, dl, k in
        zip(cfg["spatial"], y.shape[2:], cfg["stride"], cfg["padding"], cfg["dilation"],
            cfg["kernel"]))
    if any(op >= max(s, dl) for op, s, dl in zip(out_pad, cfg["stride"], cfg["dilation"])):
        out_pad = None
    if out_pad is not None:
        xt = TRANSPOSE[d](g, w, None, kw["stride"], kw["padding"], out_pad, kw["groups"],
                          kw["dilation"])
        assert xt.shape == x.shape
        assert np.vdot(y, g) == pytest.approx(np.vdot(x, xt), rel=1e-9, abs=1e-9)
    gx = numbaconv.conv_backward(g, x, w, **kw)[0]
    assert np.vdot(y, g) == pytest.approx(np.vdot(x, gx), rel=1e-9, abs=1e-9)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("method", ["auto", "direct", "im2col", "fft"])
@pytest.mark.parametrize("d,kw", [
    (1, dict(stride=2, padding=1, output_padding=1)),
    (2, dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2)),
    (2, dict(dilation=2, output_padding=1)),
    (3, dict(stride=2, padding=1, groups=2)),
    # 2 output channels per group: the spread convolution, padding past the kernel's
    # reach (the bias after cropping)
    (2, dict(stride=2, padding=(3, 2), groups=2, output_padding=1)),
])
def test_conv_transpose_matches_pytorch(rng, d, kw, method):
    groups = kw.get("groups", 1)
    x = rng.standard_normal((2, 4) + SPATIAL[d]).astype(np.float32)
    w = rng.standard_normal((4, 6 // groups) + KERNEL[d]).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y = TRANSPOSE[d](x, w, b, **kw, method=method)
    ref = getattr(torch.nn.functional, f"conv_transpose{d}d")(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **kw).numpy()
    assert y.dtype == np.float32
    assert_close(y, ref.astype(np.float64), np.float32)
    y1 = TRANSPOSE[d](x[0], w, b, **kw, method=method)  # unbatched
    assert_close(y1, ref[0].astype(np.float64), np.float32)


@pytest.mark.parametrize("call,error,match", [
    (lambda x, w: numbaconv.conv_transpose2d(x, w, stride=2, output_padding=2),
     ValueError, r"output_padding=\(2, 2\) must be smaller than stride=\(2, 2\) or "
                 r"dilation=\(1, 1\)"),
    (lambda x, w: numbaconv.conv_transpose2d(x, w[:3]), ValueError,
     r"input has 4 channels but weight of shape \(3, 3, 3, 2\) expects 3"),
    (lambda x, w: numbaconv.conv_transpose2d(x, w, groups=3), ValueError,
     r"groups=3 must be >= 1 and divide in_channels=4"),
    (lambda x, w: numbaconv.conv_transpose2d(x, w, padding="same"), ValueError,
     r"padding='same': a transposed convolution takes"),
    (lambda x, w: numbaconv.conv_transpose2d(x, w, padding=5), ValueError,
     r"every size must be >= 1"),
    (lambda x, w: numbaconv.conv_transpose1d(x, w), ValueError, r"needs ndim 3"),
    (lambda x, w: numbaconv.conv_backward(np.zeros((2, 4, 4, 6)), x, np.zeros((4, 4, 3, 2))), ValueError,
     r"grad_out has shape \(2, 4, 4, 6\); expected \(2, 4, 4, 5\)"),
    (lambda x, w: numbaconv.conv_backward(np.zeros((2, 4, 4, 5)), x, np.zeros((4, 4, 3, 2)), bias=None),
     TypeError, r"bias=None must be True or False"),
    (lambda x, w: numbaconv.conv_backward(np.zeros((2, 4, 4, 5), complex), x, np.zeros((4, 4, 3, 2))),
     TypeError, r"grad_out has dtype complex128"),
])
def test_errors(rng, call, error, match):
    x = rng.standard_normal((2, 4, 6, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    with pytest.raises(error, match=match):
        call(x, w)


@pytest.mark.parametrize("cls,d,transposed", [
    (numbaconv.Conv1d, 1, False), (numbaconv.Conv2d, 2, False), (numbaconv.Conv3d, 3, False),
    (numbaconv.ConvTranspose1d, 1, True), (numbaconv.ConvTranspose2d, 2, True),
    (numbaconv.ConvTranspose3d, 3, True)])
def test_layers(rng, cls, d, transposed):
    layer = cls(4, 6, 3, stride=2, padding=1, groups=2, rng=7)
    again = cls(4, 6, 3, stride=2, padding=1, groups=2, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(layer.weight, again.weight)
    np.testing.assert_array_equal(layer.bias, again.bias)
    assert layer.weight.dtype == np.float32
    fan_in = (6 if transposed else 4) // 2 * 3 ** d
    bound = 1 / np.sqrt(fan_in)
    assert np.abs(layer.weight).max() <= bound and np.abs(layer.bias).max() <= bound
    assert np.abs(layer.weight).max() > 0.8 * bound  # uses the range, not a corner of it
    assert layer.weight.shape == ((4, 3) if transposed else (6, 2)) + (3,) * d
    assert layer.num_params == layer.weight.size + 6
    x = rng.standard_normal((2, 4) + (5,) * d).astype(np.float32)
    with pytest.raises(RuntimeError, match="backward\\(\\) called before forward"):
        layer.backward(np.zeros((2, 6) + (5,) * d))
    y = layer(x)
    assert y.shape == layer.output_shape(x.shape)
    if transposed:
        ref = TRANSPOSE[d](x, layer.weight, layer.bias, 2, 1, 0, 2)
    else:
        ref = FUNCS[d](x, layer.weight, layer.bias, 2, 1, 1, 2)
    np.testing.assert_array_equal(y, ref)
    assert layer.macs(x.shape) > 0
    with pytest.raises(ValueError, match="grad_out has shape"):
        layer.backward(np.zeros((1,) + y.shape[1:]))
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = layer.backward(g)
    assert gx.shape == x.shape and gx.dtype == np.float32
    assert layer.grad_weight.shape == layer.weight.shape
    np.testing.assert_allclose(layer.grad_bias, g.sum(axis=(0,) + tuple(range(2, 2 + d))),
                               rtol=1e-5)
    # adjoint check of the layer's own backward
    assert np.vdot(y - layer.bias.reshape((1, 6) + (1,) * d), g) == pytest.approx(
        np.vdot(x, gx), rel=1e-4)


def test_layer_float64_and_arguments():
    layer = numbaconv.Conv2d(3, 4, (3, 1), padding="same", padding_mode="reflect",
                             bias=False, dtype=np.float64, rng=0)
    assert layer.weight.dtype == np.float64 and layer.bias is None
    assert layer.num_params == 4 * 3 * 3
    with pytest.raises(TypeError, match="dtype=.*float16.* must be float32 or float64"):
        numbaconv.Conv2d(3, 4, 3, dtype=np.float16)
    with pytest.raises(ValueError, match="groups=2 must divide in_channels=3"):
        numbaconv.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode='mirror'"):
        numbaconv.Conv2d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="stride=0 must be >= 1"):
        numbaconv.Conv2d(3, 4, 3, stride=0)
    with pytest.raises(ValueError, match="output_padding"):
        numbaconv.ConvTranspose2d(3, 4, 3, stride=2, output_padding=2)
    with pytest.raises(TypeError, match="rng='x'"):
        numbaconv.Conv2d(3, 4, 3, rng="x")


def test_digits_example_loss_falls():
    pytest.importorskip("sklearn")
    path = Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"
    spec = importlib.util.spec_from_file_location("train_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    losses, accuracy, _ = module.train(epochs=2, progress=False)
    assert losses[1] < losses[0] < np.log(10)
    assert accuracy > 0.5


@pytest.mark.parametrize("cls, kwargs", [
    (numbaconv.Conv2d, dict(stride=[2, 1], padding=[1, 2], dilation=[1, 2])),
    (numbaconv.ConvTranspose2d, dict(stride=[2, 1], padding=[1, 0], output_padding=[1, 0],
                                     dilation=[1, 2])),
])
def test_layers_take_lists_and_normalise_them_once(cls, kwargs, rng):
    """List arguments work as tuples do, forward and backward, and are kept as tuples."""
    as_tuples = {k: tuple(v) for k, v in kwargs.items()}
    a = cls(4, 6, [3, 2], **kwargs, rng=0)
    b = cls(4, 6, (3, 2), **as_tuples, rng=0)
    assert a.stride == (2, 1) and a.kernel_size == (3, 2) and a.dilation == (1, 2)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    y = a(x)
    np.testing.assert_array_equal(y, b(x))
    g = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(a.backward(g), b.backward(g))
    np.testing.assert_array_equal(a.grad_weight, b.grad_weight)


def test_layer_classes_are_classes_of_this_module():
    for cls in (numbaconv.Conv1d, numbaconv.Conv2d, numbaconv.Conv3d,
                numbaconv.ConvTranspose1d, numbaconv.ConvTranspose2d,
                numbaconv.ConvTranspose3d):
        assert cls.__module__ == "numbaconv.layers" and cls.__doc__.strip()
        assert cls.__qualname__ == cls.__name__


def _weight_grad_reference(g, x, kernel, stride, padding, groups):
    """float64 weight gradient of a 2D convolution: per tap, the output gradient
    against the padded input it multiplied."""
    n, c_in, h, w = x.shape
    c_out = g.shape[1]
    cig, cog = c_in // groups, c_out // groups
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = g.shape[2:]
    gw = np.zeros((c_out, cig) + kernel)
    for kh in range(kernel[0]):
        for kw in range(kernel[1]):
            window = xp[:, :, kh: kh + stride * oh: stride, kw: kw + stride * ow: stride]
            for grp in range(groups):
                gw[grp * cog:(grp + 1) * cog, :, kh, kw] = np.einsum(
                    "nohw,nchw->oc", g[:, grp * cog:(grp + 1) * cog],
                    window[:, grp * cig:(grp + 1) * cig])
    return gw


@pytest.mark.parametrize("n,groups,c,size,stride", [
    (1, 1, 64, 6, 1), (3, 1, 64, 5, 1), (2, 2, 64, 4, 2), (1, 1, 48, 3, 1)])
def test_weight_grad_with_owned_channel_blocks(rng, n, groups, c, size, stride):
    """Few positions, many channels: each thread owns a block of output channels of the
    weight gradient (no partial sums), and the first task of each block overwrites it."""
    from numbaconv import _im2col

    x = rng.standard_normal((n, c, size * stride, size * stride)).astype(np.float32)
    w = rng.standard_normal((c, c // groups, 3, 3)).astype(np.float32)
    g = rng.standard_normal(numbaconv.output_shape(x.shape, w.shape, stride, 1)).astype(
        np.float32)
    positions = g.shape[2] * g.shape[3]
    assert _im2col.owns_channel_blocks(n, groups, c // groups, positions, 2)
    for _ in range(2):  # the second call reuses the workspace: nothing stale may stay
        _, gw, _ = numbaconv.conv_backward(g, x, w, stride, 1, groups=groups, bias=False,
                                           input_grad=False)
        assert_close(gw, _weight_grad_reference(g, x, (3, 3), stride, 1, groups),
                     np.float32)


@pytest.mark.parametrize("shape,groups", [((8, 6, 3, 3), 1), ((12, 2, 3, 1), 3),
                                          ((6, 1, 2, 3, 4), 3), ((4, 4, 5), 1)])
@pytest.mark.parametrize("ready", [True, False])
def test_flipped_weight(monkeypatch, rng, shape, groups, ready):
    """The stride-1 input gradient's kernel: flipped in space, channels swapped per
    group; the same from NumPy while the kernel compiles."""
    from numbaconv import gradients
    from numbaconv._compile import KernelNotReady

    if not ready:
        def not_ready(*args):
            raise KernelNotReady("flipped_weight")
        monkeypatch.setattr(gradients, "flip_taps", not_ready)
    w = rng.standard_normal(shape)
    d = len(shape) - 2
    cog = shape[0] // groups
    expected = w.reshape((groups, cog, shape[1]) + shape[2:]).swapaxes(1, 2)[
        (Ellipsis,) + (slice(None, None, -1),) * d].reshape((groups * shape[1], cog)
                                                           + shape[2:])
    np.testing.assert_array_equal(gradients.flipped_weight(w, groups), expected)


@pytest.mark.parametrize("groups,cig,cog,n", [(4, 2, 8, 1), (1, 1, 6, 2), (3, 1, 5, 1),
                                              (8, 1, 1, 2)])
def test_channelwise_weight_grad_in_channel_blocks(rng, groups, cig, cog, n):
    """The channel-wise weight gradient's jobs: a group's output channels in blocks
    (an empty last block included: 6 channels in 4 blocks of 2), every block copying
    its group's planes once."""
    from numbaconv import gradients

    x = rng.standard_normal((n, groups * cig, 9, 11)).astype(np.float32)
    w = rng.standard_normal((groups * cog, cig, 3, 3)).astype(np.float32)
    g = rng.standard_normal(numbaconv.output_shape(x.shape, w.shape, 1, 1)).astype(
        np.float32)
    blocks = gradients.channel_blocks(groups, cog, 2)
    assert 1 <= blocks <= cog
    _, gw, _ = numbaconv.conv_backward(g, x, w, 1, 1, groups=groups, bias=False,
                                       input_grad=False)
    assert_close(gw, _weight_grad_reference(g, x, (3, 3), 1, 1, groups), np.float32)
