"""Serialise parallel kernel launches across Python threads.

Numba's ``workqueue`` threading layer is not thread-safe: two parallel kernels launched
at once from different Python threads abort the whole process. Every kernel already uses
all of Numba's threads, so running launches one at a time costs no throughput, and one
lock works whichever threading layer is active. Kernels are compiled with ``nogil=True``,
so Python threads that are not convolving keep running meanwhile.
"""

import threading

from . import config

KERNEL_LOCK = threading.Lock()

# GNU OpenMP's idle workers spin for GOMP_SPINCOUNT iterations (300,000 by default, about
# 10 ms here) before sleeping, starving a following GEMM's threads on 2 cores; 10,000
# spins (``config.OPENMP_SPINCOUNT``) cost the direct kernels nothing measurable. Set
# only if the user has set neither variable, and before Numba's first parallel launch
# loads libgomp (which reads it then), hence here rather than at import.
_OPENMP_CONFIGURED = False


def _configure_openmp() -> None:
    global _OPENMP_CONFIGURED
    if not _OPENMP_CONFIGURED:
        import os

        if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
            os.environ["GOMP_SPINCOUNT"] = config.OPENMP_SPINCOUNT
        _OPENMP_CONFIGURED = True


class _Launch:
    """``with kernel_launch:`` around every parallel kernel call."""

    def __enter__(self):
        _configure_openmp()
        KERNEL_LOCK.acquire()

    def __exit__(self, *exc):
        KERNEL_LOCK.release()


kernel_launch = _Launch()


