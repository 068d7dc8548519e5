"""Benchmark suite: numbaconv's paths timed in-process, optionally against PyTorch.

Each case is timed after warm-up (which also compiles the kernels) as the median of
several repeats. Absolute times drift on a shared machine; ratios measured in the same
run hold, so ``--compare`` reports each time as a ratio to PyTorch's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


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
    Case("r50_3x3_56", (1, 64, 56, 56), (64, 64, 3, 3), padding=1),
    Case("r50_3x3_14", (1, 256, 14, 14), (256, 256, 3, 3), padding=1),
    Case("r50_1x1_56", (1, 64, 56, 56), (256, 64, 1, 1)),
    Case("mbv2_dw3", (1, 144, 56, 56), (144, 1, 3, 3), padding=1, groups=144),
    Case("c3d", (1, 64, 16, 56, 56), (128, 64, 3, 3, 3), padding=1),
    Case("wavenet_d256", (1, 64, 16000), (64, 64, 2), dilation=256),
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

    Runs at least ``repeats`` times and at least ``min_time`` seconds in all.
    """
    fn()
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


def run_suite(cases=SUITE, compare: bool = False, methods=("direct",), progress=True):
    """Time every case; returns a list of result dicts (one per case)."""
    from . import conv, count_macs

    rows = []
    bar = _progress(len(cases)) if progress else None
    for case in cases:
        x, w, b = case.arrays()
        flops = 2 * count_macs(case.input_shape, case.weight_shape, case.stride,
                               case.padding, case.dilation, case.groups)
        row = {"case": case.name, "gflop": flops / 1e9}
        for method in methods:
            t = median_time(lambda: conv(x, w, b, **case.kwargs, method=method))
            row[method] = t
        if compare:
            torch_run = _torch_conv(case, x, w, b)
            row["torch"] = median_time(torch_run) if torch_run else None
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


def format_table(rows, methods=("direct",)) -> str:
    """The results as a fixed-width table: ms, GFLOP/s and, where measured, vs PyTorch."""
    has_torch = any(r.get("torch") for r in rows)
    head = f"{'case':<14}{'GFLOP':>8}"
    for m in methods:
        head += f"{m + ' ms':>13}{'GFLOP/s':>9}"
    if has_torch:
        head += f"{'torch ms':>10}{'GFLOP/s':>9}{'ratio':>7}"
    lines = [head, "-" * len(head)]
    ratios = []
    for r in rows:
        line = f"{r['case']:<14}{r['gflop']:>8.3f}"
        for m in methods:
            line += f"{r[m] * 1e3:>13.3f}{r['gflop'] / r[m]:>9.1f}"
        if has_torch:
            t = r.get("torch")
            if t:
                ratio = r[methods[0]] / t
                ratios.append(ratio)
                line += f"{t * 1e3:>10.3f}{r['gflop'] / t:>9.1f}{ratio:>7.2f}"
            else:
                line += f"{'-':>10}{'-':>9}{'-':>7}"
        lines.append(line)
    if ratios:
        geo = float(np.exp(np.mean(np.log(ratios))))
        lines.append(f"ratio = numbaconv {methods[0]} time / PyTorch time; geomean {geo:.2f}")
    return "\n".join(lines)


_FIRST_CALL = """
import sys, time
t0 = time.perf_counter()
import numpy as np
import numbaconv
t1 = time.perf_counter()
d, groups = int(sys.argv[1]), int(sys.argv[2])
x = np.ones((1, 8) + (12,) * d, np.float32)
w = np.ones((8, 8 // groups) + (3,) * d, np.float32)
numbaconv.conv(x, w, padding=1, groups=groups)
print(t1 - t0, time.perf_counter() - t1)
"""


def first_call_latency(cache_dir: str):
    """Import and first-call times of a fresh process, with a cold and then a warm cache.

    Each measurement runs in a new interpreter with ``NUMBA_CACHE_DIR=cache_dir`` (which
    should start empty); returns rows ``(kernel, d, cache, import_s, first_call_s)``.
    """
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    rows = []
    for cache in ("cold", "warm"):
        for kernel, groups in (("dense", 1), ("channel-wise", 8)):
            for d in (2, 1, 3):
                out = subprocess.run([sys.executable, "-c", _FIRST_CALL, str(d), str(groups)],
                                     env=env, capture_output=True, text=True, check=True)
                imp, first = map(float, out.stdout.split())
                rows.append((kernel, d, cache, imp, first))
    return rows
