"""asv benchmarks: the suite of numbaconv.bench, one class per dimensionality, and the
backward pass on the training cases.

Every path and ``auto`` are timed on the same parameters, so a wrong ``auto`` choice
shows as ``time_auto`` above the fastest ``time_<path>``. The three large-kernel cases
(img_k63, fir_1025, vol_k15) have their own class without im2col, which builds 4 to 28
GB of columns there (in cache-sized blocks: 0.2 to 1.7 s per call).

Run from asv_bench/: ``asv run --python=same --quick``.
"""

import numpy as np

import numbaconv
from numbaconv import _peers
from numbaconv._compile import compiling_in_foreground
from numbaconv.bench import BACKWARD_SUITE, LARGE_KERNEL, SUITE

_BY_D = {}
for _case in SUITE:
    if _case.name not in LARGE_KERNEL:
        _BY_D.setdefault(len(_case.weight_shape) - 2, {})[_case.name] = _case
_LARGE = {c.name: c for c in SUITE if c.name in LARGE_KERNEL}


class _Conv:
    cases = None
    param_names = ["case"]
    timeout = 300

    def setup(self, name):
        self.case = self.cases[name]
        self.x, self.w, self.b = self.case.arrays()
        with compiling_in_foreground():  # compile (or load) every kernel, here
            for method in ("direct", "im2col", "auto"):
                self._run(method)

    def _run(self, method):
        return numbaconv.conv(self.x, self.w, self.b, **self.case.kwargs, method=method)

    def time_direct(self, name):
        self._run("direct")

    def time_fft(self, name):
        self._run("fft")

    def time_auto(self, name):
        self._run("auto")

    def peakmem_fft(self, name):
        self._run("fft")


class _WithIm2col(_Conv):
    def time_im2col(self, name):
        self._run("im2col")

    def peakmem_im2col(self, name):
        self._run("im2col")


class Conv1d(_WithIm2col):
    cases = _BY_D[1]
    params = [sorted(_BY_D[1])]


class Conv2d(_WithIm2col):
    cases = _BY_D[2]
    params = [sorted(_BY_D[2])]


class Conv3d(_WithIm2col):
    cases = _BY_D[3]
    params = [sorted(_BY_D[3])]


class LargeKernels(_Conv):
    cases = _LARGE
    params = [sorted(_LARGE)]

    def setup(self, name):
        self.case = self.cases[name]
        self.x, self.w, self.b = self.case.arrays()
        with compiling_in_foreground():
            self._run("auto")


class Backward:
    """``conv_backward`` (input and weight gradients) on the training cases."""

    params = [[c.name for c in BACKWARD_SUITE]]
    param_names = ["case"]
    timeout = 300

    def setup(self, name):
        self.case = {c.name: c for c in BACKWARD_SUITE}[name]
        self.x, self.w, _ = self.case.arrays()
        with compiling_in_foreground():  # compile (or load) the kernels, here
            y = numbaconv.conv(self.x, self.w, **self.case.kwargs)
            self.g = np.random.default_rng(1).standard_normal(y.shape, dtype=np.float32)
            self.time_backward(name)

    def time_backward(self, name):
        numbaconv.conv_backward(self.g, self.x, self.w, **self.case.kwargs, bias=False)


_PEER_CASES = {(entry, c.name): c for entry in ("forward", "backward", "transpose")
               for c in _peers.SUITES[entry]
               if entry != "forward" or c.name not in {s.name for s in SUITE}}


class Peers:
    """The extended suite of ``bench --peers`` (numbaconv alone; the peers' ratios come
    from ``python -m numbaconv bench --peers``, which runs each library in its own
    process): forward on the layer kinds beyond ``SUITE``, strided and grouped
    backward, and transposed layers at stride 1, 2 and 4."""

    _cases = _PEER_CASES
    params = [[f"{entry}:{name}" for entry, name in _PEER_CASES]]
    param_names = ["entry:case"]
    timeout = 300

    def setup(self, key):
        entry, name = key.split(":")
        case = self._cases[(entry, name)]
        self.call = _peers.build_calls("numbaconv", entry, [case], 1)[name]
        with compiling_in_foreground():  # compile (or load) the kernels, here
            self.call()

    def time_call(self, key):
        self.call()


class OutReuse:
    """``out=`` against a fresh output on a layer of each kind: the same speed, no
    output allocated (``tests/test_layout.py`` checks the allocation with tracemalloc)."""

    params = [["r50_3x3_56", "r50_1x1_56", "mbv2_dw3", "resnet_conv1", "c3d_s2"]]
    param_names = ["case"]
    timeout = 300

    def setup(self, name):
        case = next(c for c in _peers.FORWARD if c.name == name)
        self.x, self.w, self.b = case.arrays("forward")
        self.kwargs = dict(stride=case.stride, padding=case.padding,
                           dilation=case.dilation, groups=case.groups)
        with compiling_in_foreground():
            self.out = numbaconv.conv(self.x, self.w, self.b, **self.kwargs)

    def time_fresh_output(self, name):
        numbaconv.conv(self.x, self.w, self.b, **self.kwargs)

    def time_out(self, name):
        numbaconv.conv(self.x, self.w, self.b, **self.kwargs, out=self.out)
