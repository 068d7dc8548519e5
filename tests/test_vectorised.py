"""The hot loops compile to packed FMAs (a check, not a hope)."""

import re

import numpy as np
import pytest
import numba
from numba import njit

from numbaconv.config import FASTMATH
from numbaconv._kernels import direct


pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT,
                                reason="no machine code with NUMBA_DISABLE_JIT=1")


def _asm(helper, *args):
    # Cached dispatchers cannot show their assembly: compile a fresh, uncached copy.
    fresh = njit(fastmath=set(FASTMATH), cache=False)(helper.py_func)
    fresh(*args)
    return fresh.inspect_asm(fresh.signatures[0])


@pytest.mark.parametrize("dtype,suffix", [(np.float32, "ps"), (np.float64, "pd")])
def test_dense_dot_product_uses_packed_fma(dtype, suffix):
    P = np.ones(256, dtype)
    W2 = np.ones((4, 128), dtype)
    b = dtype(0)
    asm = _asm(direct._dot_4x2, P, 0, 128, W2, 0, 128, b, b, b, b)
    if "vfmadd" not in asm:
        pytest.skip("this CPU has no FMA instructions")
    assert re.search(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm), "no packed FMA on ymm/zmm"


@pytest.mark.parametrize("dtype,suffix", [(np.float32, "ps"), (np.float64, "pd")])
@pytest.mark.parametrize("across", [1, 2, 4, 8])
def test_channelwise_plain_blocks_use_packed_fma(dtype, suffix, across):
    from numbaconv._simd import lanes
    L = lanes(np.dtype(dtype).itemsize)
    out = np.zeros(64 * L, dtype)
    xp = np.ones(128 * L, dtype)
    asm = _asm(direct._plane_blocks, out, 0, xp, 8 * L + 2, np.arange(9, dtype=np.int64),
               np.ones(9, dtype), 8, 8 * L, across, dtype(0), True)
    if "vfmadd" not in asm:
        pytest.skip("this CPU has no FMA instructions")
    # Eight accumulators a tap, each a whole register.
    assert len(re.findall(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm)) >= 8


@pytest.mark.parametrize("dtype,suffix", [(np.float32, "ps"), (np.float64, "pd")])
def test_stem_taps_use_packed_fma(dtype, suffix):
    from numbaconv._kernels import stem
    acc = np.zeros(8 * stem.PITCH, dtype)
    xp = np.ones(stem.CHUNK + 64, dtype)
    asm = _asm(stem._add_taps_by_blocks, acc, xp, 0, stem.CHUNK,
               np.arange(4, dtype=np.int64), np.ones((4, 8), dtype))
    if "vfmadd" not in asm:
        pytest.skip("this CPU has no FMA instructions")
    assert re.search(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm), "no packed FMA on ymm/zmm"


@pytest.mark.parametrize("dtype,suffix", [(np.float32, "ps"), (np.float64, "pd")])
def test_channels_last_depthwise_taps_use_packed_fma(dtype, suffix):
    """The unsigned flat indices of the channels-last depthwise passes vectorise."""
    from numbaconv._kernels import channels_last

    of, xf, wf = np.zeros(64, dtype), np.ones(256, dtype), np.ones(256, dtype)
    u = np.uint64
    asm = _asm(channels_last._add_taps_twice, of, u(0), xf, u(0), u(32), u(16), wf, u(0),
               u(32), 3)
    if "vfmadd" not in asm:
        pytest.skip("this CPU has no FMA instructions")
    assert re.search(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm), "no packed FMA on ymm/zmm"


@pytest.mark.parametrize("dtype,suffix", [(np.float32, "ps"), (np.float64, "pd")])
def test_channels_last_depthwise_3x3_pass_uses_packed_fma(dtype, suffix):
    """The one-pass 3x3 of two positions vectorises over the channels (one loop for
    both modes, writing the bias or adding: LLVM selects between them per vector)."""
    from numbaconv._kernels import channels_last

    of, xf, wf = np.zeros(64, dtype), np.ones(512, dtype), np.ones(512, dtype)
    u = np.uint64
    asm = _asm(channels_last._add_3x3_twice, of, u(0), xf, u(0), u(32), u(96), u(32),
               wf, u(0), u(32), np.ones(32, dtype), True)
    if "vfmadd" not in asm:
        pytest.skip("this CPU has no FMA instructions")
    assert len(re.findall(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm)) >= 9, \
        "fewer packed FMAs than one position's 9 taps"


@pytest.mark.parametrize("dtype,suffix", [(np.float32, "ps"), (np.float64, "pd")])
def test_channelwise_register_blocks_use_packed_fma(dtype, suffix):
    from numbaconv._simd import lanes
    width = 2 * lanes(np.dtype(dtype).itemsize)
    out = np.zeros(4 * width, dtype)
    xp = np.ones(64 * width, dtype)
    asm = _asm(direct._rows_taps, out, 0, xp, width + 2, np.arange(3, dtype=np.int64),
               np.ones(3, dtype), 3, 1, 4, width, dtype(0), True)
    if "vfmadd" not in asm:
        pytest.skip("this CPU has no FMA instructions")
    # Eight accumulators a tap, each a whole register.
    assert len(re.findall(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm)) >= 8


@pytest.mark.parametrize("dtype,suffix", [(np.float32, "ps"), (np.float64, "pd")])
def test_channels_last_depthwise_blocks_use_packed_fma(dtype, suffix):
    from numbaconv._kernels import channels_last
    from numbaconv._simd import lanes
    C = 2 * lanes(np.dtype(dtype).itemsize)
    xf = np.ones(3 * 12 * C, dtype)
    asm = _asm(channels_last._position_blocks, np.zeros(8 * C, dtype), 0, xf, 0,
               np.ones(9 * C, dtype), np.zeros(C, dtype), C, 2, 0, 1, 3, 3, 0, 12 * C, C,
               4 * C)
    if "vfmadd" not in asm:
        pytest.skip("this CPU has no FMA instructions")
    assert len(re.findall(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm)) >= 8
    asm = _asm(channels_last._strided_position_blocks, np.zeros(8 * C, dtype), 0, xf, 0,
               np.ones(9 * C, dtype), np.zeros(C, dtype), C, 1, 0, 1, 3, 3, 0, 12 * C, C,
               2 * C)
    assert len(re.findall(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm)) >= 8
    asm = _asm(channels_last._stride2_position_blocks, np.zeros(8 * C, dtype), 0, xf, 0,
               np.ones(9 * C, dtype), np.zeros(C, dtype), C, 1, 0, 1, 3, 3, 0, 12 * C, C)
    assert len(re.findall(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm)) >= 8



@pytest.mark.parametrize("dtype,suffix", [(np.float32, "ps"), (np.float64, "pd")])
def test_channelwise_narrow_register_blocks_use_packed_fma(dtype, suffix):
    from numbaconv._simd import lanes
    width = lanes(np.dtype(dtype).itemsize)
    out = np.zeros(8 * width, dtype)
    xp = np.ones(64 * width, dtype)
    asm = _asm(direct._rows_taps_narrow, out, 0, xp, width + 2,
               np.arange(3, dtype=np.int64), np.ones(3, dtype), 3, 1, 8, width, dtype(0),
               True)
    if "vfmadd" not in asm:
        pytest.skip("this CPU has no FMA instructions")
    assert len(re.findall(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm)) >= 8


@pytest.mark.parametrize("dtype,suffix", [(np.float32, "ps"), (np.float64, "pd")])
def test_channels_last_dense_blocks_use_packed_fma(dtype, suffix):
    from numbaconv._kernels import channels_last
    from numbaconv._simd import lanes
    CO = 2 * lanes(np.dtype(dtype).itemsize)
    asm = _asm(channels_last._dense_block, np.zeros(8 * CO, dtype), 0, np.ones(64, dtype),
               np.arange(8, dtype=np.int64), 0, np.ones(3 * CO, dtype), 0,
               np.array([0, 1, 2, -1]), CO, np.zeros(CO, dtype))
    if "vfmadd" not in asm:
        pytest.skip("this CPU has no FMA instructions")
    assert len(re.findall(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm)) >= 16


@pytest.mark.parametrize("dtype,suffix", [(np.float32, "ps"), (np.float64, "pd")])
@pytest.mark.parametrize("group", [4, 8])
def test_channels_last_grouped_blocks_use_packed_fma(dtype, suffix, group):
    """The grouped lanes kernel's blocks: 16 sums, a packed FMA each per tap."""
    from numbaconv._kernels import channels_last
    from numbaconv._simd import lanes
    C = lanes(np.dtype(dtype).itemsize)
    if C % group:
        pytest.skip("the group size does not divide the lanes")
    blocks = getattr(channels_last, f"_rotation_block{group}")
    positions = 16 // group
    asm = _asm(blocks, np.zeros(positions * C, dtype), 0, np.ones(3 * 12 * C, dtype), 0,
               np.ones(9 * group * C, dtype), 0, np.zeros(C, dtype), np.zeros(C, dtype), 0,
               C, 0, 1, 0, 3, 3, 3, 0, 12 * C, C, C)
    if "vfmadd" not in asm:
        pytest.skip("this CPU has no FMA instructions")
    assert len(re.findall(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm)) >= 16


@pytest.mark.parametrize("dtype,suffix", [(np.float32, "ps"), (np.float64, "pd")])
def test_channels_last_winograd_transforms_use_packed_fma(dtype, suffix):
    """The channels-last Winograd kernel's input and output transforms work on whole
    vectors of channels."""
    from numbaconv._kernels import winograd_last
    from numbaconv._simd import lanes
    L = lanes(np.dtype(dtype).itemsize)
    tf = np.ones(36 * 6 * L, dtype)
    vf = np.zeros(36 * L, dtype)
    asm = _asm(winograd_last._tile_points, tf, 0, 6 * L, vf, 0, L)
    if "vfmadd" not in asm:
        pytest.skip("this CPU has no FMA instructions")
    assert re.search(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm), "no packed FMA on ymm/zmm"
    offsets = np.zeros(4, np.int64)
    asm = _asm(winograd_last._output_tile, np.ones(36 * L, dtype), 0, L,
               np.ones(L, dtype), 0, L, np.zeros(24 * L, dtype), np.zeros(4 * L, dtype),
               offsets, offsets, 4, 4)
    assert re.search(rf"vfmadd\w+{suffix}\s+[^\n]*%[yz]mm", asm), "no packed FMA on ymm/zmm"
