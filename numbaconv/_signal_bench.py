"""``python -m numbaconv bench --signal``: numbaconv.signal.correlate against SciPy.

Each case is a float32 ``mode="same"`` correlation, timed for numbaconv and for SciPy's
candidates: ``scipy.signal.correlate(method="direct")`` (where its estimated time is
under ``DIRECT_LIMIT_S``), ``fftconvolve`` and ``oaconvolve`` (with the reversed kernel:
the same result). Every runner is timed once per round (a median after warm-up,
:func:`numbaconv.bench.median_time`), in a rotating order over the rounds, and a case's
ratio is the median over rounds of numbaconv's time over SciPy's fastest in that round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bench import geomean

ROUNDS = 5
# scipy.signal.correlate(method="direct") runs near these rates here (np.correlate in
# 1-D, _correlateND otherwise); over DIRECT_LIMIT_S estimated it is not timed.
DIRECT_MACS_PER_S = {1: 4e9, 2: 5e7, 3: 5e7}
DIRECT_LIMIT_S = 2.0


@dataclass(frozen=True)
class SignalCase:
    """One correlation: ``correlate(x, k, mode="same")`` of float32 arrays."""

    name: str
    kind: str  # "large kernel" or "small kernel"
    shape: tuple
    kernel: tuple

    @property
    def macs(self) -> int:
        return math.prod(self.shape) * math.prod(self.kernel)

    def arrays(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        return (rng.standard_normal(self.shape, dtype=np.float32),
                rng.standard_normal(self.kernel, dtype=np.float32))


CASES = (
    SignalCase("fir_1025", "large kernel", (1_000_000,), (1025,)),
    SignalCase("img_k63", "large kernel", (1024, 1024), (63, 63)),
    SignalCase("vol_k15", "large kernel", (128, 128, 128), (15, 15, 15)),
    SignalCase("fir_7", "small kernel", (1_000_000,), (7,)),
    SignalCase("img_k3", "small kernel", (1024, 1024), (3, 3)),
    SignalCase("img_k5", "small kernel", (1024, 1024), (5, 5)),
    SignalCase("vol_k3", "small kernel", (128, 128, 128), (3, 3, 3)),
)


def _runners(case, x, k):
    """name -> callable for numbaconv and each SciPy candidate of ``case``."""
    import scipy.signal

    from .signal import correlate

    flipped = np.ascontiguousarray(k[(slice(None, None, -1),) * k.ndim])
    runners = {"numbaconv": lambda: correlate(x, k, "same")}
    if case.macs / DIRECT_MACS_PER_S[len(case.shape)] <= DIRECT_LIMIT_S:
        runners["correlate"] = lambda: scipy.signal.correlate(x, k, "same", method="direct")
    runners["fftconvolve"] = lambda: scipy.signal.fftconvolve(x, flipped, "same")
    runners["oaconvolve"] = lambda: scipy.signal.oaconvolve(x, flipped, "same")
    return runners


def measure(cases=None, rounds=ROUNDS, progress=True):
    """Time ``cases`` (names; default all of :data:`CASES`) over ``rounds`` rounds.

    Returns a JSON-ready dict: ``rounds``, ``threads``, ``cases`` (name, kind, shapes)
    and ``times[case][runner]``, the list of per-round seconds. Each runner's result is
    checked against numbaconv's once (SPEC.md's float32 tolerance) before timing.
    """
    import numba
    import scipy.fft

    from ._compile import compiling_in_foreground
    from .bench import median_time

    selected = [c for c in CASES if cases is None or c.name in cases]
    threads = numba.get_num_threads()
    result = {"rounds": rounds, "threads": threads, "times": {},
              "cases": [dict(name=c.name, kind=c.kind, shape=c.shape, kernel=c.kernel)
                        for c in selected]}
    with scipy.fft.set_workers(threads):  # SciPy's FFTs on as many threads as ours
        for case in selected:
            if progress:
                print(f"  {case.name} ...", end="", flush=True)
            x, k = case.arrays()
            runners = _runners(case, x, k)
            with compiling_in_foreground():  # time the kernels, never the fallback
                ours = runners["numbaconv"]()
            for name, fn in runners.items():
                _check_equal(case.name, name, fn() if name != "numbaconv" else ours, ours)
            times = {name: [] for name in runners}
            names = list(runners)
            for r in range(rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    times[name].append(median_time(runners[name], repeats=5,
                                                   min_time=0.05))
            result["times"][case.name] = times
            if progress:
                print(" done", flush=True)
    return result


def _check_equal(case, name, y, ref):
    scale = max(1.0, float(np.max(np.abs(ref))))
    err = float(np.max(np.abs(y - ref)))
    if y.shape != ref.shape or err > 1e-4 * scale:
        raise RuntimeError(f"{case}: {name} differs from numbaconv.signal.correlate "
                           f"(shape {y.shape} vs {ref.shape}, max error {err:.3g})")


def ratios(result):
    """``{case: (ratio, fastest SciPy runner)}``: the median over rounds of numbaconv's
    time over SciPy's fastest in the same round, and the runner fastest most often."""
    out = {}
    for name, times in result["times"].items():
        scipy_names = [n for n in times if n != "numbaconv"]
        per_round = np.array([times[n] for n in scipy_names])
        best = per_round.min(axis=0)
        winners = [scipy_names[i] for i in per_round.argmin(axis=0)]
        out[name] = (float(np.median(np.divide(times["numbaconv"], best))),
                     max(set(winners), key=winners.count))
    return out


def ratio_panel(result):
    """The result as one panel for ``numbaconv._plot.plot_ratios``:
    ``{"title": ..., "cases": [(case_name, {"SciPy (best)": ratio}), ...]}``."""
    return {"title": "bench --signal (numbaconv.signal.correlate over SciPy's best of "
                     "correlate, fftconvolve, oaconvolve)",
            "cases": [(name, {"SciPy (best)": ratio}) for name, (ratio, _) in
                      ratios(result).items()]}


def format_result(result) -> str:
    """The table: per case numbaconv's and each SciPy runner's median ms, SciPy's
    fastest, the ratio; then the geomean per kind (large and small kernels)."""
    rat = ratios(result)
    runners = ("numbaconv", "correlate", "fftconvolve", "oaconvolve")
    head = (f"{'case':<10}{'shape':>18}{'kernel':>14}"
            + "".join(f"{r + ' ms':>16}" for r in runners) + f"{'fastest':>13}{'ratio':>8}")
    lines = [f"bench --signal: numbaconv.signal.correlate vs SciPy, float32, mode='same'; "
             f"median over {result['rounds']} rounds, {result['threads']} threads",
             head, "-" * len(head)]
    kinds = {}
    for case in result["cases"]:
        name = case["name"]
        times = result["times"].get(name)
        if times is None:
            continue
        line = (f"{name:<10}{'x'.join(map(str, case['shape'])):>18}"
                f"{'x'.join(map(str, case['kernel'])):>14}")
        for r in runners:
            line += f"{np.median(times[r]) * 1e3:>16.3f}" if r in times else f"{'skip':>16}"
        ratio, fastest = rat[name]
        lines.append(line + f"{fastest:>13}{ratio:>8.2f}")
        kinds.setdefault(case["kind"], []).append(ratio)
    lines.append("ratio = numbaconv / SciPy's fastest (< 1: numbaconv faster), the median "
                 "over rounds of the same round's ratio; correlate = method='direct' "
                 f"(skip: estimated over {DIRECT_LIMIT_S:g} s); fftconvolve, oaconvolve "
                 "with the reversed kernel")
    for kind, values in kinds.items():
        lines.append(f"  geomean {kind:<13} {geomean(values):.2f}  "
                     f"(max {max(values):.2f})")
    return "\n".join(lines)
