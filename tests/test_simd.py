"""numbaconv._simd: the vector type's loads, stores and fused multiply-adds, compiled
(and as NumPy under NUMBA_DISABLE_JIT=1)."""

import numpy as np
import pytest
from numba import literally, njit

from numbaconv._simd import (VECTOR_BYTES, lanes, vadd, veven, vfma, vload, vload_first,
                            vodd, vrotate_groups, vsplat, vstore, vstore_first, vzip,
                            vswap_blocks)


def test_lanes_fill_one_register():
    assert VECTOR_BYTES in (32, 64)
    assert lanes(4) == VECTOR_BYTES // 4 and lanes(8) == VECTOR_BYTES // 8


@njit
def _axpy_by_vectors(out, x, w, one, start):
    L = VECTOR_BYTES // x.itemsize
    acc = vsplat(one)
    for i in range(0, x.shape[0] - start - L + 1, L):
        vstore(out, i, vfma(acc, vload(x, start + i), w))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("start", [0, 1, 3])
def test_vectors_load_multiply_add_and_store(dtype, start):
    L = lanes(np.dtype(dtype).itemsize)
    x = np.arange(4 * L + start, dtype=dtype)
    out = np.full(4 * L + 2, -7, dtype)
    _axpy_by_vectors(out, x, dtype(2.5), dtype(1), start)
    # Unaligned loads (start), whole vectors only, nothing written past them.
    np.testing.assert_array_equal(out[:4 * L], 1 + 2.5 * x[start: start + 4 * L])
    np.testing.assert_array_equal(out[4 * L:], -7)
    assert out.dtype == dtype


@njit
def _vector_scaled(out, x, w):
    vstore(out, 0, vfma(vload(out, 0), vload(x, 0), vload(w, 0)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectors_multiply_lane_by_lane(dtype):
    L = lanes(np.dtype(dtype).itemsize)
    x, w = np.arange(L, dtype=dtype), np.arange(L, dtype=dtype)[::-1].copy()
    out = np.ones(L, dtype)
    _vector_scaled(out, x, w)
    np.testing.assert_array_equal(out, 1 + x * w)


@njit
def _copy_first(out, at, x, start, count):
    vstore_first(out, at, vload_first(x, start, count), count)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_moves_touch_only_their_lanes(dtype):
    """vload_first reads ``count`` elements (zeros in the other lanes), vstore_first
    writes ``count``: the last elements of an array move without reading or writing
    past it."""
    L = lanes(np.dtype(dtype).itemsize)
    for count in (0, 1, L // 2 + 1, L):
        x = np.arange(1, L + 1, dtype=dtype)[:count].copy()  # exactly count elements
        out = np.full(L + 3, -7, dtype)
        _copy_first(out, 2, x, 0, count)
        want = np.full(L + 3, -7, dtype)
        want[2: 2 + count] = x
        np.testing.assert_array_equal(out, want)


@njit
def _split(out_even, out_odd, x):
    L = VECTOR_BYTES // x.itemsize
    a, b = vload(x, 0), vload(x, L)
    vstore(out_even, 0, veven(a, b))
    vstore(out_odd, 0, vodd(a, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_even_and_odd_lanes_of_two_vectors(dtype):
    L = lanes(np.dtype(dtype).itemsize)
    x = np.arange(2 * L, dtype=dtype)
    even, odd = np.empty(L, dtype), np.empty(L, dtype)
    _split(even, odd, x)
    np.testing.assert_array_equal(even, x[0::2])
    np.testing.assert_array_equal(odd, x[1::2])


@njit
def _zip(out, x):
    L = VECTOR_BYTES // x.itemsize
    low, high = vzip(vload(x, 0), vload(x, L))
    vstore(out, 0, low)
    vstore(out, L, high)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zip_interleaves_two_vectors(dtype):
    """vzip undoes veven/vodd: the lanes of a and b alternate."""
    L = lanes(np.dtype(dtype).itemsize)
    x = np.arange(2 * L, dtype=dtype)
    out = np.empty(2 * L, dtype)
    _zip(out, x)
    want = np.empty(2 * L, dtype)
    want[0::2], want[1::2] = x[:L], x[L:]
    np.testing.assert_array_equal(out, want)


@njit
def _swap_pair(a, b, out, size):
    u, v = vswap_blocks(vload(a, 0), vload(b, 0), literally(size))
    vstore(out[0], 0, u)
    vstore(out[1], 0, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_swapping_blocks_transposes_square_tiles(dtype):
    """vswap_blocks of each size on the pairs (i, i + size) of ``lanes`` vectors, from
    half the lanes down to 1, transposes them as a square matrix."""
    L = lanes(np.dtype(dtype).itemsize)
    tile = np.arange(L * L, dtype=dtype).reshape(L, L)
    rows = tile.copy()
    size = L // 2
    pair = np.empty((2, L), dtype)
    while size >= 1:
        for i in range(L):
            if (i // size) % 2 == 0:
                _swap_pair(rows[i], rows[i + size], pair, size)
                rows[i], rows[i + size] = pair[0], pair[1]
        size //= 2
    np.testing.assert_array_equal(rows, tile.T)


@njit
def _rotate_and_add(a, b, out, size):
    u, v = vload(a, 0), vload(b, 0)
    vstore(out, 0, vadd(u, vrotate_groups(v, literally(size))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [2, 4, 8])
def test_rotating_groups_of_lanes(dtype, size):
    """vrotate_groups moves each lane of a group of ``size`` down by one, the group's
    first to its last; vadd adds lane by lane."""
    L = lanes(np.dtype(dtype).itemsize)
    if L % size:
        pytest.skip("the group size does not divide the lanes")
    a = np.arange(L, dtype=dtype) * 100
    b = np.arange(L, dtype=dtype)
    out = np.empty(L, dtype)
    _rotate_and_add(a, b, out, size)
    expected = a + b.reshape(-1, size)[:, list(range(1, size)) + [0]].reshape(-1)
    np.testing.assert_array_equal(out, expected)
