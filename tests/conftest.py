import os

# Cold kernels compile in the foreground during tests, so that every call of a test runs
# the path it names; tests/test_cold_start.py covers the background compile.
os.environ.setdefault("NUMBACONV_BACKGROUND_COMPILE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:
    import torch
except ImportError:  # PyTorch is an optional oracle
    torch = None


def assert_close(y, ref, dtype):
    """SPEC.md's tolerance, relative to the output's scale."""
    tol = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}[np.dtype(dtype)]
    assert y.shape == ref.shape
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    err = float(np.max(np.abs(y - ref))) if ref.size else 0.0
    assert err <= tol * scale, f"max error {err:.3g} > {tol * scale:.3g}"


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
