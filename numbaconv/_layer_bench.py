"""``bench --layers``: a layer object's forward call against the functional call.

Both are numbaconv, one thread pool, so they run in one process, alternating call by
call on the same arrays: a process's memory placement moved single cases by up to 10%
between two worker processes, more than the difference measured. Cases are the forward
suite of ``bench --peers`` (:data:`numbaconv._peers.FORWARD`).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ._peers import FORWARD
from .bench import geomean

ROUNDS = 5


def _calls(case):
    """The case's ``(layer call, functional call)`` on the same seeded arrays."""
    import numbaconv

    x, w, b = case.arrays("forward")
    layer = getattr(numbaconv, f"Conv{case.d}d")(
        w.shape[1] * case.groups, w.shape[0], w.shape[2:], case.stride, case.padding,
        case.dilation, case.groups)
    layer.weight, layer.bias = w, b
    kw = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
              groups=case.groups)
    return (lambda: layer(x)), (lambda: numbaconv.conv(x, w, b, **kw))


def _alternating(layer_call, functional_call, repeats, min_time):
    """Median seconds of each call, timed in turns, each first in every other turn
    (the second call of a turn found the caches warmer, by up to 3%)."""
    times = ([], [])
    start = time.perf_counter()
    while len(times[0]) < repeats or time.perf_counter() - start < min_time:
        order = (0, 1) if len(times[0]) % 2 == 0 else (1, 0)
        for i in order:
            t0 = time.perf_counter()
            (layer_call, functional_call)[i]()
            times[i].append(time.perf_counter() - t0)
    return float(np.median(times[0])), float(np.median(times[1]))


def measure(names=None, rounds=ROUNDS, progress=True) -> dict:
    """Per case, ``rounds`` rounds of the two calls' median times, after warm-up
    (kernels compiled in the foreground, never the fallback); ``dict(cases, times,
    rounds)``, ``times[case] = [(layer s, functional s), ...]``."""
    from ._compile import compiling_in_foreground
    from .bench import steady_allocator

    steady_allocator()
    cases = [c for c in FORWARD if names is None or c.name in names]
    calls = {c.name: _calls(c) for c in cases}
    with compiling_in_foreground():
        for layer_call, functional_call in calls.values():
            layer_call(), functional_call()
    times = {name: [] for name in calls}
    for r in range(rounds):
        for name, (layer_call, functional_call) in calls.items():
            times[name].append(_alternating(layer_call, functional_call, 5, 0.05))
        if progress:
            print(f"\r  layers: {r + 1}/{rounds} rounds    ", end="", flush=True,
                  file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return dict(cases=[dict(name=c.name, kind=c.kind) for c in cases], times=times,
                rounds=rounds)


def ratios(result) -> dict:
    """``{case: layer time / functional time}``, the median over rounds."""
    return {name: float(np.median([lt / ft for lt, ft in rows]))
            for name, rows in result["times"].items()}


def format_result(result) -> str:
    """The table: per case both median times and the ratio; geomeans per kind."""
    rat = ratios(result)
    head = f"{'case':<16}{'kind':<13}{'layer ms':>11}{'function ms':>13}{'ratio':>8}"
    lines = [f"bench --layers: a layer object's forward call over the functional call, "
             f"in one process, alternating; median over {result['rounds']} rounds",
             head, "-" * len(head)]
    kinds = {}
    for case in result["cases"]:
        name = case["name"]
        rows = np.array(result["times"][name])
        lines.append(f"{name:<16}{case['kind']:<13}{np.median(rows[:, 0]) * 1e3:>11.3f}"
                     f"{np.median(rows[:, 1]) * 1e3:>13.3f}{rat[name]:>8.2f}")
        kinds.setdefault(case["kind"], []).append(rat[name])
    lines.append("ratio < 1: the layer is faster (it keeps the Winograd form's weight "
                 "transform between calls)")
    for kind, values in [*kinds.items(), ("all", list(rat.values()))]:
        lines.append(f"  geomean {kind:<13}{geomean(values):.2f}  (worst {max(values):.2f})")
    return "\n".join(lines)


def ratio_panel(result) -> dict:
    """The result as one panel for ``numbaconv._plot.plot_ratios``."""
    kinds = {c["name"]: c["kind"] for c in result["cases"]}
    return {"title": f"bench --layers (a layer object's time over the functional "
                     f"call's): median over {result['rounds']} rounds, one process",
            "cases": [(f"{name} ({kinds[name]})", {"functional call": ratio})
                      for name, ratio in ratios(result).items()]}
