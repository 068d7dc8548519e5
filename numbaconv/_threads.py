"""Serialise parallel kernel launches across Python threads.

Numba's ``workqueue`` threading layer is not thread-safe: two parallel kernels launched
at once from different Python threads abort the whole process. Every kernel already uses
all of Numba's threads, so running launches one at a time costs no throughput, and one
lock works whichever threading layer is active. Kernels are compiled with ``nogil=True``,
so Python threads that are not convolving keep running meanwhile.
"""

import threading

KERNEL_LOCK = threading.Lock()

# GNU OpenMP's idle workers spin for GOMP_SPINCOUNT iterations (300,000 by default, about
# 10 ms here) before sleeping. Numba's OpenMP workers spinning after a direct kernel
# starved the BLAS threads of a following im2col GEMM on 2 cores (0.6 ms became 8 ms);
# 10,000 spins (a fraction of a millisecond) cost the direct kernels nothing measurable.
# Set only if the user has set neither variable, and before Numba's first parallel launch
# loads libgomp (which reads it then), hence here rather than at import.
OPENMP_SPINCOUNT = "10000"
_OPENMP_CONFIGURED = False


def _configure_openmp() -> None:
    global _OPENMP_CONFIGURED
    if not _OPENMP_CONFIGURED:
        import os

        if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
            os.environ["GOMP_SPINCOUNT"] = OPENMP_SPINCOUNT
        _OPENMP_CONFIGURED = True


class _Launch:
    """``with kernel_launch:`` around every parallel kernel call."""

    def __enter__(self):
        _configure_openmp()
        KERNEL_LOCK.acquire()

    def __exit__(self, *exc):
        KERNEL_LOCK.release()


kernel_launch = _Launch()


_POOL = None
_POOL_LOCK = threading.Lock()


def _pool():
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(thread_name_prefix="numbaconv")
        return _POOL


def split_rows(kernel, total: int, *args):
    """Run the serial, GIL-releasing ``kernel(*args[:2], (r0, r1), *args[2:])`` over
    ``[0, total)`` cut into one contiguous range per Numba thread.

    Used where a ``parallel=True`` kernel would be followed by BLAS: Python threads sleep
    when idle, while Numba's OpenMP workers spin for milliseconds and starve BLAS's threads.
    """
    import numba

    parts = max(1, min(numba.get_num_threads(), total))
    bounds = [total * i // parts for i in range(parts + 1)]
    ranges = [(bounds[i], bounds[i + 1]) for i in range(parts)]
    if parts == 1:
        kernel(*args[:2], ranges[0], *args[2:])
        return
    futures = [_pool().submit(kernel, *args[:2], r, *args[2:]) for r in ranges[1:]]
    kernel(*args[:2], ranges[0], *args[2:])
    for f in futures:
        f.result()


def run_parallel(calls) -> None:
    """Run ``fn(*args, **kwargs)`` for each ``(fn, args, kwargs)`` in ``calls``: the first
    on this thread, the others on the pool; re-raises the first error."""
    futures = [_pool().submit(fn, *args, **kwargs) for fn, args, kwargs in calls[1:]]
    fn, args, kwargs = calls[0]
    fn(*args, **kwargs)
    for f in futures:
        f.result()
