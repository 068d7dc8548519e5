"""numbaconv.signal against scipy.signal: values, shapes, dtypes, errors (SPEC.md,
"SciPy-style signal functions")."""

import doctest
import warnings

import numpy as np
import pytest
import scipy.signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numbaconv
import numbaconv.signal as ns
from conftest import assert_close

FUNCS = ("correlate", "convolve")
MODES = ("full", "same", "valid")
METHODS = ("auto", "direct", "im2col", "fft")


def scipy_reference(func, a, b, mode, axes=None):
    """SciPy's float64 result; with ``axes``, fftconvolve (in2 reversed along the axes
    for correlate), as numbaconv.signal documents."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if axes is None:
        return getattr(scipy.signal, func)(a, b, mode)
    if func == "correlate":
        axes_list = [ax % a.ndim for ax in np.atleast_1d(axes)]
        b = b[tuple(slice(None, None, -1) if i in axes_list else slice(None)
                    for i in range(b.ndim))]
    return scipy.signal.fftconvolve(a, b, mode, axes=axes)


def check_against_scipy(func, a, b, mode, method="auto", axes=None):
    """Ours raises ValueError exactly where SciPy does; otherwise same shape, dtype (that
    of SciPy's call on the same inputs) and values within SPEC.md's tolerance."""
    try:
        ref = scipy_reference(func, a, b, mode, axes)
    except ValueError:
        with pytest.raises(ValueError):
            getattr(ns, func)(a, b, mode, method, axes)
        return None
    y = getattr(ns, func)(a, b, mode, method, axes)
    if axes is None:
        assert y.dtype == getattr(scipy.signal, func)(a, b, mode).dtype
    assert y.flags.c_contiguous
    assert_close(y, ref, np.result_type(a, b))
    return y


@st.composite
def signal_pairs(draw):
    """1-3 dimensional pairs, odd and even sizes, either input the larger."""
    d = draw(st.integers(1, 3))
    top = {1: 40, 2: 12, 3: 7}[d]
    big = tuple(draw(st.integers(1, top)) for _ in range(d))
    small = tuple(draw(st.integers(1, s)) for s in big)
    if draw(st.booleans()):  # sometimes not nested: "valid" then raises, as SciPy
        small = tuple(draw(st.integers(1, top)) for _ in range(d))
    shapes = (big, small) if draw(st.booleans()) else (small, big)
    return shapes, draw(st.sampled_from(FUNCS)), draw(st.sampled_from(MODES)), \
        draw(st.sampled_from(METHODS)), draw(st.sampled_from([np.float32, np.float64]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=signal_pairs(), seed=st.integers(0, 2**31))
def test_random_shapes_match_scipy(cfg, seed):
    (s1, s2), func, mode, method, dtype = cfg
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(s1).astype(dtype)
    b = rng.standard_normal(s2).astype(dtype)
    check_against_scipy(func, a, b, mode, method)


@st.composite
def batched_pairs(draw):
    """Inputs of 1-4 dimensions, 1-3 of them named in ``axes`` (as ints, negative or
    not); the other axes equal or 1 in one input."""
    ndim = draw(st.integers(1, 4))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=min(3, ndim),
                         unique=True))
    s1, s2 = [], []
    for i in range(ndim):
        if i in axes:
            s1.append(draw(st.integers(1, 8)))
            s2.append(draw(st.integers(1, 8)))
        else:
            n = draw(st.integers(1, 4))
            kind = draw(st.sampled_from(["equal", "in1 is 1", "in2 is 1"]))
            s1.append(1 if kind == "in1 is 1" else n)
            s2.append(1 if kind == "in2 is 1" else n)
    spelled = [a - ndim if draw(st.booleans()) else a for a in axes]
    if len(spelled) == 1 and draw(st.booleans()):
        spelled = spelled[0]
    return (tuple(s1), tuple(s2)), spelled, draw(st.sampled_from(FUNCS)), \
        draw(st.sampled_from(MODES)), draw(st.sampled_from([np.float32, np.float64]))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=batched_pairs(), seed=st.integers(0, 2**31))
def test_axes_match_fftconvolve(cfg, seed):
    (s1, s2), axes, func, mode, dtype = cfg
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(s1).astype(dtype)
    b = rng.standard_normal(s2).astype(dtype)
    check_against_scipy(func, a, b, mode, axes=axes)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_method(method, mode, func, dtype, rng):
    for s1, s2 in [((50,), (8,)), ((8,), (50,)), ((11, 10), (4, 3)), ((4, 3), (11, 10)),
                   ((7, 6, 5), (2, 3, 4))]:
        a = rng.standard_normal(s1).astype(dtype)
        b = rng.standard_normal(s2).astype(dtype)
        check_against_scipy(func, a, b, mode, method)


@pytest.mark.parametrize("method", METHODS)
def test_method_reaches_numbaconv(method, monkeypatch):
    """The named path is the one numbaconv.conv is asked for, every call."""
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs["method"])
        return numbaconv.conv(*args, **kwargs)

    monkeypatch.setattr(ns, "conv", spy)
    ns.correlate(np.ones((9, 9)), np.ones((3, 3)), "same", method)
    ns.convolve(np.ones((2, 9)), np.ones((2, 4)), "valid", method, axes=1)
    assert seen == [method, method]


def test_batched_forms(rng):
    """One kernel for many signals, many kernels for one signal, and pairs (depthwise),
    against fftconvolve."""
    x = rng.standard_normal((3, 4, 30))
    for a, b in [(x, rng.standard_normal((1, 1, 5))), (x[:1, :1], rng.standard_normal((3, 4, 5))),
                 (x, rng.standard_normal((3, 4, 5))), (x[:, :1], rng.standard_normal((1, 4, 5)))]:
        for mode in MODES:
            for func in FUNCS:
                check_against_scipy(func, a, b, mode, axes=-1)


def test_more_than_three_axes_of_length_one(rng):
    """Axes of length 1 in either input are broadcast products: a 5-d input with three
    real convolution axes works, without axes= too."""
    a = rng.standard_normal((1, 6, 5, 1, 4))
    b = rng.standard_normal((3, 2, 3, 1, 2))
    for mode in ("full", "same"):
        check_against_scipy("correlate", a, b, mode)
        check_against_scipy("convolve", a, b, mode)


def test_product_only(rng):
    """No axis longer than 1 in both inputs: a broadcast product."""
    a, b = rng.standard_normal((1, 5)), rng.standard_normal((4, 1))
    for mode in MODES:
        check_against_scipy("convolve", a, b, mode)
        check_against_scipy("correlate", a, b, mode, axes=1)


DTYPE_PAIRS = [
    (np.bool_, np.bool_), (np.int8, np.int8), (np.uint8, np.uint8), (np.int16, np.int64),
    (np.int64, np.int64), (np.uint16, np.int8), (np.bool_, np.int32),
    (np.int16, np.float32), (np.int64, np.float32), (np.int8, np.float16),
    (np.float16, np.float16), (np.float16, np.float32), (np.float32, np.float64),
    (np.bool_, np.float64),
]


@pytest.mark.parametrize("d1, d2", DTYPE_PAIRS)
@pytest.mark.parametrize("shapes", [((13,), (4,)), ((4,), (13,)), ((6, 7), (3, 2))])
@pytest.mark.parametrize("func", FUNCS)
def test_dtypes_as_scipy(d1, d2, shapes, func, rng):
    a = rng.integers(0, 4, shapes[0]).astype(d1)
    b = rng.integers(0, 4, shapes[1]).astype(d2)
    for mode in ("full", "same"):
        y = getattr(ns, func)(a, b, mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = getattr(scipy.signal, func)(a, b, mode, method="fft")
        assert y.dtype == ref.dtype == np.result_type(d1, d2)
        exact = getattr(scipy.signal, func)(a.astype(np.float64), b.astype(np.float64), mode)
        if y.dtype.kind in "biu":  # exact: bool as "any product", integers rounded
            exact = np.rint(exact)
            assert np.array_equal(y, exact != 0 if y.dtype == np.bool_ else exact)
        else:
            tol = 2e-3 if y.dtype == np.float16 else 1e-5
            assert np.max(np.abs(y - exact)) <= tol * max(1.0, np.max(np.abs(exact)))


@pytest.mark.parametrize("method", METHODS)
def test_integers_exact_on_every_path(method, rng):
    """Integer results are rounded, not truncated: exact even from the FFT path."""
    a = rng.integers(-50, 50, (300,))
    b = rng.integers(-50, 50, (41,))
    for func in FUNCS:
        for mode in MODES:
            assert np.array_equal(getattr(ns, func)(a, b, mode, method),
                                  getattr(scipy.signal, func)(a, b, mode, method="direct"))


def test_integer_overflow_wraps_as_scipy_direct():
    for dtype in (np.int8, np.uint8, np.int16):
        a = np.full(9, 100, dtype)
        b = np.full(4, 120, dtype)
        for mode in MODES:
            assert np.array_equal(ns.correlate(a, b, mode),
                                  scipy.signal.correlate(a, b, mode, method="direct"))
            assert np.array_equal(ns.convolve(a, b, mode),
                                  scipy.signal.convolve(a, b, mode, method="direct"))


def test_lists_and_scalars():
    assert np.array_equal(ns.correlate([1, 2, 3], [0, 1, 2]),
                          scipy.signal.correlate([1, 2, 3], [0, 1, 2]))
    for x, w in [(np.array(2.0), np.array(3.0)), (np.array(2), np.array(3)),
                 (np.array(True), np.array(True)), (np.float16(2), np.float32(3))]:
        for func in FUNCS:
            y, ref = getattr(ns, func)(x, w), getattr(scipy.signal, func)(x, w)
            assert type(y) is type(ref) and y == ref


EMPTY_CASES = [((0,), (3,)), ((3,), (0,)), ((0,), (0,)), ((0, 3), (2, 2)), ((2, 2), (0, 3)),
               ((0, 3), (0, 2)), ((3, 0), (2, 0)), ((4, 3), (2, 0)), ((2, 3, 0), (1, 1, 1)),
               ((0, 1), (1, 1)), ((2, 0), (1, 3)), ((0, 4, 4), (1, 2, 2))]


@pytest.mark.parametrize("s1, s2", EMPTY_CASES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("func", FUNCS)
def test_empty_inputs_as_scipy(s1, s2, mode, func):
    """SciPy's result where it gives one (an empty array, or zeros in N-d "valid"
    mode); a ValueError where it raises."""
    a, b = np.ones(s1, np.float32), np.ones(s2, np.float32)
    try:
        with warnings.catch_warnings():  # SciPy's cost model takes log(0)
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = getattr(scipy.signal, func)(a, b, mode)
    except (ValueError, IndexError):
        with pytest.raises(ValueError, match="is empty|mode='valid' needs"):
            getattr(ns, func)(a, b, mode)
        return
    y = getattr(ns, func)(a, b, mode)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert np.array_equal(y, ref)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(mode="foo"), ValueError, r"mode='foo' must be one of 'full', 'valid', 'same'"),
    (dict(mode=1), ValueError, r"mode=1"),
    (dict(method="bar"), ValueError, r"method='bar' must be one of 'auto', 'direct'"),
    (dict(method=None), ValueError, r"method=None"),
    (dict(axes=[]), ValueError, r"axes=\[\]: when provided, axes cannot be empty"),
    (dict(axes=[1, 1]), ValueError, r"axes=\[1, 1\]: all axes must be unique"),
    (dict(axes=[1, -1]), ValueError, r"all axes must be unique"),
    (dict(axes=2), ValueError, r"axes=2 exceeds"),
    (dict(axes=-3), ValueError, r"axes=-3 exceeds"),
    (dict(axes=1.5), ValueError, r"axes=1.5 must be an int or a sequence of ints"),
    (dict(axes=True), ValueError, r"axes=True must be an int"),
    (dict(axes=[[0]]), ValueError, r"axes=\[\[0\]\] must be an int"),
    (dict(axes="0"), ValueError, r"axes='0' must be an int"),
])
@pytest.mark.parametrize("func", FUNCS)
def test_argument_errors(kwargs, error, match, func):
    with pytest.raises(error, match=match):
        getattr(ns, func)(np.ones((5, 4)), np.ones((2, 3)), **kwargs)


@pytest.mark.parametrize("func", FUNCS)
def test_input_errors(func):
    f = getattr(ns, func)
    with pytest.raises(ValueError, match=r"in1.ndim=1 and in2.ndim=2"):
        f(np.ones(5), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"in1.ndim=0 and in2.ndim=1"):
        f(np.float64(2.0), np.ones(2))
    with pytest.raises(ValueError, match=r"mode='valid' needs one input at least as large"):
        f(np.ones((3, 8)), np.ones((6, 3)), "valid")
    with pytest.raises(ValueError, match=r"incompatible shapes for in1 and in2: "
                                         r"\(3, 5\) and \(4, 2\)"):
        f(np.ones((3, 5)), np.ones((4, 2)), axes=1)
    with pytest.raises(ValueError, match=r"at most 3 axes"):
        f(np.ones((2, 2, 2, 2)), np.ones((2, 2, 2, 2)))
    with pytest.raises(TypeError, match=r"in2 has dtype complex128: complex"):
        f(np.ones(5), np.ones(2) * 1j)
    with pytest.raises(TypeError, match=r"in1 has dtype complex64"):
        f(np.ones(5, np.complex64), np.ones(2))
    with pytest.raises(TypeError, match=r"in1 has dtype complex128"):
        f(np.array(1j), np.array(2.0))
    with pytest.raises(TypeError, match=r"in2 has dtype object"):
        f(np.ones(5), np.array([1, None], dtype=object))
    with pytest.raises(TypeError, match=r"in1 has dtype <U1"):
        f(np.array(["a", "b"]), np.ones(2))
    if hasattr(np, "float128"):
        with pytest.raises(TypeError, match=r"in2 has dtype float128"):
            f(np.ones(5), np.ones(2, np.float128))


@pytest.mark.parametrize("func", FUNCS)
def test_inputs_not_modified_any_layout(func, rng):
    """Read-only, Fortran-ordered and negatively strided inputs: unchanged, and the
    output is C-contiguous and equal to SciPy's."""
    base1 = rng.standard_normal((9, 14))
    base2 = rng.standard_normal((4, 6))
    for a, b in [(np.asfortranarray(base1), base2[::-1, ::2]),
                 (base1[:, ::-1], np.asfortranarray(base2)), (base2.T, base1[::2].T)]:
        copies = a.copy(), b.copy()
        a.flags.writeable = b.flags.writeable = False
        for mode in MODES:
            for axes in (None, 1):
                check_against_scipy(func, a, b, mode, axes=axes)
        assert np.array_equal(a, copies[0]) and np.array_equal(b, copies[1])


def test_nan_stays_local_with_auto():
    """method="auto" never takes the FFT path on non-finite data, so a NaN reaches only
    the outputs whose window holds it, as SciPy's direct method."""
    a = np.ones((40, 40))
    a[5, 7] = np.nan
    b = np.ones((9, 9))
    y = ns.correlate(a, b, "same")
    ref = scipy.signal.correlate(a, b, "same", method="direct")
    assert np.array_equal(np.isnan(y), np.isnan(ref))
    assert np.isnan(y).sum() == 81


def test_reachable_from_the_package():
    assert numbaconv.signal is ns
    assert ns.__all__ == ["correlate", "convolve"]


def test_docstring_examples():
    failures, tried = doctest.testmod(ns, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried >= 4 and failures == 0


def test_large_integers_stay_off_the_fft(monkeypatch):
    """Integer sums too large for the FFT to round back exactly take another path
    with method="auto" (as SciPy's auto keeps them off its FFT)."""
    import numbaconv.signal as nsignal

    methods = []
    real_conv = nsignal.conv
    monkeypatch.setattr(nsignal, "conv", lambda *a, **k: (methods.append(k["method"]),
                                                          real_conv(*a, **k))[1])
    rng = np.random.default_rng(0)
    big = rng.integers(-2**30, 2**30, 4000, dtype=np.int64)  # sums < 2**53: exact
    kernel = rng.integers(-2**10, 2**10, 301, dtype=np.int64)
    got = nsignal.convolve(big, kernel)
    assert methods == ["direct"]
    np.testing.assert_array_equal(got, np.convolve(big, kernel))
    small = nsignal.convolve(big % 7, kernel % 5)
    assert methods[-1] == "auto"
    np.testing.assert_array_equal(small, np.convolve(big % 7, kernel % 5))
