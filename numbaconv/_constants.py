"""The cost model's machine constants: built-in defaults, or this user's tuned ones.

A leaf: :func:`numbaconv.tune` (in :mod:`numbaconv.tune`) measures them and
:func:`save` stores them in a per-user JSON file, which later processes read on their
first dispatch:

- ``$NUMBACONV_TUNING_FILE`` if set, else
- ``$XDG_CACHE_HOME/numbaconv/machine.json`` (``~/.cache/numbaconv/machine.json``).

Delete the file to return to the defaults.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from dataclasses import asdict, dataclass, fields, replace

_LOCK = threading.Lock()
_CONSTANTS = None


@dataclass(frozen=True)
class MachineConstants:
    """Rates (per second, float32) and fixed costs the estimates are built from."""

    direct_macs: float = 1.4e11        # dense direct kernel, long dot products
    direct_dot_half: float = 40.0      # dot-product length at which it runs at half rate
    direct_pack: float = 1.75e9         # input elements packed per second
    direct_weight: float = 7.0e10      # bytes/s of a weight too big for L2, reread per row
    channelwise_macs: float = 7.0e10   # depthwise (one input channel per group) kernel
    stem_macs: float = 1.8e11          # stem kernel (few input, many output channels)
    blocks_macs: float = 2.6e11        # dense register blocks (the GEMM path's "blocks")
    gemm_macs: float = 2.65e11          # BLAS GEMM, large matrices
    gemm_half_m: float = 6.0           # GEMM rows (output channels) at half rate
    gemm_half_k: float = 24.0          # GEMM depth at half rate
    gemm_half_p: float = 64.0          # GEMM columns (output positions) at half rate
    columns: float = 8.0e9             # im2col elements written per second
    fft_flops: float = 5.0e11           # 2.5 N log2 N "flops" per FFT, per second
    fft_cmacs: float = 7.0e9           # complex multiply-adds of the spectral product
    fft_elems: float = 1.0e9           # elements copied (padding, tiling) per second
    fft_products: float = 3.9e7        # small per-frequency channel matrix products
    call: float = 2.0e-5               # fixed cost per kernel or BLAS call

    def scaled(self, **factors) -> MachineConstants:
        """A copy with the named rates multiplied by the given factors."""
        return replace(self, **{k: getattr(self, k) * v for k, v in factors.items()})

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> MachineConstants:
        known = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in values.items() if k in known})


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




def save(constants: MachineConstants, **record) -> Path:
    """Store ``constants`` (with ``record``: when and where they were measured) in
    :func:`tuning_file`, and use them in this process from now on."""
    global _CONSTANTS
    path = tuning_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(version=1, constants=constants.as_dict(), **record)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)
    with _LOCK:
        _CONSTANTS = constants
    return path
