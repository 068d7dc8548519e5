"""Scratch buffers for the kernels, kept across calls, and cache-line-aligned arrays.

A multi-megabyte buffer allocated afresh on every call comes from new ``mmap``-ed pages
and pays a page fault per 4 KiB the first time each is touched: resnet_conv1's im2col
columns (3.7 MB per thread) made a call take 3.5 ms instead of 0.86 ms. Buffers up to
``config.WORKSPACE_MAX_CACHED_BYTES`` are therefore kept and handed out again; larger ones are allocated
per call (there the work dwarfs the faults). Call :func:`scratch` only while holding
``_threads.KERNEL_LOCK`` (inside ``with kernel_launch:``), so that no two calls share a
buffer.
"""

from __future__ import annotations

import math

import numpy as np

from . import config


_BUFFERS: dict = {}
# Bytes: a cache line, and an AVX-512 register.
ALIGNMENT = 64


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose first element starts a cache line.

    NumPy's large arrays come from ``mmap`` behind a 16-byte header, so every vector
    of 16 floats a kernel loads or stores there straddles two cache lines: the
    channels-last depthwise kernel took 113-151 us on mbv2_dw3 with its input and
    output so placed, against 84 us with both aligned (the kernel alone, 2 threads).
    Outputs and scratch buffers numbaconv allocates are aligned; a caller's input is
    read where it lies."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def scratch(slot: str, shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, reused across calls
    for the same ``slot`` (one slot per buffer a single call needs at once)."""
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    if size * dtype.itemsize > config.WORKSPACE_MAX_CACHED_BYTES:
        return aligned_empty(shape, dtype)
    key = (slot, dtype.str)
    buf = _BUFFERS.get(key)
    if buf is None or buf.size < size:
        buf = aligned_empty((size,), dtype)
        _BUFFERS[key] = buf
    return buf[:size].reshape(shape)


def release() -> None:
    """Drop every kept buffer (they are rebuilt on demand)."""
    _BUFFERS.clear()
