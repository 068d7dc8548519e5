"""Out-of-place matrix transposes by OpenBLAS's ``?omatcopy``, for layout changes.

A channels-last call that runs channels-first (``layout_form == "transpose"``) copies
its input and its output into the other layout. NumPy's copy of a transposed view
reads (or writes) one element per cache line touched: 0.20 ms for a ``(784, 256)``
float32 activation here, where OpenBLAS's blocked ``somatcopy`` took 0.03 ms (and
0.13 against 0.03 ms for ``(3136, 64)``). The wheels of NumPy and SciPy bundle an
OpenBLAS that exports ``scipy_cblas_?omatcopy`` (32-bit integers) or
``scipy_cblas_?omatcopy64_`` (64-bit); where none is loaded (another BLAS, another
OS), or the arrays do not suit it, NumPy's copy is used. ``?omatcopy`` runs on the
calling thread only, so it needs no thread settings (see :mod:`numbaconv._blas`).
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from ._blas import loaded_openblas

_ROW_MAJOR, _TRANS = 101, 112
# (symbol suffix, ctypes integer type) per OpenBLAS interface.
_INTERFACES = (("", ctypes.c_int32), ("64_", ctypes.c_int64))
# Fewer elements per sample than this go to NumPy's copy in one call for the batch.
MIN_ELEMENTS = 4096
_LOCK = threading.Lock()
_functions = None  # {np.dtype: ctypes function}, once looked up


def _find_omatcopy() -> dict:
    """``{float32: somatcopy, float64: domatcopy}`` of a loaded SciPy-bundled OpenBLAS,
    or ``{}``."""
    for lib in loaded_openblas():
        for suffix, integer in _INTERFACES:
            names = {np.dtype(np.float32): ("scipy_cblas_somatcopy" + suffix, ctypes.c_float),
                     np.dtype(np.float64): ("scipy_cblas_domatcopy" + suffix, ctypes.c_double)}
            if all(hasattr(lib, name) for name, _ in names.values()):
                found = {}
                for dtype, (name, scalar) in names.items():
                    function = getattr(lib, name)
                    function.restype = None
                    function.argtypes = [ctypes.c_int, ctypes.c_int, integer, integer,
                                         scalar, ctypes.c_void_p, integer,
                                         ctypes.c_void_p, integer]
                    found[dtype] = function
                return found
    return {}


def _omatcopy(dtype):
    global _functions
    if _functions is None:
        with _LOCK:
            if _functions is None:
                # SciPy's BLAS is loaded by the GEMM kernels' registration; NumPy's
                # already is.
                from ._kernels.blas import register_blas

                register_blas()
                _functions = _find_omatcopy()
    return _functions.get(np.dtype(dtype))


def transpose_into(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst[i] = src[i].T`` for ``src`` ``(N, R, C)`` and ``dst`` ``(N, C, R)``: by
    ``?omatcopy`` per sample for C-contiguous arrays of one float dtype with at least
    ``MIN_ELEMENTS`` per sample, else by NumPy's copy (one call for the batch, where a
    call per sample would cost more than the copy saves)."""
    elements = src.shape[1] * src.shape[2]
    function = (_omatcopy(src.dtype) if src.dtype == dst.dtype
                and MIN_ELEMENTS <= elements < 2**31 else None)
    if function is None or not src.flags.c_contiguous or not dst.flags.c_contiguous:
        dst[...] = src.transpose(0, 2, 1)
        return
    n, rows, cols = src.shape
    step_src, step_dst = src.strides[0], dst.strides[0]
    for i in range(n):
        function(_ROW_MAJOR, _TRANS, rows, cols, 1.0, src.ctypes.data + i * step_src, cols,
                 dst.ctypes.data + i * step_dst, rows)
