"""Kernel compilation that does not stall a call: readiness, background jobs, cache guard.

A kernel form takes 2-8 s to compile on a 2-core machine, and every fresh environment
pays that once per form and dtype (later processes load Numba's on-disk
cache in a fraction of a second). Every kernel numbaconv launches from Python is a
:class:`Kernel`, which knows, before it runs, whether its compiled code is at hand:

- already compiled or loaded in this process;
- in Numba's on-disk cache (then it is loaded now, which takes about 0.1 s);
- neither. With ``method="auto"`` (inside :func:`fallback_allowed`) the call raises
  :class:`KernelNotReady` and the caller runs a path that needs no compilation (NumPy
  and SciPy, see :mod:`numbaconv._fallback`), while a *separate process*
  (``python -m numbaconv._warm FORM DTYPE``) compiles the kernel's form into the cache.
  Later calls load it from there as soon as that process is done. Otherwise (a named
  path, or ``config.BACKGROUND_COMPILE`` off) it compiles here and now, and says so.

The compile job runs in its own process, detached, rather than in a thread of the
user's process: it holds no lock of the user's process (Numba's compiler lock, the GIL)
while the user's own Numba code or a ``fork`` runs, it keeps going when a short script
exits (so the next run starts warm), and jobs of one kernel group take turns under a
file lock per group (``_warm.group_locks``), so that two never write one cache index at
once. A process runs at most :func:`max_jobs` jobs at once; the others wait their turn.

Stale caches: Numba checks each kernel file's own timestamp and its own version, but
not the files a kernel calls into, numbaconv's version or ``config.FASTMATH``. The
first kernel use of a process compares a fingerprint of all of those with the one stored
beside the cache and, where they differ, deletes numbaconv's cached kernels there.
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from . import config

log = logging.getLogger("numbaconv")

__all__ = ["Kernel", "KernelNotReady", "fallback_allowed", "background_jobs",
           "compiling_in_foreground", "wait_for_jobs"]


class KernelNotReady(Exception):
    """A kernel is compiling in the background; the caller should not wait for it."""


_LOCAL = threading.local()
_JOBS: dict = {}          # (form, dtype name) -> subprocess.Popen
_PENDING: list = []       # (form, dtype name) waiting for a job slot
_FAILED: set = set()      # (form, dtype name) whose job could not start
_JOBS_LOCK = threading.Lock()
_ANNOUNCED = False
_GUARDED = False


class fallback_allowed:
    """``with fallback_allowed():`` lets kernels raise :class:`KernelNotReady` instead
    of compiling in the foreground (only ``method="auto"`` calls, which may take any
    path, enter it)."""

    def __enter__(self):
        self._before = getattr(_LOCAL, "allowed", False)
        _LOCAL.allowed = background_enabled()
        return self

    def __exit__(self, *exc):
        _LOCAL.allowed = self._before


class compiling_in_foreground:
    """``with compiling_in_foreground():`` cold kernels compile before the call returns,
    as with ``NUMBACONV_BACKGROUND_COMPILE=0`` (benchmarks time the kernels, never the
    fallback)."""

    depth = 0

    def __enter__(self):
        compiling_in_foreground.depth += 1
        return self

    def __exit__(self, *exc):
        compiling_in_foreground.depth -= 1


def background_enabled() -> bool:
    """Whether cold kernels compile in a background process while calls fall back:
    ``config.BACKGROUND_COMPILE``, unless ``NUMBACONV_BACKGROUND_COMPILE=0`` or inside
    :class:`compiling_in_foreground`, and only with the on-disk cache on (the job hands
    its result over through the cache)."""
    if compiling_in_foreground.depth:
        return False
    env = os.environ.get("NUMBACONV_BACKGROUND_COMPILE")
    enabled = config.BACKGROUND_COMPILE if env is None else env not in ("0", "", "false")
    return bool(enabled and config.CACHE)


def _reset_after_fork() -> None:
    # A forked child is not the parent of the parent's jobs: it starts its own, which
    # then wait on the jobs' file lock.
    _JOBS.clear()
    _PENDING.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def max_jobs() -> int:
    """Compile jobs one process runs at once: half the cores (one on 2 cores), so that
    the calls meanwhile keep a core and the first job finishes soonest; the others
    wait their turn."""
    return max(1, (os.cpu_count() or 2) // 2)


def background_jobs() -> dict:
    """``{(form, dtype): running or waiting}`` of this process's compile jobs."""
    _start_pending()
    with _JOBS_LOCK:
        jobs = {key: job.poll() is None for key, job in _JOBS.items()}
        jobs.update((key, True) for key in _PENDING)
    return jobs


def wait_for_jobs(timeout=None) -> None:
    """Wait until this process's background compile jobs, waiting ones included, have
    finished."""
    while True:
        _start_pending()
        with _JOBS_LOCK:
            jobs = [job for job in _JOBS.values() if job.poll() is None]
            waiting = bool(_PENDING)
        if not jobs and not waiting:
            return
        for job in jobs:
            job.wait(timeout)


class Kernel:
    """A compiled kernel that knows whether its code is ready before it runs.

    Parameters
    ----------
    dispatcher : numba.core.registry.CPUDispatcher
        The ``@njit`` kernel (a plain function under ``NUMBA_DISABLE_JIT=1``).
    form : str
        The form of ``numbaconv._registry.FORMS`` whose example call compiles it.
    """

    def __init__(self, dispatcher, form: str):
        self.dispatcher = dispatcher
        self.form = form
        self.name = getattr(dispatcher, "__name__", repr(dispatcher))
        self._ready = set()  # dtypes of the first array argument whose code is loaded
        self._addresses = {}  # dtype -> address of the compiled code (see address)

    def __getattr__(self, name):
        return getattr(self.dispatcher, name)

    def __call__(self, *args):
        self.prepare(*args)
        return self.dispatcher(*args)

    def prepare(self, *args) -> None:
        """Make sure the code for these arguments is loaded, compiling it if need be,
        or raise :class:`KernelNotReady` (see the module docstring)."""
        dtype = getattr(args[0], "dtype", None)
        if dtype is None:  # the arguments lead with thread numbers (a share)
            dtype = _dtype_of(args)
        if dtype not in self._ready:
            self._prepare(dtype, args)

    def address(self, *args):
        """The address of the compiled code for these arguments (after :meth:`prepare`),
        for ``_kernels.shares.call_share``; None under ``NUMBA_DISABLE_JIT=1``."""
        disp = self.dispatcher
        if not hasattr(disp, "overloads"):
            return None
        dtype = _dtype_of(args)
        address = self._addresses.get(dtype)
        if address is None:  # looking it up costs 50-100 us: once per dtype
            sig = tuple(disp.typeof_pyval(a) for a in args)
            if sig not in disp.overloads:
                disp.compile(sig)  # what a call would have compiled (prepare said so)
            cres = disp.overloads[sig]
            address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
            self._addresses[dtype] = address
        return address

    def _prepare(self, dtype, args) -> None:
        disp = self.dispatcher
        if not hasattr(disp, "overloads"):  # NUMBA_DISABLE_JIT=1
            self._ready.add(dtype)
            return
        _guard_stale_cache(disp)
        sig = tuple(disp.typeof_pyval(a) for a in args)
        if sig in disp.overloads or _load_cached(disp, sig):
            self._ready.add(dtype)
            return
        key = (self.form, np.dtype(dtype).name)
        with _JOBS_LOCK:
            job = _JOBS.get(key)
        if getattr(_LOCAL, "allowed", False) and key not in _FAILED:
            with _JOBS_LOCK:
                if job is None and key not in _PENDING:
                    _PENDING.append(key)
            _start_pending()
            with _JOBS_LOCK:
                job = _JOBS.get(key)
            if job is None and key not in _FAILED:
                raise KernelNotReady(f"{self.name} ({key[1]}) waits to compile")
            if job is not None and job.poll() is None:
                raise KernelNotReady(f"{self.name} ({key[1]}) is compiling")
        elif job is not None:
            job.wait()  # it is nearly done, and it must not share the cache index
        if job is not None and _load_cached(disp, sig):
            self._ready.add(dtype)
            return
        # Compiled here and now: the first call of a named path, or a job that failed.
        log.warning("numbaconv: compiling %s for %s (seconds, once: it is cached for "
                    "later processes)", self.name, key[1])
        self._ready.add(dtype)


def prepare_all(calls) -> None:
    """:meth:`Kernel.prepare` for every ``(kernel, args)`` of ``calls``, so that the
    compile jobs of all the forms a call needs start at once; then raise the first
    :class:`KernelNotReady`, if any."""
    missing = None
    for kernel, args in calls:
        try:
            kernel.prepare(*args)
        except KernelNotReady as exc:
            missing = missing or exc
    if missing is not None:
        raise missing


def _dtype_of(args):
    """The dtype of the first array among ``args`` (searching tuples too): with the
    kernel, it fixes the compiled signature, since kernels take normalised arrays."""
    for a in args:
        if isinstance(a, tuple):
            a = _dtype_of(a)
        dtype = getattr(a, "dtype", a if isinstance(a, np.dtype) else None)
        if dtype is not None:
            return dtype
    return None


def _load_cached(disp, sig) -> bool:
    """Load ``sig`` of ``disp`` from Numba's on-disk cache if it is there (as
    ``Dispatcher.compile`` does before it compiles); never compiles."""
    from numba.core.compiler_lock import global_compiler_lock

    cache = getattr(disp, "_cache", None)
    if cache is None:
        return False
    with global_compiler_lock:
        if sig in disp.overloads:
            return True
        cres = cache.load_overload(sig, disp.targetctx)
        if cres is None:
            return False
        disp.targetctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
        disp.add_overload(cres)
        return True


def _start_pending() -> None:
    """Start waiting jobs while fewer than :func:`max_jobs` run."""
    while True:
        with _JOBS_LOCK:
            running = sum(job.poll() is None for job in _JOBS.values())
            if not _PENDING or running >= max_jobs():
                return
            key = _PENDING.pop(0)
        if _start_job(*key) is None:
            _FAILED.add(key)


@atexit.register
def _start_waiting_at_exit() -> None:
    """Start the jobs still waiting their turn: this process no longer needs the cores,
    and the next process then starts warm (they take turns under the group locks)."""
    with _JOBS_LOCK:
        waiting = list(_PENDING)
        _PENDING.clear()
    for key in waiting:
        _start_job(*key)


def _start_job(form: str, dtype: str):
    """Start the detached process that compiles ``form`` for ``dtype`` into the cache."""
    import numba

    global _ANNOUNCED
    env = dict(os.environ, NUMBACONV_BACKGROUND_COMPILE="0")
    if numba.config.CACHE_DIR:
        env["NUMBA_CACHE_DIR"] = numba.config.CACHE_DIR
    try:
        job = subprocess.Popen([sys.executable, "-m", "numbaconv._warm", form, dtype],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    except OSError as exc:
        log.warning("numbaconv: could not start a background compile (%s)", exc)
        return None
    with _JOBS_LOCK:
        _JOBS[(form, dtype)] = job
    if not _ANNOUNCED:
        _ANNOUNCED = True
        log.warning("numbaconv: compiling the %s kernels for %s in a background process; "
                    "until they are ready, calls run on NumPy/SciPy (slower). Compiled "
                    "kernels are cached for later processes; `python -m numbaconv warmup` "
                    "compiles them all ahead of time.", form, dtype)
    else:
        log.info("numbaconv: compiling the %s kernels for %s in the background", form, dtype)
    return job


# --- the stale-cache guard ---------------------------------------------------------------

def fingerprint() -> str:
    """A hash of what numbaconv's compiled kernels depend on beyond each file's own
    timestamp: numbaconv's and Numba's versions, every kernel source and the compile
    options in ``config``."""
    import numba

    from ._version import __version__

    h = hashlib.sha256(f"{__version__} {numba.__version__} "
                       f"{sorted(config.FASTMATH)}".encode())
    for path in sorted(Path(__file__).with_name("_kernels").glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _guard_stale_cache(disp) -> None:
    """Once per process: drop numbaconv's cached kernels in ``disp``'s cache directory
    if they were made from other sources or versions than this process's."""
    global _GUARDED
    if _GUARDED:
        return
    _GUARDED = True
    try:
        cache_dir = Path(disp.stats.cache_path)
    except (AttributeError, TypeError):
        return
    stamp = cache_dir / "numbaconv.fingerprint"
    current = fingerprint()
    try:
        if stamp.read_text() == current:
            return
    except OSError:
        pass
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for module in Path(__file__).with_name("_kernels").glob("*.py"):
            for old in glob.glob(str(cache_dir / f"{module.stem}.*.nb[ic]")):
                os.remove(old)
        tmp = stamp.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(current)
        os.replace(tmp, stamp)
    except OSError:
        pass  # a read-only cache: Numba's own checks still apply
