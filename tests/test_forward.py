"""Forward convolution against the float64 reference (and PyTorch where installed)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numbaconv
from numbaconv._registry import METHODS
from _reference import conv_reference, reference_pads
from conftest import assert_close, torch

FUNCS = {1: numbaconv.conv1d, 2: numbaconv.conv2d, 3: numbaconv.conv3d}
SPATIAL = {1: (13,), 2: (9, 7), 3: (6, 5, 7)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 1)}  # non-square on purpose
DTYPES = [np.float32, np.float64]


def make(rng, d, n=2, c_in=4, c_out=6, groups=1, dtype=np.float32, spatial=None,
         kernel=None):
    spatial = spatial or SPATIAL[d]
    kernel = kernel or KERNEL[d]
    x = rng.standard_normal((n, c_in, *spatial)).astype(dtype)
    w = rng.standard_normal((c_out, c_in // groups, *kernel)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    return x, w, b


def check(x, w, b=None, dtype=None, **kw):
    dtype = dtype or x.dtype
    y = numbaconv.conv(x, w, b, **kw)
    ref = conv_reference(x, w, b, **kw)
    assert y.dtype == dtype
    assert y.flags.c_contiguous
    assert_close(y, ref, dtype)
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("padding", [0, 1, "valid", "same", "tuple", "pairs"])
def test_padding_forms(rng, d, dtype, padding):
    if padding == "tuple":
        padding = tuple(range(1, d + 1))
    elif padding == "pairs":
        padding = tuple((i % 2, (i + 1) % 3 + 1) for i in range(d))
    x, w, b = make(rng, d, dtype=dtype)
    check(x, w, b, padding=padding)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_padding_modes(rng, d, mode):
    x, w, b = make(rng, d, dtype=np.float64)
    pads = tuple((1, 2) if i == 0 else (2, 0) for i in range(d))
    check(x, w, b, padding=pads, padding_mode=mode)
    check(x, w, b, padding="same", padding_mode=mode, stride=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("stride,dilation", [(2, 1), (1, 2), (3, 2), ("axes", "axes")])
def test_stride_dilation(rng, d, dtype, stride, dilation):
    if stride == "axes":
        stride = tuple((1, 2, 3)[:d])
        dilation = tuple((2, 1, 2)[:d])
    x, w, b = make(rng, d, dtype=dtype, spatial=tuple(s + 4 for s in SPATIAL[d]))
    check(x, w, b, stride=stride, dilation=dilation, padding=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("c_in,c_out,groups", [(4, 6, 2), (4, 4, 4), (3, 6, 3), (6, 9, 3)])
def test_groups_and_depthwise(rng, d, dtype, c_in, c_out, groups):
    x, w, b = make(rng, d, c_in=c_in, c_out=c_out, groups=groups, dtype=dtype)
    check(x, w, b, padding=1, groups=groups)
    check(x, w, None, padding=1, groups=groups, stride=2)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_depthwise_large_kernel_and_dilation(rng, d):
    spatial = {1: (40,), 2: (12, 11), 3: (7, 8, 9)}[d]
    kernel = {1: (33,), 2: (7, 5), 3: (5, 3, 3)}[d]  # beyond the channel-wise tap limit
    x, w, b = make(rng, d, c_in=3, c_out=6, groups=3, spatial=spatial, kernel=kernel)
    check(x, w, b, padding="same", groups=3)
    x, w, b = make(rng, d, c_in=3, c_out=3, groups=3, spatial=spatial, kernel=(3,) * d)
    check(x, w, b, padding=2, dilation=2, groups=3)


@pytest.mark.parametrize("c_out", [1, 3, 5, 7, 9])
def test_channel_and_column_remainders(rng, c_out):
    """Output channel counts and widths that are not multiples of the register block."""
    x, w, b = make(rng, 2, c_in=3, c_out=c_out, spatial=(5, 11), kernel=(2, 3))
    check(x, w, b, padding=(0, 1))


def test_long_1d_is_split_into_chunks(rng):
    x, w, b = make(rng, 1, n=1, c_in=8, c_out=8, spatial=(3001,), kernel=(2,))
    check(x, w, b, dilation=64)
    check(x, w, b, stride=3, padding=5)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_unbatched_and_empty_batch(rng, d):
    x, w, b = make(rng, d, n=1)
    y = check(x[0], w, b, padding=1)
    assert y.ndim == d + 1
    empty = numbaconv.conv(x[:0], w, b, padding=1)
    assert empty.shape == (0,) + y.shape and empty.dtype == np.float32


@pytest.mark.parametrize("layout", ["fortran", "negative", "strided", "noncontig_weight"])
def test_any_memory_layout(rng, layout):
    x, w, b = make(rng, 2, spatial=(10, 12))
    if layout == "fortran":
        x, w = np.asfortranarray(x), np.asfortranarray(w)
    elif layout == "negative":
        x, w = x[:, :, ::-1, ::-1], w[::-1]
    elif layout == "strided":
        x = x[:, :, ::2, 1::2]
    else:
        w = np.swapaxes(np.swapaxes(w, 2, 3).copy(), 2, 3)
    check(x, w, b, padding=1)


def test_inputs_are_not_modified(rng):
    x, w, b = make(rng, 2)
    copies = [a.copy() for a in (x, w, b)]
    for mode in ["zeros", "reflect"]:
        numbaconv.conv2d(x, w, b, padding=1, padding_mode=mode)
    numbaconv.conv2d(x[:, :1], w[:1, :1], None, groups=1)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("method", ["auto", "direct", "im2col"])
@pytest.mark.parametrize("groups,kernel", [(1, (3, 3)), (1, (3, 4)), (4, (3, 3)),
                                           (32, (3, 3))])
def test_nonfinite_stays_in_receptive_field(rng, groups, kernel, method):
    # 32 channels of 48x48: im2col takes its Winograd form for groups=1 with a 3x3
    # kernel, its shifted-GEMM form with a 3x4 one, and builds columns otherwise; direct
    # runs its dense and (groups=32) channel-wise kernels.
    x, w, b = make(rng, 2, n=1, c_in=32, c_out=32, groups=groups, spatial=(48, 48),
                   kernel=kernel)
    x[0, 1, 5, 6] = np.nan
    x[0, 2, 2, 9] = np.inf
    x[0, 31, 47, 0] = -np.inf
    x[0, 7, 46, 47] = np.inf  # in the last 2x2 tile
    y = numbaconv.conv2d(x, w, b, padding=1, groups=groups, method=method)
    bad = ~np.isfinite(x[0])
    # Output (o, i, j) sees input channels of its group at rows i-1..i-1+kh-1, cols
    # j-1..j-1+kw-1.
    field = np.zeros_like(y[0], dtype=bool)
    cg, og = 32 // groups, 32 // groups
    kh, kw = kernel
    for c, i, j in zip(*np.nonzero(bad)):
        g = c // cg
        field[g * og:(g + 1) * og, max(i + 2 - kh, 0):i + 2,
              max(j + 2 - kw, 0):j + 2] = True
    assert not np.isfinite(y[0][field]).any()
    assert np.isfinite(y[0][~field]).all()


@pytest.mark.parametrize("x_dtype,w_dtype,expected", [
    (np.float32, np.float32, np.float32),
    (np.float64, np.float32, np.float64),
    (np.float16, np.float16, np.float32),
    (np.float16, np.float32, np.float32),
    (np.int32, np.int32, np.float64),
    (np.uint8, np.float32, np.float32),
    (np.bool_, np.float64, np.float64),
    (">f4", ">f4", np.float32),
])
def test_dtype_promotion(rng, x_dtype, w_dtype, expected):
    x = (rng.standard_normal((1, 2, 6, 6)) * 3).astype(x_dtype)
    w = (rng.standard_normal((3, 2, 3, 3)) * 3).astype(w_dtype)
    y = numbaconv.conv2d(x, w)
    assert y.dtype == expected
    assert_close(y, conv_reference(x, w), expected)


def test_python_lists():
    y = numbaconv.conv1d([[1.0, 2.0, 3.0, 4.0]], [[[1.0, -1.0]]])
    np.testing.assert_allclose(y, [[-1.0, -1.0, -1.0]])


def test_seed_example():
    x = np.zeros((5, 5))
    x[2:] = 1
    k = np.array([[-1.0, -1, -1], [0, 0, 0], [1, 1, 1]])
    y = numbaconv.conv2d(x[None, None], k[None, None])[0, 0]
    np.testing.assert_array_equal(y, [[3, 3, 3], [3, 3, 3], [0, 0, 0]])


def test_counts_and_shapes():
    args = ((1, 3, 224, 224), (64, 3, 7, 7))
    assert numbaconv.count_params(args[1]) == 9472
    assert numbaconv.count_params(args[1], bias=False) == 9408
    assert numbaconv.count_macs(*args, stride=2, padding=3) == 118_013_952
    assert numbaconv.output_shape(*args, stride=2, padding=3) == (1, 64, 112, 112)
    assert numbaconv.output_shape((3, 10), (4, 3, 3), padding="same") == (4, 10)
    assert numbaconv.output_shape((1, 8, 10, 10), (8, 1, 3, 3), stride=3,
                                  padding="same") == (1, 8, 4, 4)
    assert numbaconv.count_macs((2, 8, 10), (4, 2, 3), groups=4) == 2 * 4 * 2 * 3 * 8


def test_same_padding_matches_output_size(rng):
    for size, k, s, dil in [(10, 3, 1, 1), (10, 4, 1, 1), (11, 3, 2, 1), (9, 5, 3, 2)]:
        x = rng.standard_normal((1, 2, size))
        w = rng.standard_normal((2, 2, k))
        y = numbaconv.conv1d(x, w, stride=s, dilation=dil, padding="same")
        assert y.shape[-1] == -(-size // s)
        assert_close(y, conv_reference(x, w, stride=s, dilation=dil, padding="same"),
                     np.float64)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_matches_pytorch(rng, d, mode):
    x, w, b = make(rng, d, c_in=4, c_out=6, groups=2)
    kw = dict(stride=2, padding=1, dilation=(1, 2, 1)[:d] if d > 1 else 1, groups=2)
    y = numbaconv.conv(x, w, b, padding_mode=mode, **kw)
    layer = getattr(torch.nn, f"Conv{d}d")(4, 6, KERNEL[d], padding_mode=mode, **kw)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        layer.bias.copy_(torch.from_numpy(b))
        ref = layer(torch.from_numpy(x)).numpy()
    assert_close(y, ref.astype(np.float64), np.float32)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
def test_same_padding_matches_pytorch(rng):
    x, w, b = make(rng, 2, spatial=(10, 9), kernel=(4, 3))
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                     torch.from_numpy(b), padding="same", dilation=2)
    assert_close(numbaconv.conv2d(x, w, b, padding="same", dilation=2),
                 ref.numpy().astype(np.float64), np.float32)


@st.composite
def configurations(draw):
    d = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(d))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(d))
    span = [dil * (k - 1) + 1 for k, dil in zip(kernel, dilation)]
    spatial = tuple(
        draw(st.integers(max(1, s - lo - hi, max(lo, hi) + 1), 9))
        for s, (lo, hi) in zip(span, pads)
    )
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    padding = draw(st.sampled_from([pads, "same", "valid"]))
    if padding == "valid" and any(s < sp for s, sp in zip(spatial, span)):
        padding = pads
    if padding == "same":
        same = reference_pads(spatial, kernel, stride, dilation, "same")
        if mode == "reflect" and any(max(p) >= s for p, s in zip(same, spatial)):
            mode = "zeros"
        if mode == "circular" and any(max(p) > s for p, s in zip(same, spatial)):
            mode = "zeros"
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(1, 2))
    return dict(d=d, groups=groups, c_in=c_in, c_out=c_out, kernel=kernel, stride=stride,
                dilation=dilation, padding=padding, spatial=spatial, mode=mode,
                dtype=dtype, n=n, bias=draw(st.booleans()))


@pytest.mark.parametrize("method", list(METHODS))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configurations(), seed=st.integers(0, 2**31))
def test_random_configurations(method, cfg, seed):
    rng = np.random.default_rng(seed)
    x, w, b = make(rng, cfg["d"], n=cfg["n"], c_in=cfg["c_in"], c_out=cfg["c_out"],
                   groups=cfg["groups"], dtype=cfg["dtype"], spatial=cfg["spatial"],
                   kernel=cfg["kernel"])
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
              groups=cfg["groups"], padding_mode=cfg["mode"])
    b = b if cfg["bias"] else None
    y = FUNCS[cfg["d"]](x, w, b, method=method, **kw)
    assert_close(y, conv_reference(x, w, b, **kw), cfg["dtype"])


def test_geometry_cache_does_not_skip_validation(rng):
    x, w, b = make(rng, 2)
    numbaconv.conv2d(x, w, b, stride=1, padding=1)  # cached: 1 == True == 1.0
    with pytest.raises(TypeError, match="stride=True must be an int"):
        numbaconv.conv2d(x, w, b, stride=True, padding=1)
    with pytest.raises(TypeError, match="padding=1.0 must be"):
        numbaconv.conv2d(x, w, b, stride=1, padding=1.0)
