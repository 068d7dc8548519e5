"""Cold start: the no-compile fallback, the background compile job and the cache guard."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import numbaconv
from numbaconv import _compile, _conv_arrays
from numbaconv._fallback import conv_taps, weight_grad_taps
from numbaconv._registry import FORMS, GROUPS

from _reference import conv_reference
from conftest import assert_close

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    # (x shape, w shape, kwargs)
    ((2, 6, 9, 11), (4, 3, 3, 2), dict(stride=(2, 1), padding=((1, 2), (0, 1)), groups=2)),
    ((1, 4, 10, 10), (4, 1, 3, 3), dict(padding=2, dilation=2, groups=4)),
    ((1, 4, 10, 10), (8, 1, 3, 3), dict(padding="same", groups=4)),
    ((3, 5, 17), (7, 5, 4), dict(stride=3, padding="same", dilation=2)),
    ((1, 3, 5, 6, 7), (2, 3, 2, 3, 2), dict(padding=1, stride=(1, 2, 1))),
    ((2, 3, 8, 8), (5, 3, 1, 1), {}),
]


@pytest.fixture(params=["taps", "fft"])
def cold_kernels(request, monkeypatch):
    """Every kernel behaves as if it were compiling in the background, and the fallback
    is the tap sums, or the FFT path wherever the data is finite."""

    monkeypatch.setattr(numbaconv.config, "FFT_FALLBACK_ADVANTAGE",
                        float("inf") if request.param == "taps" else 0.0)
    def not_ready(self, *args):
        if getattr(_compile._LOCAL, "allowed", False):
            raise _compile.KernelNotReady(self.name)
    monkeypatch.setattr(_compile.Kernel, "prepare", not_ready)
    monkeypatch.setenv("NUMBACONV_BACKGROUND_COMPILE", "1")
    numbaconv._plan._PLANS.clear()
    yield
    numbaconv._plan._PLANS.clear()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", CASES)
def test_fallback_forward_matches_reference(cold_kernels, rng, x_shape, w_shape, kwargs,
                                            dtype):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    y = numbaconv.conv(x, w, b, **kwargs)
    assert y.dtype == dtype
    assert_close(y, conv_reference(x, w, b, **kwargs), dtype)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", CASES)
def test_fallback_backward_matches_kernels(cold_kernels, rng, x_shape, w_shape, kwargs):
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    g = rng.standard_normal(numbaconv.output_shape(x_shape, w_shape, kwargs.get("stride", 1),
                                                   kwargs.get("padding", 0),
                                                   kwargs.get("dilation", 1)))
    cold = numbaconv.conv_backward(g, x, w, **kwargs)
    os.environ["NUMBACONV_BACKGROUND_COMPILE"] = "0"  # undone by the fixture
    warm = numbaconv.conv_backward(g, x, w, **kwargs)
    for a, b in zip(cold, warm):
        assert_close(a, b, np.float64)


def test_fallback_functions_directly(rng):
    x6 = rng.standard_normal((2, 2, 3, 1, 7, 8))
    w6 = rng.standard_normal((2, 3, 3, 1, 3, 2))
    out = np.empty((2, 2, 3, 1, 3, 7))
    conv_taps(x6, w6, np.zeros((2, 3)), out, (1, 2, 1), (1, 1, 1), (0, 0, 0))
    x = x6.reshape(2, 6, 7, 8)
    w = w6.reshape(6, 3, 3, 2)
    ref = conv_reference(x, w, stride=(2, 1), groups=2)
    assert_close(out.reshape(ref.shape), ref, np.float64)
    g6 = rng.standard_normal(out.shape)
    gw = weight_grad_taps(x6, g6, (1, 3, 2), (1, 2, 1), (1, 1, 1), (0, 0, 0))
    _, gw_ref, _ = numbaconv.conv_backward(g6.reshape(ref.shape), x, w, stride=(2, 1),
                                           groups=2)
    assert_close(gw.reshape(w.shape), gw_ref, np.float64)


def test_fallback_keeps_nonfinite_values_in_their_receptive_fields(cold_kernels, rng):
    x = rng.standard_normal((1, 16, 20, 20)).astype(np.float32)
    x[0, 3, 10, 10] = np.inf
    x[0, 5, 2, 15] = np.nan
    w = rng.standard_normal((4, 16, 3, 3)).astype(np.float32)
    y = numbaconv.conv2d(x, w, padding=1)
    expected = np.zeros((20, 20), bool)
    expected[9:12, 9:12] = True
    expected[1:4, 14:17] = True
    assert (~np.isfinite(y[0])).any(axis=0).tolist() == expected.tolist()


def test_named_paths_never_fall_back(cold_kernels, rng, monkeypatch):
    """Only ``auto`` may take another path than the kernels; a named path compiles."""
    def refuse(*args):
        raise AssertionError("fell back")
    monkeypatch.setattr(_conv_arrays, "conv_taps", refuse)
    monkeypatch.setattr(_conv_arrays, "conv_fft", refuse)
    x = rng.standard_normal((1, 16, 12, 12))
    w = rng.standard_normal((16, 16, 3, 3))
    for method in ("direct", "im2col"):
        assert_close(numbaconv.conv2d(x, w, padding=1, method=method),
                     conv_reference(x, w, padding=1), np.float64)
    with pytest.raises(AssertionError, match="fell back"):
        numbaconv.conv2d(x, w, padding=1)


def _run(code, env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=dict(os.environ, **env), timeout=600, cwd=ROOT)


def test_background_compile_serves_later_calls(tmp_path):
    """With an empty cache: the first ``auto`` call returns without compiling here, a
    job compiles the form into the cache, and later calls load and run the kernel."""
    result = _run("""
        import time, numpy as np, numbaconv
        from numbaconv import _compile, _direct
        x = np.ones((1, 3, 30, 30)); w = np.ones((3, 1, 3, 3))   # float64 depthwise
        y = numbaconv.conv2d(x, w, padding=1, groups=3)
        assert (y[0, :, 1:-1, 1:-1] == 9).all()
        jobs = _compile.background_jobs()
        print("jobs", sorted(jobs))
        print("ready", sorted(map(str, _direct.channelwise_conv._ready)))
        _compile.wait_for_jobs(timeout=300)
        y2 = numbaconv.conv2d(x, w, padding=1, groups=3)
        assert (y2 == y).all()
        print("ready", sorted(map(str, _direct.channelwise_conv._ready)))
        disp = _direct.channelwise_conv.dispatcher
        print("compiled here", sum(disp.stats.cache_misses.values()))
    """, env={"NUMBA_CACHE_DIR": str(tmp_path), "NUMBACONV_BACKGROUND_COMPILE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines == ["jobs [('channelwise', 'float64')]", "ready []", "ready ['float64']",
                     "compiled here 0"], lines
    assert "compiling the channelwise kernels for float64 in a background" in result.stderr
    assert list(tmp_path.rglob("direct.channelwise_conv*.nbi"))


def test_stale_cache_is_dropped(tmp_path):
    """Cached kernels made from other sources or versions are deleted, never loaded."""
    code = """
        import numpy as np, numbaconv
        numbaconv.conv1d(np.ones((1, 1, 9)), np.ones((1, 1, 3)), method="direct")
    """
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    assert _run(code, env).returncode == 0
    (stamp,) = tmp_path.rglob("numbaconv.fingerprint")
    cached = sorted(p.name for p in stamp.parent.glob("direct.*.nb?"))
    assert cached
    assert _run(code, env).returncode == 0
    assert sorted(p.name for p in stamp.parent.glob("direct.*.nb?")) == cached
    stamp.write_text("another numbaconv")
    marker = stamp.parent / cached[0]
    marker.write_bytes(b"stale")
    result = _run(code + "    print('ok')\n", env)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
    assert not marker.exists() or marker.read_bytes() != b"stale"
    assert stamp.read_text() == _compile.fingerprint()


def test_every_form_names_a_group_and_a_reachable_method():
    assert {f.group for f in FORMS.values()} == set(GROUPS)
    kernels = [k for module in (numbaconv._direct, numbaconv._im2col, numbaconv._winograd,
                                numbaconv.gradients, numbaconv._col2im,
                                numbaconv._channels_last)
               for k in vars(module).values() if isinstance(k, _compile.Kernel)]
    assert {k.form for k in kernels} == set(FORMS)



def test_no_import_cycles():
    tool = ROOT.parent / "shared" / "tools" / "import_cycles.py"
    if not tool.exists():
        pytest.skip("../shared/tools/import_cycles.py is not beside the checkout")
    result = subprocess.run([sys.executable, str(tool), str(ROOT / "numbaconv")],
                            capture_output=True, text=True)
    assert result.stdout.strip().endswith("cycles: 0"), result.stdout


def test_cold_start_and_compile_time_reports():
    """The benchmarks behind ``bench --latency`` and ``bench --compile`` (one quick
    case each: the FFT path compiles nothing; the depthwise weight gradient is small)."""
    from numbaconv import bench

    (row,) = bench.cold_start([c for c in bench.COLD_START_CASES
                               if c[0] == "large kernel"], progress=False)
    assert row["first_s"] < 5 and row["full_speed_s"] < 10 and row["warm_ms"] > 0
    assert "large kernel" in bench.format_cold_start([row])
    times = bench.compile_times(["channelwise_grad"])
    total, kernels = times["channelwise_grad"]
    assert total > 0 and any(name == "grad.channelwise_weight_grad" and c > 0
                             for name, c, _ in kernels), kernels
    assert "channelwise_grad" in bench.format_compile_times(times)


def test_background_jobs_wait_their_turn(monkeypatch):
    """At most max_jobs() compile jobs run at once; the others wait, and start as the
    running ones finish."""
    started = []

    class FakeJob:
        def __init__(self, key):
            self.key, self.done = key, False

        def poll(self):
            return 0 if self.done else None

        def wait(self, timeout=None):
            self.done = True

    def fake_start(form, dtype):
        job = FakeJob((form, dtype))
        started.append(job)
        _compile._JOBS[(form, dtype)] = job
        return job

    monkeypatch.setattr(_compile, "_start_job", fake_start)
    monkeypatch.setattr(_compile, "_JOBS", {})
    monkeypatch.setattr(_compile, "_PENDING", [])
    monkeypatch.setattr(_compile, "max_jobs", lambda: 1)
    _compile._PENDING.extend([("dense", "float32"), ("columns", "float32")])
    assert _compile.background_jobs() == {("dense", "float32"): True,
                                          ("columns", "float32"): True}
    assert [j.key for j in started] == [("dense", "float32")]
    started[0].done = True
    assert _compile.background_jobs()[("columns", "float32")] is True
    assert [j.key for j in started] == [("dense", "float32"), ("columns", "float32")]
    _compile.wait_for_jobs()
    assert not any(_compile.background_jobs().values())
