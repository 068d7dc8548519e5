"""Scratch buffers for the kernels, kept across calls.

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


def scratch(slot: str, shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, reused across calls
    for the same ``slot`` (one slot per buffer a single call needs at once)."""
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    if size * dtype.itemsize > config.WORKSPACE_MAX_CACHED_BYTES:
        return np.empty(shape, dtype)
    key = (slot, dtype.str)
    buf = _BUFFERS.get(key)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype)
        _BUFFERS[key] = buf
    return buf[:size].reshape(shape)


def release() -> None:
    """Drop every kept buffer (they are rebuilt on demand)."""
    _BUFFERS.clear()
