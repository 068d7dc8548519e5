"""asv benchmarks of dask arrays (the ``dask`` extra): building the graph of 10,000
blocks, and a chunked 3D convolution computed by dask next to the same call in memory,
so that the overhead of going through dask shows as the ratio of the two.

Skipped (asv's NotImplementedError) where dask is not installed.
"""

import numpy as np

import numbaconv
from numbaconv._compile import compiling_in_foreground

try:
    import dask
    import dask.array as da
except ImportError:  # pragma: no cover - the dask extra is optional
    da = None


def _need_dask():
    if da is None:
        raise NotImplementedError("dask is not installed")


class GraphBuild:
    """The graph of a 3D convolution over 32 x 16 x 20 = 10,240 chunks; nothing runs."""

    def setup(self):
        _need_dask()
        self.x = da.zeros((1, 1, 22 * 32, 22 * 16, 22 * 20), chunks=(1, 1, 22, 22, 22),
                          dtype=np.float32)
        self.w = np.ones((1, 1, 3, 3, 3), np.float32)

    def time_build_10240_blocks(self):
        numbaconv.conv3d(self.x, self.w, padding="same", padding_mode="reflect")


class ChunkedVolume:
    """A 256^3 float32 volume in 64^3 chunks, 5^3 kernel, 'same', reflect."""

    timeout = 300

    def setup(self):
        _need_dask()
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((1, 1, 256, 256, 256), dtype=np.float32)
        self.w = rng.random((1, 1, 5, 5, 5), dtype=np.float32)
        self.lazy = numbaconv.conv3d(da.from_array(self.x, chunks=(1, 1, 64, 64, 64)),
                                     self.w, padding="same", padding_mode="reflect")
        with compiling_in_foreground():
            self.time_in_memory()
            self.time_dask_threads()

    def time_in_memory(self):
        numbaconv.conv3d(self.x, self.w, padding="same", padding_mode="reflect")

    def time_dask_threads(self):
        with dask.config.set(scheduler="threads"):
            self.lazy.compute()
