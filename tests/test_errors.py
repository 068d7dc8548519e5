"""Every invalid argument raises ValueError/TypeError naming it, before any work."""

import numpy as np
import pytest

import numbaconv
from numbaconv import _direct, _registry

X = np.zeros((1, 4, 8, 8), np.float32)
W = np.zeros((6, 4, 3, 3), np.float32)


@pytest.fixture(autouse=True)
def no_kernel_may_run(monkeypatch):
    """A bad argument must be rejected before any kernel is called."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a kernel ran for invalid input")
    monkeypatch.setattr(_direct, "dense_conv", forbidden)
    monkeypatch.setattr(_direct, "channelwise_conv", forbidden)
    for name in _registry.METHODS:
        monkeypatch.setitem(_registry.METHODS, name, forbidden)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(x=np.zeros((4, 8))), ValueError, r"input has shape \(4, 8\) \(ndim 2\)"),
    (dict(x=np.zeros((1, 1, 4, 8, 8))), ValueError, r"needs ndim 4 .* or 3"),
    (dict(x=np.zeros((1, 3, 8, 8))), ValueError, r"input has 3 channels but weight"),
    (dict(weight=np.zeros((6, 4, 3))), ValueError, r"2D convolution needs ndim 4"),
    (dict(groups=3), ValueError,
     r"groups=3 must divide in_channels=4 and out_channels=6"),
    (dict(groups=0), ValueError, r"groups=0 must be >= 1"),
    (dict(groups=1.5), TypeError, r"groups=1.5 must be an int"),
    (dict(stride=0), ValueError, r"stride=0 must be >= 1"),
    (dict(stride=(1, 0)), ValueError, r"stride=\(1, 0\) must be >= 1"),
    (dict(stride=(1, 2, 3)), ValueError, r"stride=\(1, 2, 3\) must be an int or a tuple of 2"),
    (dict(stride=1.0), TypeError, r"stride=1.0 must be an int"),
    (dict(dilation=-1), ValueError, r"dilation=-1 must be >= 1"),
    (dict(padding=-1), ValueError, r"padding=-1 must not be negative"),
    (dict(padding=((1, -2), (0, 0))), ValueError, r"padding=.* must not be negative"),
    (dict(padding=1.5), TypeError, r"padding=1.5 must be an int >= 0"),
    (dict(padding=(1, 2, 3)), ValueError, r"padding=\(1, 2, 3\) must be"),
    (dict(padding=((1, 2, 3), (0, 0))), ValueError, r"padding=.* must be"),
    (dict(padding="full"), ValueError, r"padding='full' is not a padding string"),
    (dict(padding_mode="mirror", padding=1), ValueError,
     r"padding_mode='mirror' is not one of 'zeros', 'reflect'"),
    (dict(padding_mode="reflect", padding=8), ValueError,
     r"padding_mode='reflect' needs each pad < the input size.*size 8 and padding \(8, 8\)"),
    (dict(padding_mode="circular", padding=9), ValueError,
     r"padding_mode='circular' needs each pad <= the input size"),
    (dict(method="winograd"), ValueError,
     r"method='winograd' is not one of 'auto', 'direct', 'im2col', 'fft'"),
    (dict(method=None), ValueError, r"method=None is not one of"),
    (dict(weight=np.zeros((6, 4, 9, 3))), ValueError,
     r"kernel size 9 with dilation 1 \(span 9\) is larger than the padded input "
     r"\(8 \+ 0 \+ 0 = 8\) on spatial axis 0"),
    (dict(dilation=5), ValueError, r"kernel size 3 with dilation 5 \(span 11\)"),
    (dict(weight=np.zeros((6, 4, 0, 3))), ValueError, r"every size must be >= 1"),
    (dict(bias=np.zeros(5)), ValueError, r"bias has shape \(5,\); expected \(6,\)"),
    (dict(bias=np.zeros((6, 1))), ValueError, r"bias has shape \(6, 1\)"),
    (dict(x=X.astype(np.complex64)), TypeError, r"input has dtype complex64"),
    (dict(weight=W.astype(object)), TypeError, r"weight has dtype object"),
    (dict(bias=np.array(["a"] * 6)), TypeError, r"bias has dtype <U1"),
    (dict(x="abc"), TypeError, r"input has dtype <U3"),
    (dict(x=None), TypeError, r"input must be an array, not None"),
    (dict(x=[[1, 2], [3]]), TypeError, r"input could not be converted"),
])
def test_conv2d_errors(kwargs, error, match):
    args = dict(x=X, weight=W, bias=None)
    args.update(kwargs)
    x, w, b = args.pop("x"), args.pop("weight"), args.pop("bias")
    with pytest.raises(error, match=match):
        numbaconv.conv2d(x, w, b, **args)


def test_conv_rejects_weight_without_spatial_axes():
    with pytest.raises(ValueError, match=r"weight has shape \(6, 4\) \(ndim 2\); expected"):
        numbaconv.conv(X, np.zeros((6, 4)))
    with pytest.raises(ValueError, match=r"ndim 6"):
        numbaconv.conv(X, np.zeros((6, 4, 1, 1, 1, 1)))


def test_conv1d_and_conv3d_check_dimensionality():
    with pytest.raises(ValueError, match=r"1D convolution needs ndim 3"):
        numbaconv.conv1d(X, W)
    with pytest.raises(ValueError, match=r"3D convolution needs ndim 5"):
        numbaconv.conv3d(X, W)


def test_long_double_rejected():
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("longdouble is float64 here")
    with pytest.raises(TypeError, match="widest supported is float64"):
        numbaconv.conv2d(X.astype(np.longdouble), W)


def test_shape_function_errors():
    with pytest.raises(ValueError, match=r"groups=3 must divide"):
        numbaconv.count_macs((1, 4, 8, 8), (6, 1, 3, 3), groups=3)
    with pytest.raises(ValueError, match=r"input has shape \(4,\)"):
        numbaconv.output_shape((4,), (6, 4, 3, 3))
    with pytest.raises(ValueError, match=r"input has 5 channels"):
        numbaconv.output_shape((1, 5, 8, 8), (6, 4, 3, 3))
    with pytest.raises(TypeError, match=r"input shape='a' must be a tuple of ints"):
        numbaconv.output_shape("a", (6, 4, 3, 3))
    # An array where its shape belongs: named by its shape, not printed whole.
    with pytest.raises(TypeError, match=r"input shape must be a tuple of ints, not an "
                                        r"array of shape \(1, 4, 8, 8\) \(pass its .shape\)$"):
        numbaconv.explain(np.zeros((1, 4, 8, 8)), (6, 4, 3, 3))
    with pytest.raises(ValueError, match=r"input shape=\(1, -4, 8, 8\) must not"):
        numbaconv.output_shape((1, -4, 8, 8), (6, 4, 3, 3))
    with pytest.raises(ValueError, match=r"weight_shape=\(6, 4\) must be"):
        numbaconv.count_params((6, 4))
    with pytest.raises(TypeError, match=r"weight_shape=None must be a tuple"):
        numbaconv.count_params(None)
    with pytest.raises(TypeError, match=r"bias='yes' must be True or False"):
        numbaconv.count_params((6, 4, 3), bias="yes")


@pytest.mark.parametrize("padding", [[1, "a"], [[1, 2], [0, "b"]], {"a": 1}])
def test_layer_padding_errors_name_padding(padding):
    with pytest.raises((ValueError, TypeError), match="padding="):
        numbaconv.Conv2d(4, 6, 3, padding=padding)
