"""``python -m numbaconv._warm FORM [FORM ...] DTYPE [DTYPE]``: compile into Numba's cache.

The background compile job of :mod:`numbaconv._compile` and the worker processes of
``warmup``; prints a line ``form dtype seconds`` per form and dtype. Jobs on one
machine take turns under a file lock (per user, cache directory and kernel group), so
that no two processes write one cache index at once.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from contextlib import contextmanager


def run_example(form: str, dtype) -> None:
    """Run ``form``'s example calls in ``dtype`` (compiling its kernels, or loading
    them from the cache)."""
    import numpy as np

    from ._registry import FORMS
    from .functional import conv, output_shape
    from .gradients import flipped_weight, padded_input_grad, weight_grad

    f = FORMS[form]
    for input_shape, weight_shape in f.examples:
        x = np.ones(input_shape, dtype)
        w = np.ones(weight_shape, dtype)
        if f.method == "backward":
            # The weight gradient alone: conv_backward's input gradient is a forward
            # convolution, whose kernels are another group's.
            g = np.ones(output_shape(x.shape, w.shape, padding=1), dtype)
            d = w.ndim - 2
            weight_grad(g, x, w.shape, (1,) * d, (1,) * d, (1,) * d, f.groups)
        elif f.method == "flipped_weight":
            flipped_weight(w, f.groups)
        elif f.method == "input_grad":
            # The input gradient of a stride-2 convolution, on its own.
            d = w.ndim - 2
            g = np.ones(output_shape(x.shape, w.shape, stride=2), dtype)
            padded_input_grad(g, w, x.shape[2:], (2,) * d, (1,) * d, f.groups)
        else:
            conv(x, w, padding=1, groups=f.groups, method=f.method, layout=f.layout)


@contextmanager
def group_locks(groups):
    """Hold the machine-wide locks of these kernel groups (see ``_registry.GROUPS``) for
    this user and cache directory, taken in a fixed order."""
    try:
        import fcntl
    except ImportError:  # not POSIX: jobs do not take turns
        yield
        return
    import numba

    where = hashlib.sha256(str(numba.config.CACHE_DIR).encode()).hexdigest()[:12]
    handles = []
    try:
        for group in sorted(set(groups)):
            path = os.path.join(tempfile.gettempdir(),
                                f"numbaconv-{os.getuid()}-{where}-{group}.lock")
            handle = open(path, "a")
            handles.append(handle)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        for handle in reversed(handles):
            handle.close()  # closing releases the lock


def main(argv) -> int:
    import time

    from ._registry import DTYPES, FORMS

    # A compile job compiles: it never falls back, nor starts jobs of its own.
    os.environ["NUMBACONV_BACKGROUND_COMPILE"] = "0"
    forms = [a for a in argv if a in FORMS]
    dtypes = [a for a in argv if a in DTYPES]
    if not forms or not dtypes or len(forms) + len(dtypes) != len(argv):
        print(f"usage: python -m numbaconv._warm FORM [FORM ...] DTYPE [DTYPE]; forms: "
              f"{', '.join(FORMS)}; dtypes: {', '.join(DTYPES)}", file=sys.stderr)
        return 2
    with group_locks(FORMS[f].group for f in forms):
        for dtype in dtypes:
            for form in forms:
                t0 = time.perf_counter()
                run_example(form, dtype)
                print(f"{form} {dtype} {time.perf_counter() - t0:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
