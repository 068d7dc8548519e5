"""asv ``track_*`` benchmarks: numbaconv's time over PyTorch's and over SciPy's, both
measured in the same process, in turns.

Why ratios: absolute times on a shared machine move by 20-50% from one run to the next
(other jobs on the cores, frequency scaling, a neighbour's use of the caches), more
than the regressions worth catching, and ``time_*`` results then flag changes nobody
made. Both libraries' times move together, so their ratio cancels the machine's speed:
``track_*`` answers "how fast against the reference library", which a commit changes
and the machine does not. ``asv continuous --bench track_ BASE HEAD`` compares it
between two commits (see README.md, "Performance").

How a ratio is measured: ``setup`` builds both calls, checks that they compute the same
values, and warms them up (numbaconv compiling its kernels in the foreground). The
``track_*`` method then takes the two libraries in turns, ``ROUNDS`` rounds with the
order alternating (A B, B A, A B, ...); each turn is one untimed call and then the
median of at least ``CALLS`` calls, after a ``PAUSE`` that lets the other library's
idle threads stop spinning. The value is the median of numbaconv's turns over the
median of the peer's: < 1 means numbaconv is faster. Both libraries use Numba's thread
count (``torch.set_num_threads``, ``scipy.fft.set_workers``).

PyTorch (``torch.nn.functional.conv*d``, no_grad) on a handful of ``numbaconv.bench``
cases, one of each kind; skipped (asv's ``NotImplementedError`` in setup) where torch
does not import. SciPy (a dependency, so always there) on the single-channel
large-kernel cases, where ``scipy.signal``'s FFT convolutions are what a user would
call instead: ``fftconvolve`` for the image, ``oaconvolve`` (overlap-add) for the long
signal, each with ``mode="same"`` on the unpadded input.

Run from asv_bench/: ``asv run --python=same --quick --bench track_``.
"""

import time

import numpy as np

import numbaconv
from numbaconv._compile import compiling_in_foreground
from numbaconv.bench import SUITE

ROUNDS = 7
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
    median time of at least CALLS calls and TURN_SECONDS."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < CALLS or (time.perf_counter() - start < TURN_SECONDS
                                 and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def interleaved_ratio(ours, theirs, rounds=ROUNDS):
    """median(``ours``' turns) / median(``theirs``' turns), the turns interleaved."""
    mine, peer = [], []
    for r in range(rounds):
        order = [(ours, mine), (theirs, peer)]
        for fn, out in order[::-1] if r % 2 else order:
            time.sleep(PAUSE)
            out.append(_turn(fn))
    return round(float(np.median(mine) / np.median(peer)), 4)


def _check_same(ours, theirs, name):
    """Both calls compute the same values (float32 tolerance, relative to the scale),
    so that the ratio compares the same work."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    scale = max(1.0, float(np.abs(b).max()))
    if a.shape != b.shape or float(np.abs(a - b).max()) > 1e-3 * scale:
        raise AssertionError(f"{name}: numbaconv and the peer disagree")


class RatioToTorch:
    """numbaconv.conv time / torch.nn.functional.conv*d time (float32, with bias)."""

    params = [TORCH_CASES]
    param_names = ["case"]
    unit = "ratio"
    timeout = 300

    def setup(self, name):
        try:
            # imported here, so that only these benchmarks' processes load it, and
            # before numbaconv's first kernel sets GOMP_SPINCOUNT for Numba's OpenMP
            import torch
        except ImportError:
            raise NotImplementedError("PyTorch is not installed") from None
        case = _CASES[name]
        x, w, b = case.arrays()
        torch.set_num_threads(_threads())
        conv = getattr(torch.nn.functional, f"conv{len(case.weight_shape) - 2}d")
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))

        def theirs():
            with torch.no_grad():
                return conv(tx, tw, tb, **case.kwargs)

        def ours():
            return numbaconv.conv(x, w, b, **case.kwargs)

        with compiling_in_foreground():  # compile (or load) the kernels, here
            _check_same(ours(), theirs().numpy(), name)
        for _ in range(2):
            ours(), theirs()
        self.ours, self.theirs = ours, theirs

    def track_over_torch(self, name):
        return interleaved_ratio(self.ours, self.theirs)


class RatioToScipy:
    """numbaconv.conv time / scipy.signal time on the single-channel large kernels
    (float32, no bias, "same" output)."""

    params = [sorted(SCIPY_CASES)]
    param_names = ["case"]
    unit = "ratio"
    timeout = 300

    def setup(self, name):
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
        self.ours, self.theirs = ours, theirs

    def track_over_scipy(self, name):
        return interleaved_ratio(self.ours, self.theirs)
