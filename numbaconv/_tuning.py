"""Machine constants for the cost model: built-in defaults, or measured by :func:`tune`.

``tune()`` times every path on a few calibration problems, scales each group of rates so
that the model's estimates match the measurements (the geometric mean of measured over
estimated time, per group), and writes the constants to a per-user JSON file that later
processes read on their first dispatch:

- ``$NUMBACONV_TUNING_FILE`` if set, else
- ``$XDG_CACHE_HOME/numbaconv/machine.json`` (``~/.cache/numbaconv/machine.json``).

Delete the file to return to the defaults.
"""

from __future__ import annotations

import json
import math
import os
import platform
import threading
import time
from pathlib import Path

from ._costs import ESTIMATORS, MachineConstants

_LOCK = threading.Lock()
_CONSTANTS = None

# Which rates each group of measurements calibrates.
_GROUPS = {
    "direct": ("direct_macs", "direct_pack"),
    "channelwise": ("channelwise_macs",),
    "im2col": ("gemm_macs", "columns"),
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
    ((1, 1, 256, 256), (1, 1, 25, 25), dict(padding=12), ("fft",)),
    ((1, 1, 200_000), (1, 1, 257), dict(padding=128), ("fft",)),
    ((1, 8, 64, 64), (8, 8, 9, 9), dict(padding=4), ("fft", "direct")),
)


def tuning_file() -> Path:
    """Where :func:`tune` stores and the dispatcher reads this user's constants."""
    env = os.environ.get("NUMBACONV_TUNING_FILE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "numbaconv" / "machine.json"


def machine_constants() -> MachineConstants:
    """The constants in use: this user's tuned ones if a valid file exists, else defaults."""
    global _CONSTANTS
    with _LOCK:
        if _CONSTANTS is None:
            _CONSTANTS = _load(tuning_file())
        return _CONSTANTS


def reset() -> None:
    """Forget the loaded constants, so that the next dispatch reads the file again."""
    global _CONSTANTS
    with _LOCK:
        _CONSTANTS = None


def _load(path: Path) -> MachineConstants:
    try:
        data = json.loads(path.read_text())
        return MachineConstants.from_dict(data["constants"])
    except (OSError, ValueError, KeyError, TypeError):
        return MachineConstants()


def _group_of(method, geom) -> str:
    if method == "direct" and geom.in_channels == geom.groups:
        return "channelwise"
    return method


def tune(save: bool = True, repeats: int = 5, verbose: bool = False) -> dict:
    """Measure the cost model's machine constants on this machine.

    Every path runs on the calibration problems (``numbaconv._tuning.CALIBRATION``,
    float32, a few milliseconds each, after a warm-up call that also compiles the
    kernels). Each group of rates (dense direct, channel-wise direct, im2col, FFT) is
    scaled by the geometric mean of estimated over measured time, so that the
    estimates match this machine on average.

    Parameters
    ----------
    save : bool
        Write the constants to :func:`tuning_file` (creating its directory), where every
        later process finds them; also use them in this process from now on.
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
    import numpy as np

    from ._spec import conv_geometry
    from .functional import conv

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
            estimated = ESTIMATORS[method](geom, 4, base).seconds
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
        path = tuning_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = dict(
            version=1, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            machine=platform.machine(), processor=platform.processor(),
            cpus=os.cpu_count(), constants=constants.as_dict(), factors=factors,
            measurements=measurements,
        )
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, path)
        global _CONSTANTS
        with _LOCK:
            _CONSTANTS = constants
    return dict(constants=constants.as_dict(), factors=factors,
                path=None if path is None else str(path), measurements=measurements)
