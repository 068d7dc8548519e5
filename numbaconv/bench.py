"""Benchmark suite: numbaconv's paths timed in-process, optionally against PyTorch.

Each case is timed after warm-up (which also compiles the kernels) as the median of
several repeats, in rounds that take the paths (and PyTorch) in turn; the smallest
round counts. Absolute times drift on a shared machine; ratios measured in the same
run hold, so ``--compare`` reports each time as a ratio to PyTorch's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ._compile import compiling_in_foreground


@dataclass(frozen=True)
class Case:
    """One benchmark configuration (float32, batched, channels-first)."""

    name: str
    input_shape: tuple
    weight_shape: tuple
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def arrays(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(self.input_shape, dtype=np.float32)
        w = rng.standard_normal(self.weight_shape, dtype=np.float32)
        b = rng.standard_normal(self.weight_shape[0], dtype=np.float32)
        return x, w, b


SUITE = (
    # 2D
    Case("resnet_conv1", (1, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3),
    Case("r50_3x3_56", (1, 64, 56, 56), (64, 64, 3, 3), padding=1),
    Case("r50_1x1_56", (1, 64, 56, 56), (256, 64, 1, 1)),
    Case("r50_3x3_s2", (1, 128, 56, 56), (128, 128, 3, 3), stride=2, padding=1),
    Case("r50_3x3_14", (1, 256, 14, 14), (256, 256, 3, 3), padding=1),
    Case("r50_3x3_7", (1, 512, 7, 7), (512, 512, 3, 3), padding=1),
    Case("b8_3x3_56", (8, 64, 56, 56), (64, 64, 3, 3), padding=1),
    Case("mbv2_dw3", (1, 144, 56, 56), (144, 1, 3, 3), padding=1, groups=144),
    Case("replk_dw31", (1, 128, 28, 28), (128, 1, 31, 31), padding=15, groups=128),
    Case("img_k63", (1, 1, 1024, 1024), (1, 1, 63, 63), padding=31),
    Case("deeplab_d2", (1, 256, 28, 28), (256, 256, 3, 3), padding=2, dilation=2),
    # 1D
    Case("wavenet_d256", (1, 64, 16000), (64, 64, 2), dilation=256),
    Case("textcnn", (32, 300, 100), (100, 300, 5), padding=2),
    Case("fir_1025", (1, 1, 1_000_000), (1, 1, 1025), padding=512),
    # 3D
    Case("c3d", (1, 64, 16, 56, 56), (128, 64, 3, 3, 3), padding=1),
    Case("med_k5", (1, 1, 64, 64, 64), (8, 1, 5, 5, 5), padding=2),
    Case("vol_k15", (1, 1, 128, 128, 128), (1, 1, 15, 15, 15), padding=7),
)


def steady_allocator() -> bool:
    """Keep freed memory in the process (glibc only), so that neither library's timings
    include the page faults of fresh ``mmap``-ed outputs.

    Without it, whichever library happens to allocate first shifts glibc's adaptive mmap
    threshold and changes the other's times by up to 3x on this machine. Returns whether
    the setting was applied.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        big = 1 << 30
        return bool(libc.mallopt(M_MMAP_THRESHOLD, big) and libc.mallopt(M_TRIM_THRESHOLD, big))
    except (OSError, AttributeError):
        return False


def median_time(fn, repeats: int = 15, min_time: float = 0.2) -> float:
    """Median wall time of ``fn()`` in seconds, after two warm-up calls.

    Runs at least ``repeats`` times and at least ``min_time`` seconds in all; a call
    slower than a quarter of a second is repeated only 3 times, after one warm-up.
    """
    t0 = time.perf_counter()
    fn()
    if time.perf_counter() - t0 > 0.25:
        repeats, min_time = 3, 0.0
    else:
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 1000:
            break
    return float(np.median(times))


PATHS = ("direct", "im2col", "fft")
# A path estimated this many times slower than auto's choice (and over SKIP_SECONDS) is
# not timed: im2col on a 1024x1024 image with a 63x63 kernel would build 16 GB of columns.
SKIP_FACTOR = 25.0
SKIP_SECONDS = 0.5


def _import_torch_first() -> None:
    """Load PyTorch (if installed) before numbaconv's first kernel sets GOMP_SPINCOUNT
    for Numba's OpenMP, so that PyTorch's own OpenMP runtime keeps its defaults."""
    try:
        import torch  # noqa: F401
    except ImportError:
        pass


def _torch_conv(case: Case, x, w, b):
    try:
        import torch
    except ImportError:
        return None
    import numba

    torch.set_num_threads(numba.get_num_threads())
    conv = getattr(torch.nn.functional, f"conv{len(case.weight_shape) - 2}d")
    tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))

    def run():
        with torch.no_grad():
            return conv(tx, tw, tb, **case.kwargs)

    return run


def _scipy_best(case: Case, x, w, b):
    """Best time of scipy.signal's correlate / fftconvolve / oaconvolve on the same
    (pre-padded) data, for single-channel cases; ``(seconds, name)`` or None."""
    if case.weight_shape[:2] != (1, 1) or case.input_shape[:2] != (1, 1) or \
            case.stride != 1 or case.dilation != 1:
        return None
    import numba
    import scipy.fft
    import scipy.signal

    xp = np.pad(x[0, 0], case.padding)
    k = w[0, 0]
    flipped = np.ascontiguousarray(k[(slice(None, None, -1),) * k.ndim])
    candidates = {
        "correlate": lambda: scipy.signal.correlate(xp, k, mode="valid") + b[0],
        "fftconvolve": lambda: scipy.signal.fftconvolve(xp, flipped, mode="valid") + b[0],
        "oaconvolve": lambda: scipy.signal.oaconvolve(xp, flipped, mode="valid") + b[0],
    }
    best = None
    with scipy.fft.set_workers(numba.get_num_threads()):
        for name, fn in candidates.items():
            t = median_time(fn, repeats=5, min_time=0.1)
            if best is None or t < best[0]:
                best = (t, name)
    return best


ROUNDS = 3


def timed_rounds(runners, rounds=ROUNDS):
    """Time each callable of ``runners`` (name -> fn) in ``rounds`` rounds that take them
    in turn; each round's time is a median after warm-up (:func:`median_time`), and
    the result per name is the smallest round. Taking the paths in turn, rather than
    one after the other, keeps one path's after-effects (thread pools still spinning,
    caches full of its buffers) from always landing on the same neighbour. A runner
    slower than a quarter of a second runs in the first round only."""
    with compiling_in_foreground():  # time the kernels, never the NumPy fallback
        for fn in runners.values():
            fn()
    times = {name: [] for name in runners}
    for r in range(rounds):
        for name, fn in runners.items():
            if r and times[name][0] > 0.25:
                continue
            times[name].append(median_time(fn, repeats=5, min_time=0.05))
    return {name: min(ts) for name, ts in times.items()}


def run_suite(cases=SUITE, compare: bool = False, methods=PATHS + ("auto",),
              progress=True, rounds=ROUNDS):
    """Time every case on every path; returns a list of result dicts (one per case).

    Each dict holds ``case``, ``gflop``, one time in seconds per method (None when the
    path was skipped as hopeless, see ``SKIP_FACTOR``), ``choice`` (auto's path),
    ``estimates`` (the cost model's seconds per path) and, with ``compare``, ``torch``
    and ``scipy`` (``(seconds, function)``) where installed and applicable. Times come
    from :func:`timed_rounds`, PyTorch's taken in the same rounds as numbaconv's.
    """
    if compare:
        _import_torch_first()
    from . import conv, count_macs, explain

    rows = []
    bar = _progress(len(cases)) if progress else None
    for case in cases:
        x, w, b = case.arrays()
        flops = 2 * count_macs(case.input_shape, case.weight_shape, case.stride,
                               case.padding, case.dilation, case.groups)
        plan = explain(case.input_shape, case.weight_shape, **case.kwargs)
        estimates = {name: est[0] for name, est in plan.estimates.items()}
        row = {"case": case.name, "gflop": flops / 1e9, "choice": plan.choice,
               "estimates": estimates}
        limit = max(SKIP_SECONDS, SKIP_FACTOR * estimates[plan.choice])
        runners = {}
        for method in methods:
            if method != "auto" and estimates[method] > limit:
                row[method] = None
                continue
            runners[method] = (lambda m: lambda: conv(x, w, b, **case.kwargs, method=m))(
                method)
        if compare:
            torch_run = _torch_conv(case, x, w, b)
            if torch_run:
                runners["torch"] = torch_run
            else:
                row["torch"] = None
        row.update(timed_rounds(runners, rounds))
        if compare:
            row["scipy"] = _scipy_best(case, x, w, b)
        rows.append(row)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return rows


class _Plain:
    def __init__(self, total):
        self.total, self.done = total, 0

    def update(self, k):
        self.done += k
        print(f"\r  {self.done}/{self.total} cases", end="", flush=True)

    def close(self):
        print()


def _progress(total):
    try:
        from tqdm import tqdm
    except ImportError:
        return _Plain(total)
    return tqdm(total=total, unit="case", leave=False)


def geomean(values) -> float:
    """The geometric mean of positive ``values`` (NaN for none)."""
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def format_table(rows, methods=PATHS + ("auto",)) -> str:
    """The results as a fixed-width table, with summary lines.

    Columns: ms per method ("skip" where not timed), auto's choice and GFLOP/s,
    auto / fastest own path and, where measured, PyTorch's and SciPy's best time with
    auto's ratio to them.
    """
    has_torch = any(r.get("torch") for r in rows)
    has_scipy = any(r.get("scipy") for r in rows)
    head = f"{'case':<14}{'GFLOP':>8}" + "".join(f"{m + ' ms':>11}" for m in methods)
    head += f"  {'choice':<7}{'GFLOP/s':>8}{'/best':>7}"
    if has_torch:
        head += f"{'torch ms':>10}{'/torch':>8}"
    if has_scipy:
        head += f"{'scipy ms':>10}{'/scipy':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r['case']:<14}{r['gflop']:>8.3f}"
        for m in methods:
            line += f"{r[m] * 1e3:>11.3f}" if r.get(m) else f"{'skip':>11}"
        own = [r[m] for m in PATHS if r.get(m)]
        auto = r.get("auto")
        if auto:
            best = f"{auto / min(own):>7.2f}" if own else f"{'-':>7}"
            line += f"  {r['choice']:<7}{r['gflop'] / auto:>8.1f}{best}"
        if has_torch:
            t = r.get("torch")
            line += f"{t * 1e3:>10.3f}{auto / t:>8.2f}" if t and auto else f"{'-':>10}{'-':>8}"
        if has_scipy:
            sp = r.get("scipy")
            line += (f"{sp[0] * 1e3:>10.3f}{auto / sp[0]:>8.2f}" if sp and auto
                     else f"{'-':>10}{'-':>8}")
        lines.append(line)
    lines.append("/best = auto / fastest of direct, im2col, fft; /torch, /scipy = auto / "
                 "their time (scipy: best of correlate, fftconvolve, oaconvolve)")
    lines += summary_lines(rows)
    return "\n".join(lines)


DENSE = ("resnet_conv1", "r50_3x3_56", "r50_1x1_56", "r50_3x3_s2", "r50_3x3_14",
         "r50_3x3_7", "b8_3x3_56", "deeplab_d2", "wavenet_d256", "textcnn", "c3d", "med_k5")
DEPTHWISE = ("mbv2_dw3", "replk_dw31")
LARGE_KERNEL = ("img_k63", "fir_1025", "vol_k15")


def summary_lines(rows):
    """The issue's targets, as measured: ratios of auto against the references."""
    by = {r["case"]: r for r in rows}
    out = []
    dense = [by[n]["auto"] / by[n]["torch"] for n in DENSE
             if n in by and by[n].get("torch") and by[n].get("auto")]
    if dense:
        out.append(f"dense vs PyTorch: geomean {geomean(dense):.2f}, max {max(dense):.2f}")
    dw = [f"{n} {by[n]['auto'] / by[n]['torch']:.2f}" for n in DEPTHWISE
          if n in by and by[n].get("torch") and by[n].get("auto")]
    if dw:
        out.append("depthwise vs PyTorch: " + ", ".join(dw))
    lk = [f"{n} {by[n]['auto'] / by[n]['scipy'][0]:.2f}" for n in LARGE_KERNEL
          if n in by and by[n].get("scipy") and by[n].get("auto")]
    if lk:
        out.append("large kernels vs SciPy's best: " + ", ".join(lk))
    worst = [(r["auto"] / min(r[m] for m in PATHS if r.get(m)), r["case"]) for r in rows
             if r.get("auto") and any(r.get(m) for m in PATHS)]
    if worst:
        ratio, name = max(worst)
        out.append(f"dispatcher: auto / fastest own path at most {ratio:.2f} ({name})")
    return out


BACKWARD_SUITE = tuple(c for c in SUITE if c.name in ("r50_3x3_56", "mbv2_dw3", "c3d"))


_COLD_START = """
import json, sys, time
start = float(sys.argv[1])
t0 = time.time()
import numpy as np
import numbaconv
from numbaconv import _compile
t1 = time.time()
x_shape, w_shape, kwargs, dtype, seconds = json.loads(sys.argv[2])
x = np.random.default_rng(0).standard_normal(x_shape).astype(dtype)
w = np.random.default_rng(1).standard_normal(w_shape).astype(dtype)
calls, compiled = [], None
while True:
    a = time.time()
    numbaconv.conv(x, w, **kwargs)
    b = time.time()
    calls.append((b - start, b - a))
    if compiled is None and not any(_compile.background_jobs().values()):
        compiled = len(calls)
    if b - start > seconds or (compiled is not None and len(calls) >= compiled + 20):
        break
    time.sleep(max(0.0, 0.02 - (b - a)))
_compile.wait_for_jobs()
print(json.dumps(dict(interpreter=t0 - start, imp=t1 - t0, calls=calls)))
"""

# The layer kinds of a new user's first calls (``method="auto"``, float32 but the last).
COLD_START_CASES = (
    ("dense 3x3", (1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "float32"),
    ("1x1", (1, 64, 56, 56), (256, 64, 1, 1), {}, "float32"),
    ("stride 2", (1, 128, 56, 56), (128, 128, 3, 3), dict(stride=2, padding=1), "float32"),
    ("depthwise", (1, 144, 56, 56), (144, 1, 3, 3), dict(padding=1, groups=144),
     "float32"),
    ("1D", (1, 64, 16000), (64, 64, 3), dict(padding=1), "float32"),
    ("3D", (1, 16, 16, 32, 32), (32, 16, 3, 3, 3), dict(padding=1), "float32"),
    ("large kernel", (1, 1, 512, 512), (1, 1, 31, 31), dict(padding=15), "float32"),
    ("float64 3x3", (1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "float64"),
)
FULL_SPEED_FACTOR = 1.5


def _fresh_process(case, cache_dir, seconds, env=None):
    import json
    import os
    import subprocess
    import sys

    _, x_shape, w_shape, kwargs, dtype = case
    env = dict(os.environ if env is None else env, NUMBA_CACHE_DIR=cache_dir)
    start = time.time()
    out = subprocess.run([sys.executable, "-c", _COLD_START, repr(start),
                          json.dumps([x_shape, w_shape, kwargs, dtype, seconds])],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_start(cases=COLD_START_CASES, seconds: float = 40.0, progress=True):
    """A new user's first calls of each layer kind, each in a fresh process.

    Per case: a process with an empty ``NUMBA_CACHE_DIR`` imports numbaconv and calls
    ``conv`` every 20 ms for up to ``seconds`` (or until 20 calls after its background
    compile is done); then a second process with the now warm cache does the same.
    Returns rows ``dict(case, import_s, first_s, full_speed_s, warm_first_s, warm_ms,
    cold_ms_at_end)``: ``first_s`` is the first call's time, ``full_speed_s`` the time
    from the cold process's start until a call ran within ``FULL_SPEED_FACTOR`` of the
    warm process's median call, ``warm_first_s`` import plus first call with the warm
    cache.
    """
    import statistics
    import tempfile

    rows = []
    bar = _progress(2 * len(cases)) if progress else None
    for case in cases:
        with tempfile.TemporaryDirectory() as cache_dir:
            cold = _fresh_process(case, cache_dir, seconds)
            if bar:
                bar.update(1)
            warm = _fresh_process(case, cache_dir, 2.0)
            if bar:
                bar.update(1)
        warm_ms = statistics.median(d for _, d in warm["calls"][1:]) * 1e3
        full = next((t for t, d in cold["calls"] if d * 1e3 <= FULL_SPEED_FACTOR * warm_ms),
                    float("nan"))
        rows.append(dict(case=case[0], import_s=cold["interpreter"] + cold["imp"],
                         first_s=cold["calls"][0][1], full_speed_s=full,
                         warm_first_s=warm["interpreter"] + warm["imp"]
                         + warm["calls"][0][1], warm_ms=warm_ms,
                         cold_ms_at_end=statistics.median(
                             d for _, d in cold["calls"][-5:]) * 1e3))
    if bar:
        bar.close()
    return rows


def format_cold_start(rows) -> str:
    """The table of :func:`cold_start`."""
    lines = [f"{'layer kind':<14}{'import s':>9}{'1st call s':>11}{'full speed s':>13}"
             f"{'warm: import+1st s':>20}{'warm call ms':>13}",
             "-" * 80]
    for r in rows:
        lines.append(f"{r['case']:<14}{r['import_s']:>9.2f}{r['first_s']:>11.2f}"
                     f"{r['full_speed_s']:>13.1f}{r['warm_first_s']:>20.2f}"
                     f"{r['warm_ms']:>13.2f}")
    lines.append(f"(fresh processes, empty NUMBA_CACHE_DIR; 'full speed': from the process's "
                 f"start until a call ran within {FULL_SPEED_FACTOR}x of the warm-cache "
                 f"call)")
    return "\n".join(lines)


_COMPILE_TIMES = """
import json, sys, time
from numbaconv._warm import run_example
from numbaconv._kernels import col2im, direct, grad, im2col, winograd
form, dtype = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
run_example(form, dtype)
total = time.perf_counter() - t0
kernels = []
for module in (col2im, direct, grad, im2col, winograd):
    for name, fn in vars(module).items():
        if getattr(fn, "__module__", None) == module.__name__ and hasattr(fn, "signatures"):
            for sig in fn.signatures:
                timers = fn.get_metadata(sig).get("timers", {})
                kernels.append((module.__name__.rsplit(".", 1)[1] + "." + name,
                                timers.get("compiler_lock", 0.0),
                                timers.get("llvm_lock", 0.0)))
print(json.dumps(dict(total=total, kernels=kernels)))
"""


def compile_times(forms=None, dtype="float32"):
    """Where compile time goes: each kernel form compiled in a fresh process with an
    empty ``NUMBA_CACHE_DIR``. Returns ``{form: (seconds, [(kernel, compile_s, llvm_s),
    ...])}`` from Numba's ``get_metadata(sig)["timers"]`` (a kernel's time includes the
    helpers it compiles, which are listed too; cached helpers compiled by an earlier
    form of the same process are not)."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    from ._registry import FORMS

    results = {}
    for form in forms or FORMS:
        with tempfile.TemporaryDirectory() as cache_dir:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir,
                       NUMBACONV_BACKGROUND_COMPILE="0")
            out = subprocess.run([sys.executable, "-c", _COMPILE_TIMES, form, dtype],
                                 env=env, capture_output=True, text=True, check=True)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        results[form] = (data["total"], data["kernels"])
    return results


def format_compile_times(results) -> str:
    """The table of :func:`compile_times`."""
    lines = [f"{'form':<17}{'total s':>8}  kernels (compile s, of which LLVM s)"]
    for form, (total, kernels) in results.items():
        parts = ", ".join(f"{name} {c:.2f} ({llvm:.2f})" for name, c, llvm in
                          sorted(kernels, key=lambda k: -k[1]))
        lines.append(f"{form:<17}{total:>8.2f}  {parts}")
    lines.append("(each form in a fresh process with an empty cache: its first compile "
                 "also pays Numba's own start-up, about 0.3 s)")
    return "\n".join(lines)
