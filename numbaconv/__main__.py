"""Command line: ``python -m numbaconv demo | bench | explain | warmup | tune | volume``."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _print_matrix(title, m):
    print(title)
    for row in np.atleast_2d(m):
        print("  " + " ".join(f"{v:5g}" for v in row))


def demo() -> None:
    """The 5x5 horizontal-edge example, ResNet-50's first layer counts, one timed conv2d."""
    from . import conv2d, count_macs, count_params
    from ._compile import background_jobs
    from .bench import median_time

    x = np.zeros((5, 5))
    x[2:] = 1
    k = np.array([[-1.0, -1, -1], [0, 0, 0], [1, 1, 1]])
    y = conv2d(x[None, None], k[None, None])[0, 0]
    _print_matrix("input (5x5):", x)
    _print_matrix("kernel (3x3, horizontal edges):", k)
    _print_matrix("output (3x3):", y)

    in_shape, w_shape = (1, 3, 224, 224), (64, 3, 7, 7)
    macs = count_macs(in_shape, w_shape, stride=2, padding=3)
    print("\nResNet-50 conv1 (3->64, 7x7, stride 2, padding 3, 224x224):")
    print(f"  parameters {count_params(w_shape):,}   MACs {macs:,}")

    rng = np.random.default_rng(0)
    xi = rng.standard_normal(in_shape, dtype=np.float32)
    wi = rng.standard_normal(w_shape, dtype=np.float32)
    t0 = time.perf_counter()
    conv2d(xi, wi, stride=2, padding=3)
    first = time.perf_counter() - t0
    t = median_time(lambda: conv2d(xi, wi, stride=2, padding=3))
    print(f"  float32 conv2d: {t * 1e3:.2f} ms median ({2 * macs / t / 1e9:.1f} GFLOP/s); "
          f"first call {first:.2f} s (includes loading the kernel)")
    if any(background_jobs().values()):
        print("  (timed on NumPy while its kernel compiles in a background process, which "
              "caches it: run the demo again for the compiled speed, or `python -m "
              "numbaconv warmup` to compile every kernel)")


def warmup() -> None:
    """Compile every kernel form for float32 and float64 into Numba's on-disk cache.

    One worker process per kernel group (``_registry.GROUPS``: no two write one cache
    index), as many at once as there are cores; their forms' times are printed group
    by group.
    """
    import os
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from ._registry import DTYPES, FORMS, GROUPS

    def run_group(group):
        forms = [name for name, form in FORMS.items() if form.group == group]
        return subprocess.run([sys.executable, "-m", "numbaconv._warm", *forms, *DTYPES],
                              capture_output=True, text=True)

    t0 = time.perf_counter()
    workers = max(1, min(len(GROUPS), os.cpu_count() or 1))
    failed = []
    with ThreadPoolExecutor(workers) as pool:  # GROUPS: the slowest first
        for group, result in zip(GROUPS, pool.map(run_group, GROUPS)):
            for line in result.stdout.splitlines():
                form, dtype, seconds = line.split()
                print(f"  {form:<17} {dtype:<8} {float(seconds):6.2f} s")
            if result.returncode:
                failed.append((group, result.stderr[-2000:]))
    print(f"  {'all':<17} {'':<8} {time.perf_counter() - t0:6.2f} s "
          f"({workers} worker processes)")
    if failed:
        raise SystemExit("warmup failed: " + "; ".join(f"{g}: {e}" for g, e in failed))


def latency() -> None:
    """A new user's first calls, per layer kind: first-call time, time to full speed and
    the warm-cache first call, each in fresh processes."""
    from .bench import cold_start, format_cold_start

    print(format_cold_start(cold_start()))


def compile_report() -> None:
    """Each kernel form's compile time, per kernel, in fresh processes (float32)."""
    from .bench import compile_times, format_compile_times

    print(format_compile_times(compile_times()))


def bench(compare: bool, cases=None, methods=None) -> None:
    """Time the benchmark suite on every path (or ``methods``); with ``compare``, also
    PyTorch and SciPy."""
    import os

    from .bench import PATHS, SUITE, format_table, run_suite, steady_allocator

    methods = tuple(methods or PATHS + ("auto",))
    bad = sorted(set(methods) - set(PATHS + ("auto",)))
    if bad:
        raise SystemExit(f"--methods: unknown method(s) {', '.join(bad)}; valid: "
                         f"{', '.join(PATHS + ('auto',))}")

    selected = SUITE
    if cases:
        names = {c.name for c in SUITE}
        unknown = sorted(set(cases) - names)
        if unknown:
            raise SystemExit(f"--cases: unknown case(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(c.name for c in SUITE)}")
        selected = tuple(c for c in SUITE if c.name in cases)
    steady = steady_allocator()
    rows = run_suite(selected, compare=compare, methods=methods)
    print(format_table(rows, methods))
    if steady:
        print("(glibc told to keep freed memory, so neither library's times include the "
              "page faults of fresh allocations)")
    if os.environ.get("OPENBLAS_CORETYPE"):
        print(f"note: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} forces OpenBLAS's "
              "kernels for that CPU, which may be slower than the native ones (im2col)")
    if compare and not any(r.get("torch") for r in rows):
        print("PyTorch is not installed: pip install torch to compare")


def _check_bench_args(what: str, valid, cases, rounds) -> None:
    """SystemExit for ``--cases`` naming no case of ``valid`` or ``--rounds`` < 1."""
    unknown = sorted(set(cases or ()) - set(valid))
    if unknown:
        raise SystemExit(f"--cases: unknown {what} case(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(valid)}")
    if rounds is not None and rounds < 1:
        raise SystemExit(f"--rounds={rounds} must be at least 1")


def _write_json(json_file, result) -> None:
    if json_file:
        import json

        with open(json_file, "w") as f:
            json.dump(result, f, indent=1)


def peers_bench(entry: str, cases=None, rounds=None, json_file=None) -> dict:
    """Time ``entry`` (forward, backward, transpose, layout or float64) against the installed
    peers, each library in its own worker process (see ``numbaconv._peers``); return
    the ratios' plot panel (``numbaconv._plot``)."""
    from . import _peers
    from ._plot import peers_panel

    _check_bench_args(entry, [c.name for c in _peers.SUITES[entry]], cases, rounds)
    result = _peers.measure(entry, cases, rounds or _peers.ROUNDS)
    print(_peers.format_result(result))
    _write_json(json_file, result)
    return peers_panel(result)


def signal_bench(cases=None, rounds=None, json_file=None) -> dict:
    """Time numbaconv.signal.correlate against SciPy's correlate, fftconvolve and
    oaconvolve (see ``numbaconv._signal_bench``); return the ratios' plot panel."""
    from . import _signal_bench
    from .bench import steady_allocator

    _check_bench_args("signal", [c.name for c in _signal_bench.CASES], cases, rounds)
    steady_allocator()
    result = _signal_bench.measure(cases, rounds or _signal_bench.ROUNDS)
    print(_signal_bench.format_result(result))
    _write_json(json_file, result)
    return _signal_bench.ratio_panel(result)


def layers_bench(cases=None, rounds=None, json_file=None) -> dict:
    """Time layer objects' forward calls against the functional calls, in one process
    (see ``numbaconv._layer_bench``); return the ratios' plot panel."""
    from . import _layer_bench, _peers

    _check_bench_args("layers", [c.name for c in _peers.FORWARD], cases, rounds)
    result = _layer_bench.measure(cases, rounds or _layer_bench.ROUNDS)
    print(_layer_bench.format_result(result))
    _write_json(json_file, result)
    return _layer_bench.ratio_panel(result)


# The benches that report ratios (``bench --peers`` and its kin), in the order they run.
RATIO_BENCHES = ("peers", "backward", "transpose", "layout", "float64", "layers", "signal")
_RATIO_FLAGS = ", ".join(f"--{name}" for name in RATIO_BENCHES)


def ratio_benches(args) -> None:
    """``bench`` with one of :data:`RATIO_BENCHES` (``--peers``, ...), and
    ``--plot FILE.png``: with one of those, the plot of its ratios; alone, the forward
    peers and the signal functions against SciPy, drawn in one figure (the README's)."""
    if args.plot:
        from ._plot import plot_ratios, require_matplotlib

        require_matplotlib()  # before the measurement, not after it
    entries = [e for e in RATIO_BENCHES if getattr(args, e)] or ["peers", "signal"]
    for option in ("cases", "json"):
        if len(entries) > 1 and getattr(args, option):
            raise SystemExit(f"--{option}: name one of {_RATIO_FLAGS} with it")
    panels = []
    for entry in entries:
        if entry == "signal":
            panels.append(signal_bench(args.cases, args.rounds, args.json))
        elif entry == "layers":
            panels.append(layers_bench(args.cases, args.rounds, args.json))
        else:
            panels.append(peers_bench("forward" if entry == "peers" else entry,
                                      args.cases, args.rounds, args.json))
    if args.plot:
        print(f"plot: {plot_ratios(panels, args.plot)}")


def _ints(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of ints") from None


def _int_or_ints(text: str):
    if text in ("same", "valid"):
        return text
    values = _ints(text)
    return values[0] if len(values) == 1 else values


def explain_cli(args) -> None:
    """Print the dispatcher's reasoning for the shapes given on the command line."""
    from . import explain

    try:
        print(explain(args.input, args.weight, stride=args.stride, padding=args.padding,
                      dilation=args.dilation, groups=args.groups, dtype=args.dtype))
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"error: {exc}") from None


def tune_cli() -> None:
    """Measure the cost model's constants on this machine and store them."""
    from . import tune

    result = tune(verbose=True)
    for group, factor in result["factors"].items():
        print(f"  {group:<12} x{factor:.2f} of the default rates")
    print(f"saved to {result['path']}")


def main(argv=None) -> int:
    """Entry point of ``python -m numbaconv`` and the ``numbaconv`` console script."""
    parser = argparse.ArgumentParser(prog="numbaconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="the 5x5 edge example, layer counts and one timed conv2d")
    b = sub.add_parser("bench", help="time the benchmark suite")
    what = b.add_mutually_exclusive_group()
    what.add_argument("--compare", action="store_true", help="also time PyTorch (ratios)")
    what.add_argument("--latency", action="store_true",
                      help="instead, time first calls and the time to full speed in "
                           "fresh processes")
    what.add_argument("--compile", action="store_true",
                      help="instead, time each kernel form's compile in a fresh process")
    what.add_argument("--peers", action="store_true",
                      help="instead, time the extended forward suite against PyTorch "
                           "(NCHW, channels_last) and ONNX Runtime, each library in its "
                           "own process")
    what.add_argument("--backward", action="store_true",
                      help="the same for conv_backward against PyTorch's")
    what.add_argument("--transpose", action="store_true",
                      help="the same for conv_transpose* against PyTorch and ONNX Runtime")
    what.add_argument("--layout", action="store_true",
                      help="the forward suite with layout='channels_last' against "
                           "numbaconv channels-first and PyTorch channels_last")
    what.add_argument("--float64", action="store_true",
                      help="the forward suite in float64 against PyTorch NCHW's float64, "
                           "each library in its own process")
    what.add_argument("--layers", action="store_true",
                      help="the forward suite with layer objects (Conv1d/2d/3d, which keep "
                           "the weight's transform) against the functional call, in one "
                           "process")
    what.add_argument("--signal", action="store_true",
                      help="instead, time numbaconv.signal.correlate against SciPy's "
                           "correlate, fftconvolve and oaconvolve")
    b.add_argument("--cases", type=lambda t: t.split(","),
                   help="comma-separated case names (default: the whole suite)")
    b.add_argument("--methods", type=lambda t: t.split(","),
                   help="comma-separated paths and/or auto (default: all of them)")
    b.add_argument("--rounds", type=int, help=f"{_RATIO_FLAGS}: rounds (default 5)")
    b.add_argument("--json", help=f"{_RATIO_FLAGS}: also write the per-round times to "
                                  "this file")
    b.add_argument("--plot", metavar="FILE.png",
                   help=f"draw the ratios of one of {_RATIO_FLAGS} as bars into this PNG; "
                        "alone, run --peers and --signal and draw both (needs matplotlib: "
                        "the plot extra)")
    e = sub.add_parser("explain", help="print the dispatcher's choice and estimates")
    e.add_argument("--input", type=_ints, required=True, help="N,C,*spatial")
    e.add_argument("--weight", type=_ints, required=True, help="C_out,C_in/groups,*kernel")
    e.add_argument("--stride", type=_int_or_ints, default=1)
    e.add_argument("--padding", type=_int_or_ints, default=0, help="ints, same or valid")
    e.add_argument("--dilation", type=_int_or_ints, default=1)
    e.add_argument("--groups", type=int, default=1)
    e.add_argument("--dtype", default="float32")
    sub.add_parser("warmup", help="compile and cache every kernel")
    sub.add_parser("tune", help="measure the cost model's constants on this machine")
    v = sub.add_parser("volume", help="convolve a larger-than-memory zarr volume through "
                                      "dask (needs the dask extra)")
    v.add_argument("--gib", type=float, default=1.0, help="input size in GiB (default 1)")
    v.add_argument("--dir", default="numbaconv-volume",
                   help="where input.zarr and output.zarr go (default ./numbaconv-volume)")
    v.add_argument("--chunk", type=int, default=128, help="chunk edge (default 128)")
    v.add_argument("--kernel", type=int, default=5, help="kernel edge (default 5)")
    v.add_argument("--scheduler", default="threads",
                   choices=["threads", "processes", "sync", "distributed"])
    v.add_argument("--workers", type=int, default=(os.cpu_count() or 1) + 1,
                   help="dask threads or worker processes (default: the cores + 1)")
    v.add_argument("--compare", action="store_true",
                   help="also time the in-memory call on a 1 GiB sub-volume, and the "
                        "same zarr-to-zarr store without the convolution")
    v.add_argument("--keep", action="store_true", help="keep output.zarr")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo()
    elif args.command == "bench" and args.latency:
        latency()
    elif args.command == "bench" and args.compile:
        compile_report()
    elif args.command == "bench" and (args.plot or any(getattr(args, name)
                                                       for name in RATIO_BENCHES)):
        ratio_benches(args)
    elif args.command == "bench":
        bench(args.compare, args.cases, args.methods)
    elif args.command == "explain":
        explain_cli(args)
    elif args.command == "tune":
        tune_cli()
    elif args.command == "volume":
        from ._volume import run

        return run(args.dir, args.gib, args.chunk, args.kernel, args.scheduler,
                   args.workers, args.compare, args.keep)
    else:
        warmup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
