"""asv benchmarks: the suite of numbaconv.bench, one class per dimensionality.

Run from asv_bench/: ``asv run --python=same --quick``.
"""


import numbaconv
from numbaconv.bench import SUITE

_BY_D = {}
for _case in SUITE:
    _BY_D.setdefault(len(_case.weight_shape) - 2, {})[_case.name] = _case


class _Conv:
    d = None
    param_names = ["case"]

    def setup(self, name):
        self.case = _BY_D[self.d][name]
        self.x, self.w, self.b = self.case.arrays()
        self.time_direct(name)  # Numba compilation (or cache load) happens here

    def time_direct(self, name):
        numbaconv.conv(self.x, self.w, self.b, **self.case.kwargs, method="direct")

    def time_auto(self, name):
        numbaconv.conv(self.x, self.w, self.b, **self.case.kwargs, method="auto")


class Conv1d(_Conv):
    d = 1
    params = [sorted(_BY_D[1])]


class Conv2d(_Conv):
    d = 2
    params = [sorted(_BY_D[2])]


class Conv3d(_Conv):
    d = 3
    params = [sorted(_BY_D[3])]
