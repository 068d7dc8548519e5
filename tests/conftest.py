import contextlib
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


@contextlib.contextmanager
def forcing_winograd():
    """The GEMM path takes the Winograd form wherever it can run; yields the list of
    the form's results, channels-first and channels-last (False: it stepped aside for
    non-finite data)."""
    from numbaconv import _conv_arrays, _im2col, _plan

    calls = []
    real_rank = _plan._gemm_rank

    def rank(item, forms):
        return (-1, 0.0) if item[0].name == "winograd" else real_rank(item, forms)

    def spy(real):
        def run(*args, **kwargs):
            calls.append(real(*args, **kwargs))
            return calls[-1]
        return run

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_plan, "_gemm_rank", rank)
        patch.setattr(_im2col, "conv_winograd", spy(_im2col.conv_winograd))
        patch.setattr(_conv_arrays, "conv_winograd_last",
                      spy(_conv_arrays.conv_winograd_last))
        _plan.path_forms.cache_clear()
        _plan._PLANS.clear()
        try:
            yield calls
        finally:
            _plan.path_forms.cache_clear()
            _plan._PLANS.clear()
