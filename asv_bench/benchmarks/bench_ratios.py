"""asv ``track_*`` benchmarks: numbaconv's time over PyTorch's and over SciPy's,
measured in the same run, in turns.

Why ratios: absolute times on a shared machine move by 20-50% from one run to the next
(other jobs on the cores, frequency scaling, a neighbour's use of the caches), more
than the regressions worth catching, and ``time_*`` results then flag changes nobody
made. Both libraries' times move together, so their ratio cancels the machine's speed:
``track_*`` answers "how fast against the reference library", which a commit changes
and the machine does not. ``asv continuous --bench track_ BASE HEAD`` compares it
between two commits (see README.md, "Performance").

Why several processes: a call's time also moves 20-50% from one process to the next
(where its arrays land in memory and cache), and that does not cancel within one
process. Each value is therefore the median over ``PROCESSES`` independent measurements,
each in fresh processes. How one measurement of a ratio to PyTorch is made: as
``bench --peers`` does, each library in a worker process of its own, the workers taking
turns for ``TORCH_ROUNDS`` rounds, the value the median of the rounds' ratios
(:class:`RatioToTorch`). How one measurement of a ratio to SciPy is made (SciPy has no
thread pool to fight Numba's, so one process holds both; this file run as a script):
build both calls, check that they compute the same values, and warm them up (numbaconv
compiling its kernels in the foreground); then take the two libraries in turns,
``ROUNDS`` rounds with the order alternating (A B, B A, A B, ...); each turn is one
untimed call and then the fastest of at least ``CALLS`` calls, after a ``PAUSE`` that
lets the other library's idle threads stop spinning. The value is the median over
rounds of the round's numbaconv turn over its peer turn: < 1 means numbaconv is faster.
Both set glibc to keep freed memory (``numbaconv.bench.steady_allocator``, as
``bench --peers``), so neither pays the page faults of fresh outputs. Both libraries use
Numba's thread count (``torch.set_num_threads``, ``scipy.fft.set_workers``).

PyTorch (``torch.nn.functional.conv*d``, no_grad) on a handful of ``numbaconv.bench``
cases, one of each kind; skipped (asv's ``NotImplementedError`` in setup) where torch
does not import. SciPy (a dependency, so always there) on the single-channel
large-kernel cases, where ``scipy.signal``'s FFT convolutions are what a user would
call instead: ``fftconvolve`` for the image, ``oaconvolve`` (overlap-add) for the long
signal, each with ``mode="same"`` on the unpadded input.

Run from asv_bench/: ``asv run --python=same --quick --bench track_``.
"""

import json
import subprocess
import sys
import time

import numpy as np

import numbaconv
from numbaconv._compile import compiling_in_foreground
from numbaconv.bench import SUITE, steady_allocator

PROCESSES = 5  # independent measurements (fresh processes each) per value
TORCH_ROUNDS = 3  # rounds of worker turns per measurement against PyTorch
ROUNDS = 11  # rounds of turns per measurement against SciPy
CALLS = 3  # timed calls per turn, at least ...
TURN_SECONDS = 0.02  # ... and at least this long (at most 50 calls)
PAUSE = 0.2  # seconds before each turn

_CASES = {c.name: c for c in SUITE}
# One layer of each kind: dense 3x3, 1x1, depthwise, strided stem, 1D, 3D.
TORCH_CASES = ["r50_3x3_56", "r50_1x1_56", "mbv2_dw3", "resnet_conv1", "textcnn", "c3d"]
SCIPY_CASES = {"img_k63": "fftconvolve", "fir_1025": "oaconvolve"}


def _threads():
    import numba

    return numba.get_num_threads()


def _turn(fn):
    """One turn: an untimed call (the thread pool wakes up after the pause), then the
    fastest of at least CALLS calls and TURN_SECONDS (the least disturbed by other
    work on the machine)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < CALLS or (time.perf_counter() - start < TURN_SECONDS
                                 and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def interleaved_ratio(ours, theirs, rounds=ROUNDS):
    """The median over rounds of each round's ``ours`` turn over its ``theirs`` turn,
    the order alternating: a round's two turns see the same state of the machine,
    which the ratio cancels (the ratio of the two medians moved up to 30% between runs
    of one commit here)."""
    ratios = []
    for r in range(rounds):
        turns = {}
        for fn in (theirs, ours) if r % 2 else (ours, theirs):
            time.sleep(PAUSE)
            turns[fn] = _turn(fn)
        ratios.append(turns[ours] / turns[theirs])
    return round(float(np.median(ratios)), 4)


def _check_same(ours, theirs, name):
    """Both calls compute the same values (float32 tolerance, relative to the scale),
    so that the ratio compares the same work."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    scale = max(1.0, float(np.abs(b).max()))
    if a.shape != b.shape or float(np.abs(a - b).max()) > 1e-3 * scale:
        raise AssertionError(f"{name}: numbaconv and the peer disagree")


class RatioToTorch:
    """numbaconv.conv time / torch.nn.functional.conv*d time (float32, with bias), each
    library in a worker process of its own, as ``bench --peers`` measures
    (``numbaconv._peers.measure``): in one process, PyTorch's and Numba's thread pools
    spin against each other, and the ratio of the same commit moved by 15-55% between
    two runs here (mbv2_dw3 0.56 and 0.86). The median over ``PROCESSES`` pairs of
    fresh workers."""

    params = [TORCH_CASES]
    param_names = ["case"]
    unit = "ratio"
    timeout = 600

    def setup(self, name):
        from numbaconv import _peers

        if not _peers.available("torch"):
            raise NotImplementedError("PyTorch is not installed")

    def track_over_torch(self, name):
        from numbaconv import _peers

        def measured():
            result = _peers.measure("forward", [name], rounds=TORCH_ROUNDS,
                                    libraries=("torch",), progress=False)
            return _peers.ratios(result)[name]["torch"]

        return round(float(np.median([measured() for _ in range(PROCESSES)])), 4)


def scipy_calls(name):
    """numbaconv's and SciPy's calls on the case ``name``, checked to compute the same
    values and warmed up."""
    import scipy.fft
    import scipy.signal

    case = _CASES[name]
    x, w, _ = case.arrays()
    k = w[0, 0]
    flipped = np.ascontiguousarray(k[(slice(None, None, -1),) * k.ndim])
    convolve = getattr(scipy.signal, SCIPY_CASES[name])
    threads = _threads()

    def theirs():  # convolution with the flipped kernel: conv's correlation
        with scipy.fft.set_workers(threads):
            return convolve(x[0, 0], flipped, mode="same")

    def ours():
        return numbaconv.conv(x, w, None, **case.kwargs)

    with compiling_in_foreground():
        _check_same(ours()[0, 0], theirs(), name)
    for _ in range(2):
        ours(), theirs()
    return ours, theirs


def scipy_ratio_in_new_process(name):
    """One measurement of the ratio to SciPy on ``name``: this file run as a script, in a
    fresh process."""
    done = subprocess.run([sys.executable, __file__, name], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


class RatioToScipy:
    """numbaconv.conv time / scipy.signal time on the single-channel large kernels
    (float32, no bias, "same" output): the median over ``PROCESSES`` fresh processes,
    each alternating the two libraries for ``ROUNDS`` rounds."""

    params = [sorted(SCIPY_CASES)]
    param_names = ["case"]
    unit = "ratio"
    timeout = 300

    def setup(self, name):
        scipy_calls(name)  # fails here, not in the processes, if they disagree

    def track_over_scipy(self, name):
        return round(float(np.median(
            [scipy_ratio_in_new_process(name) for _ in range(PROCESSES)])), 4)


if __name__ == "__main__":  # one measurement: python bench_ratios.py CASE
    steady_allocator()
    print(json.dumps(interleaved_ratio(*scipy_calls(sys.argv[1]))))
