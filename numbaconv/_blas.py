"""OpenBLAS on one thread while numbaconv's kernels call it from Numba's threads.

OpenBLAS keeps its own worker threads, which spin after each call, and Numba's OpenMP
workers spin after each parallel kernel. On a 2-core machine a direct kernel followed by
an im2col GEMM on OpenBLAS's threads took 8 ms instead of 1.7 ms, each pool starving the
other. So numbaconv's GEMMs run inside its parallel kernels, one single-threaded BLAS
call per task on each Numba thread, and while they run every loaded OpenBLAS is set to
one thread (its previous count is restored afterwards, so the user's own NumPy calls
are untouched). Where no OpenBLAS can be found (another BLAS, another OS), the setting
is skipped.
"""

from __future__ import annotations

import ctypes
import threading


# (getter, setter) names per OpenBLAS build: plain, 64-bit-int, and SciPy's prefixed ones.
_NAMES = (
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
)
_LOCK = threading.Lock()
_controls = None
_depth = 0
_saved = []


def loaded_openblas() -> list:
    """A ``ctypes.CDLL`` of every OpenBLAS loaded in this process (none where
    ``/proc/self/maps`` cannot be read)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps
                            if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return []
    libraries = []
    for path in paths:
        try:
            libraries.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libraries


def _find_controls():
    """(get, set) function pairs of every OpenBLAS loaded in this process."""
    found = []
    for lib in loaded_openblas():
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
