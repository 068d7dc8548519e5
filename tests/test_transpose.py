"""Layout changes by OpenBLAS's ``?omatcopy`` (numbaconv._transpose) give NumPy's
transposes, and fall back to NumPy's copy where they cannot run."""

import numpy as np
import pytest

from numbaconv import _transpose
from numbaconv._channels_last import move_to_last, moved_to_first


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 784, 256), (3, 96, 50), (2, 5, 7), (0, 80, 80),
                                   (2, 4096, 1)])
def test_transpose_into_matches_numpy(rng, dtype, shape):
    src = rng.standard_normal(shape).astype(dtype)
    dst = np.full(shape[:1] + shape[:0:-1], np.nan, dtype)
    _transpose.transpose_into(src, dst)
    np.testing.assert_array_equal(dst, src.transpose(0, 2, 1))


def test_transpose_into_falls_back_without_omatcopy(rng, monkeypatch):
    monkeypatch.setattr(_transpose, "_functions", {})
    src = rng.standard_normal((2, 300, 40)).astype(np.float32)
    dst = np.empty((2, 40, 300), np.float32)
    _transpose.transpose_into(src, dst)
    np.testing.assert_array_equal(dst, src.transpose(0, 2, 1))


def test_transpose_into_takes_strided_and_mixed_arrays(rng):
    src = rng.standard_normal((2, 200, 60))[:, ::2]       # not contiguous, float64
    dst = np.empty((2, 60, 100), np.float32)              # another dtype
    _transpose.transpose_into(src, dst)
    np.testing.assert_array_equal(dst, src.transpose(0, 2, 1).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layout_moves_round_trip(rng, dtype):
    x = rng.standard_normal((2, 9, 40, 33, 17)).astype(np.float16)   # converted on the way
    moved = moved_to_first(x, dtype)
    assert moved.dtype == dtype and moved.flags.c_contiguous
    np.testing.assert_array_equal(moved, np.moveaxis(x, -1, 1).astype(dtype))
    back = np.empty(x.shape, dtype)
    move_to_last(moved, back)
    np.testing.assert_array_equal(back, x.astype(dtype))


def test_omatcopy_is_found_with_the_wheels_openblas():
    """Where a SciPy-bundled OpenBLAS is loaded, the fast path is the one taken."""
    found = _transpose._omatcopy(np.float32)
    try:
        with open("/proc/self/maps") as maps:
            bundled = any("scipy_openblas" in line for line in maps)
    except OSError:
        pytest.skip("no /proc/self/maps on this system")
    if not bundled:
        pytest.skip("no SciPy-bundled OpenBLAS in this process")
    assert found is not None


@pytest.mark.parametrize("shape,d", [((2, 16, 30, 40), 2), ((16, 30, 40), 2), ((3, 8, 700), 1),
                                     ((8, 5, 6, 7), 3)])
def test_channels_last_copy_of_results(rng, shape, d):
    """Gradients and transposed convolutions leave channels-first results as new
    C-contiguous channels-last arrays, batched or not."""
    from numbaconv._channels_last import channels_last_copy

    y = rng.standard_normal(shape).astype(np.float32)
    got = channels_last_copy(y, d)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, np.moveaxis(y, y.ndim - d - 1, -1))


def test_channels_last_transposed_convolution_unbatched(rng):
    import numbaconv

    x = rng.standard_normal((32, 40, 24)).astype(np.float32)       # (H, W, C), unbatched
    w = rng.standard_normal((24, 16, 2, 2)).astype(np.float32)
    got = numbaconv.conv_transpose2d(x, w, stride=2, layout="channels_last")
    want = numbaconv.conv_transpose2d(np.moveaxis(x, -1, 0), w, stride=2)
    assert got.shape == (64, 80, 16) and got.flags.c_contiguous
    np.testing.assert_allclose(got, np.moveaxis(want, 0, -1), rtol=1e-6, atol=1e-6)


def test_channels_last_backward_unbatched_and_integer(rng):
    """Gradients of channels-last inputs, unbatched and integer (moved into channels
    first in the computation dtype), equal those of the channels-first call."""
    import numbaconv

    x = rng.integers(-3, 4, size=(30, 20, 6))                       # (H, W, C), int
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((15, 10, 8)).astype(np.float32)
    got = numbaconv.conv_backward(g, x, w, stride=2, padding=1, groups=2,
                                  layout="channels_last")
    want = numbaconv.conv_backward(np.moveaxis(g, -1, 0), np.moveaxis(x, -1, 0), w,
                                   stride=2, padding=1, groups=2)
    assert got[0].dtype == np.float64 and got[0].shape == x.shape
    np.testing.assert_allclose(got[0], np.moveaxis(want[0], 0, -1), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-10)
