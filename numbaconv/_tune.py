"""``tune()``: measure the cost model's machine constants on this machine.

It times the public functions on a few calibration problems and stores what it finds in
the constants store (:mod:`numbaconv._constants`), which the cost model reads.
"""

from __future__ import annotations

import math
import os
import platform
import time

import numpy as np

from ._constants import MachineConstants, save as save_constants
from ._direct import use_stem
from ._plan import path_estimate
from ._spec import conv_geometry
from .functional import conv

# Which rates each group of measurements calibrates (the GEMM path's calls may run any of
# its forms, the register blocks included, so its rates scale together).
_GROUPS = {
    "direct": ("direct_macs", "direct_pack"),
    "channelwise": ("channelwise_macs",),
    "stem": ("stem_macs",),
    "im2col": ("gemm_macs", "columns", "blocks_macs"),
    "fft": ("fft_flops", "fft_cmacs", "fft_elems"),
}

# (input shape, weight shape, keyword arguments, groups measured): a few milliseconds
# each, covering the terms of every estimate.
CALIBRATION = (
    ((1, 64, 32, 32), (64, 64, 3, 3), dict(padding=1), ("direct", "im2col")),
    ((2, 32, 24, 24), (64, 32, 1, 1), {}, ("direct", "im2col")),
    ((1, 32, 4000), (32, 32, 3), dict(dilation=4), ("direct", "im2col")),
    ((1, 16, 8, 24, 24), (16, 16, 3, 3, 3), dict(padding=1), ("direct", "im2col", "fft")),
    ((1, 96, 48, 48), (96, 1, 3, 3), dict(padding=1, groups=96), ("channelwise",)),
    ((1, 3, 128, 128), (32, 3, 5, 5), dict(stride=2, padding=2), ("stem",)),
    ((1, 1, 256, 256), (1, 1, 25, 25), dict(padding=12), ("fft",)),
    ((1, 1, 200_000), (1, 1, 257), dict(padding=128), ("fft",)),
    ((1, 8, 64, 64), (8, 8, 9, 9), dict(padding=4), ("fft", "direct")),
)


def _group_of(method, geom) -> str:
    if method != "direct":
        return method
    if use_stem(geom.groups, geom.in_channels // geom.groups,
                geom.out_channels // geom.groups):
        return "stem"
    return "channelwise" if geom.in_channels == geom.groups else "direct"


def tune(save: bool = True, repeats: int = 5, verbose: bool = False) -> dict:
    """Measure the cost model's machine constants on this machine.

    Every path runs on the calibration problems (``numbaconv._tune.CALIBRATION``,
    float32, a few milliseconds each, after a warm-up call that also compiles the
    kernels). Each group of rates (dense direct, channel-wise direct, stem, im2col, FFT) is
    scaled by the geometric mean of estimated over measured time, so that the
    estimates match this machine on average.

    Parameters
    ----------
    save : bool
        Write the constants to ``numbaconv._constants.tuning_file()`` (creating its
        directory), where every later process finds them; also use them in this
        process from now on.
    repeats : int
        Timed calls per problem and path; the median counts.
    verbose : bool
        Print each measurement.

    Returns
    -------
    dict
        ``{"constants": {...}, "factors": {group: factor}, "path": str or None,
        "measurements": [...]}``, where a factor above 1 means this machine is faster
        than the defaults assumed.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r} must be an int >= 1")
    base = MachineConstants()
    rng = np.random.default_rng(0)
    ratios = {group: [] for group in _GROUPS}
    measurements = []
    for in_shape, w_shape, kwargs, groups in CALIBRATION:
        x = rng.standard_normal(in_shape, dtype=np.float32)
        w = rng.standard_normal(w_shape, dtype=np.float32)
        geom = conv_geometry(in_shape, w_shape, **kwargs)
        call_kwargs = dict(kwargs)
        for method in ("direct", "im2col", "fft"):
            group = _group_of(method, geom)
            if group not in groups:
                continue
            conv(x, w, **call_kwargs, method=method)  # compile / warm up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                conv(x, w, **call_kwargs, method=method)
                times.append(time.perf_counter() - t0)
            measured = float(np.median(times))
            estimated = path_estimate(geom, np.dtype(np.float32), method, base).seconds
            ratios[group].append(estimated / measured)
            measurements.append(dict(input=in_shape, weight=w_shape, method=method,
                                     measured_s=measured, estimated_s=estimated))
            if verbose:
                print(f"{method:<7} {str(in_shape):<22} {str(w_shape):<20} "
                      f"measured {measured * 1e3:8.3f} ms, default model "
                      f"{estimated * 1e3:8.3f} ms")
    factors = {g: math.exp(sum(math.log(r) for r in rs) / len(rs))
               for g, rs in ratios.items() if rs}
    constants = base.scaled(**{rate: f for g, f in factors.items() for rate in _GROUPS[g]})
    path = None
    if save:
        path = str(save_constants(
            constants, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            machine=platform.machine(), processor=platform.processor(),
            cpus=os.cpu_count(), factors=factors, measurements=measurements))
    return dict(constants=constants.as_dict(), factors=factors, path=path,
                measurements=measurements)
