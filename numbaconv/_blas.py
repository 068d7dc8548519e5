"""numbaconv's matrix products: NumPy's BLAS, one BLAS thread per call, the work split
over a few Python threads.

OpenBLAS keeps its own worker threads, which spin after each call, and Numba's OpenMP
workers spin after each parallel kernel. On a 2-core machine a direct kernel followed by
an im2col GEMM then took 8 ms instead of 1.7 ms, each pool starving the other. So while
numbaconv multiplies, every loaded OpenBLAS runs single-threaded (its previous thread
count is restored afterwards, so the user's own NumPy calls are untouched), and a large
product is cut into one piece per Numba thread, each multiplied on a Python thread
(``np.matmul`` releases the GIL; idle Python threads sleep instead of spinning).
Where no OpenBLAS can be found (another BLAS, another OS), products run as NumPy runs them.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from ._threads import run_parallel

# (getter, setter) names per OpenBLAS build: plain, 64-bit-int, and SciPy's prefixed ones.
_NAMES = (
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
)
# Below this many multiply-adds a product is not split (thread hand-off costs ~20 us).
MIN_SPLIT_MACS = 1 << 21

_LOCK = threading.Lock()
_controls = None
_depth = 0
_saved = []


def _find_controls():
    """(get, set) function pairs of every OpenBLAS loaded in this process."""
    found = []
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps
                            if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return found
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _NAMES:
            if hasattr(lib, get_name) and hasattr(lib, set_name):
                found.append((getattr(lib, get_name), getattr(lib, set_name)))
                break
    return found


class _SingleThreadedBlas:
    """``with single_threaded_blas:``: OpenBLAS on one thread, restored on exit;
    re-entrant and safe across Python threads (the outermost entry saves and restores)."""

    def __enter__(self):
        global _controls, _depth, _saved
        with _LOCK:
            if _controls is None:
                _controls = _find_controls()
            if _depth == 0:
                _saved = [get() for get, _ in _controls]
                for _, set_threads in _controls:
                    set_threads(1)
            _depth += 1

    def __exit__(self, *exc):
        global _depth
        with _LOCK:
            _depth -= 1
            if _depth == 0:
                for (_, set_threads), count in zip(_controls, _saved):
                    set_threads(count)


single_threaded_blas = _SingleThreadedBlas()


def matmul(a, b, out):
    """``np.matmul(a, b, out=out)`` for 2-D or stacked 3-D operands, split by stacks (when
    there are enough) or by the columns of ``b`` and ``out`` over the Numba threads."""
    import numba

    parts = numba.get_num_threads()
    m, k = a.shape[-2:]
    p = b.shape[-1]
    stacks = a.shape[0] if a.ndim == 3 else 1
    with single_threaded_blas:
        if parts < 2 or stacks * m * k * p < MIN_SPLIT_MACS:
            np.matmul(a, b, out=out)
            return out
        if stacks >= 2 * parts:
            cut = np.linspace(0, stacks, parts + 1).astype(int)
            run_parallel([(np.matmul, (a[lo:hi], b[lo:hi]), {"out": out[lo:hi]})
                          for lo, hi in zip(cut[:-1], cut[1:])])
        else:
            cut = np.linspace(0, p, parts + 1).astype(int)
            run_parallel([(np.matmul, (a, b[..., lo:hi]), {"out": out[..., lo:hi]})
                          for lo, hi in zip(cut[:-1], cut[1:])])
    return out
