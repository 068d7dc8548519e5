"""The three paths (direct, im2col, fft), the dispatcher and its cost model."""

import json
import tracemalloc

import numpy as np
import pytest
import scipy.fft
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import numbaconv
from numbaconv import _constants, _fft, _im2col, _plan, _registry, _tune, _winograd, config
from numbaconv._simd import lanes
from numbaconv._spec import conv_geometry
from numbaconv.bench import SUITE, Case, format_table, run_suite
from _reference import conv_reference
from conftest import assert_close, forcing_winograd

METHOD_NAMES = list(_registry.METHODS)


def _shrunk(case, cap):
    """A suite case with its spatial size cut to at most ``cap`` per axis (channels,
    kernel, stride, dilation and groups kept), still valid for its kernel."""
    d = len(case.weight_shape) - 2
    kernel = case.weight_shape[2:]
    span = [(k - 1) * case.dilation + 1 for k in kernel]
    spatial = tuple(max(min(s, cap), sp) for s, sp in zip(case.input_shape[2:], span))
    n = min(case.input_shape[0], 2)
    return Case(case.name, (n, case.input_shape[1]) + spatial, case.weight_shape,
                case.stride, case.padding, case.dilation, case.groups), d


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("case", SUITE, ids=[c.name for c in SUITE])
def test_every_path_on_suite_shapes(case, method):
    """Every suite case's channels, kernel, stride, dilation and groups, on a smaller
    input so the float64 reference stays quick."""
    small, d = _shrunk(case, cap={1: 600, 2: 40, 3: 20}[len(case.weight_shape) - 2])
    x, w, b = small.arrays(seed=1)
    y = numbaconv.conv(x, w, b, **small.kwargs, method=method)
    assert y.dtype == np.float32
    assert_close(y, conv_reference(x, w, b, **small.kwargs), np.float32)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_no_path_falls_back_to_another(monkeypatch, rng, method):
    def forbidden(*args, **kwargs):
        raise AssertionError("another path ran")
    for other in METHOD_NAMES:
        if other != method:
            monkeypatch.setitem(_registry.METHODS, other, forbidden)
    x = rng.standard_normal((2, 4, 9, 9))
    w = rng.standard_normal((6, 2, 3, 3))
    y = numbaconv.conv2d(x, w, stride=2, padding=1, groups=2, method=method)
    assert_close(y, conv_reference(x, w, stride=2, padding=1, groups=2), np.float64)


def test_auto_runs_the_chosen_path(monkeypatch, rng):
    ran = []
    for name, runner in list(_registry.METHODS.items()):
        monkeypatch.setitem(_registry.METHODS, name,
                            lambda *a, _n=name, _r=runner: (ran.append(_n), _r(*a))[1])
    for shapes in [((1, 8, 20, 20), (16, 8, 1, 1)), ((1, 1, 300, 300), (1, 1, 41, 41)),
                   ((1, 16, 20, 20), (16, 1, 3, 3))]:
        x = rng.standard_normal(shapes[0]).astype(np.float32)
        w = rng.standard_normal(shapes[1]).astype(np.float32)
        groups = 16 if shapes[1][1] == 1 and shapes[0][1] == 16 else 1
        ran.clear()
        numbaconv.conv2d(x, w, groups=groups)
        assert ran == [numbaconv.choose_method(shapes[0], shapes[1], groups=groups)]


def test_choices_on_the_suite_pin_the_cost_model():
    """The default constants' choices on shapes where one path clearly wins."""
    choice = {c.name: numbaconv.choose_method(c.input_shape, c.weight_shape, **c.kwargs)
              for c in SUITE}
    assert choice["r50_1x1_56"] == "im2col"
    assert choice["wavenet_d256"] == "im2col"
    assert choice["mbv2_dw3"] == "direct"
    assert choice["med_k5"] == "direct"  # channel-wise axpys
    assert choice["img_k63"] == "fft"
    assert choice["fir_1025"] == "fft"
    assert choice["vol_k15"] == "fft"
    # float64 halves every rate: choices of the same shape stay put.
    assert numbaconv.choose_method((1, 64, 56, 56), (256, 64, 1, 1), dtype="float64") \
        == "im2col"


def test_call_plans_follow_new_machine_constants(monkeypatch, rng):
    """Calls reuse their validated plan (and auto's choice) for the same shapes, until
    the cost model's constants change, as after ``tune()``."""
    from numbaconv import _conv_arrays

    ran = []
    for name, run in list(_registry.METHODS.items()):
        monkeypatch.setitem(_conv_arrays.METHODS, name,
                            lambda *args, name=name, run=run: ran.append(name) or run(*args))
    x = rng.standard_normal((1, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    y = numbaconv.conv2d(x, w, padding=1)
    numbaconv.conv2d(x, w, padding=1)
    assert ran == ["im2col", "im2col"]
    slow_gemm = _constants.machine_constants().scaled(
        gemm_macs=1e-4, direct_macs=1e3, direct_pack=1e3, channelwise_macs=1e3)
    monkeypatch.setattr(_constants, "_CONSTANTS", slow_gemm)
    assert_close(numbaconv.conv2d(x, w, padding=1), y.astype(np.float64), np.float32)
    assert ran == ["im2col", "im2col", "direct"]


def test_auto_never_sends_nonfinite_data_through_fft(rng):
    shape, wshape = (1, 1, 300, 300), (1, 1, 41, 41)
    assert numbaconv.choose_method(shape, wshape, padding=20) == "fft"
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    x[0, 0, 150, 150] = np.nan
    y = numbaconv.conv2d(x, w, padding=20)
    bad = ~np.isfinite(y[0, 0])
    expected = np.zeros_like(bad)
    expected[130:171, 130:171] = True  # outputs whose 41x41 field holds (150, 150)
    np.testing.assert_array_equal(bad, expected)
    w[0, 0, 0, 0] = np.inf
    x[0, 0, 150, 150] = 0
    assert not np.isfinite(numbaconv.conv2d(x, w, padding=20)).all()
    # the explicit path does spread them, as documented
    x[0, 0, 150, 150] = np.nan
    assert np.isnan(numbaconv.conv2d(x, np.ones_like(w), padding=20, method="fft")).all()


def test_explain_lists_every_path_and_the_choice():
    e = numbaconv.explain((1, 1, 1024, 1024), (1, 1, 63, 63), padding=31)
    text = str(e)
    for name in METHOD_NAMES:
        assert f" {name} " in text
    assert e.choice == "fft" and f"choice: {e.choice}" in text
    assert "8.324 GFLOP" in text
    assert set(e.estimates) == set(METHOD_NAMES)
    seconds = {k: v[0] for k, v in e.estimates.items()}
    assert min(seconds, key=seconds.get) == e.choice
    # 16 GB of columns, built a cache-sized block per thread at a time
    assert e.estimates["im2col"][1] <= 2 * config.IM2COL_TASK_BYTES


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(dtype="complex64"), TypeError, r"dtype='complex64' must be a real"),
    (dict(dtype="nonsense"), TypeError, r"dtype='nonsense' is not a NumPy dtype"),
    (dict(groups=3), ValueError, r"groups=3 must divide"),
])
def test_choose_method_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        numbaconv.choose_method((1, 4, 8, 8), (6, 4, 3, 3), **kwargs)


def test_im2col_memory_stays_within_budget(monkeypatch, rng):
    budget = 64 << 10
    monkeypatch.setattr(config, "IM2COL_BUDGET_BYTES", budget)
    x = rng.standard_normal((2, 8, 48, 48)).astype(np.float32)  # columns: 2.6 MB each
    w = rng.standard_normal((12, 4, 5, 5)).astype(np.float32)
    numbaconv.conv2d(x, w, padding=2, groups=2, method="im2col")  # compile first
    tracemalloc.start()
    try:
        y = numbaconv.conv2d(x, w, padding=2, groups=2, method="im2col")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Unblocked, the columns alone would take 2 x 100 x 2304 x 4 B = 1.8 MiB (28 budgets);
    # the slack covers the Python objects of the calls (about 30 KiB).
    extra = peak - y.nbytes
    assert extra <= budget + (32 << 10), f"{extra} bytes beyond the output"
    assert_close(y, conv_reference(x, w, padding=2, groups=2), np.float32)
    geom = conv_geometry(x.shape, w.shape, padding=2, groups=2)
    _, estimate = _plan.path_forms(geom, 4, _constants.machine_constants(), 2,
                                   _plan.current_budgets())["im2col"][0]
    assert estimate.extra_bytes <= budget


def test_fft_keeps_float32(monkeypatch, rng):
    seen = []
    real_rfftn, real_irfftn = scipy.fft.rfftn, scipy.fft.irfftn
    monkeypatch.setattr(scipy.fft, "rfftn", lambda a, *k, **kw: (
        seen.append(a.dtype), real_rfftn(a, *k, **kw))[1])
    monkeypatch.setattr(scipy.fft, "irfftn", lambda a, *k, **kw: (
        seen.append(a.dtype), real_irfftn(a, *k, **kw))[1])
    x = rng.standard_normal((1, 3, 40, 40)).astype(np.float32)
    w = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    y = numbaconv.conv2d(x, w, method="fft")
    assert y.dtype == np.float32
    assert seen and set(seen) <= {np.dtype(np.float32), np.dtype(np.complex64)}


def test_fft_blocks_long_signals_and_agrees(rng):
    plan = _fft.plan_axis(1_000_000, 1025)
    assert plan.blocks > 1 and plan.length <= 32 * 1025
    assert plan.step == plan.length - 1025 + 1
    assert (plan.blocks - 1) * plan.step < 1_000_000 <= plan.blocks * plan.step
    x = rng.standard_normal((1, 2, 60_000))
    w = rng.standard_normal((3, 2, 301))
    assert _fft.plan_axis(60_000 - 300 + 300, 301).blocks > 1
    y = numbaconv.conv1d(x, w, padding=150, method="fft")
    ref = numbaconv.conv1d(x, w, padding=150, method="direct")
    assert_close(y, ref, np.float64)


def test_fft_processes_output_channels_in_turns(monkeypatch, rng):
    monkeypatch.setattr(config, "FFT_BUDGET_BYTES", 1)
    x = rng.standard_normal((2, 4, 12, 12))
    w = rng.standard_normal((6, 2, 3, 3))
    y = numbaconv.conv2d(x, w, padding=1, groups=2, method="fft")
    assert_close(y, conv_reference(x, w, padding=1, groups=2), np.float64)


def test_tune_writes_constants_later_processes_read(monkeypatch, tmp_path):
    path = tmp_path / "machine.json"
    monkeypatch.setenv("NUMBACONV_TUNING_FILE", str(path))
    monkeypatch.setattr(_tune, "CALIBRATION", (
        ((1, 8, 16, 16), (8, 8, 3, 3), dict(padding=1), ("direct", "im2col", "fft")),
        ((1, 8, 16, 16), (8, 1, 3, 3), dict(padding=1, groups=8), ("channelwise",)),
    ))
    _constants.reset()
    try:
        result = numbaconv.tune(repeats=1)
        assert path.exists() and result["path"] == str(path)
        stored = json.loads(path.read_text())
        assert set(result["factors"]) == {"direct", "im2col", "fft", "channelwise"}
        default = _constants.MachineConstants()
        expected = default.gemm_macs * result["factors"]["im2col"]
        assert stored["constants"]["gemm_macs"] == pytest.approx(expected)
        _constants.reset()  # as a new process would
        assert _constants.machine_constants().gemm_macs == pytest.approx(expected)
        path.write_text("{not json")
        _constants.reset()
        assert _constants.machine_constants() == default
    finally:
        _constants.reset()
    with pytest.raises(ValueError, match="repeats=0"):
        numbaconv.tune(repeats=0)


def test_bench_times_every_path_and_reports_the_choice():
    cases = (Case("tiny", (1, 4, 16, 16), (8, 4, 3, 3), padding=1),)
    rows = run_suite(cases, progress=False)
    row = rows[0]
    assert row["choice"] in METHOD_NAMES
    assert all(row[m] > 0 for m in METHOD_NAMES + ["auto"])
    table = format_table(rows)
    assert "tiny" in table and "dispatcher: auto / fastest own path" in table


def test_cli_explain(capsys):
    from numbaconv.__main__ import main

    main(["explain", "--input", "1,64,56,56", "--weight", "256,64,1,1"])
    out = capsys.readouterr().out
    assert "choice: im2col" in out
    with pytest.raises(SystemExit, match="groups=3 must divide"):
        main(["explain", "--input", "1,64,56,56", "--weight", "256,64,1,1", "--groups", "3"])


def test_geometry_is_hashable_for_the_choice_cache():
    g = conv_geometry((1, 4, 8, 8), (6, 4, 3, 3))
    assert hash(g) == hash(conv_geometry((1, 4, 8, 8), (6, 4, 3, 3)))


def test_single_threaded_blas_restores_the_thread_count():
    from numbaconv import _blas

    controls = _blas._find_controls()
    before = [get() for get, _ in controls]
    with _blas.single_threaded_blas:
        assert all(get() == 1 for get, _ in controls)
        with _blas.single_threaded_blas:  # re-entrant
            pass
        assert all(get() == 1 for get, _ in controls)
    assert [get() for get, _ in controls] == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,kw", [
    ((2, 32, 40, 41), (24, 16, 3, 2), dict(padding=((1, 2), (0, 3)), dilation=(1, 2),
                                           groups=2)),
    ((1, 16, 3000), (8, 16, 3), dict(dilation=40, padding=((3, 0),))),
    ((3, 16, 6, 20, 20), (20, 16, 3, 1, 2), dict(padding=1)),
    ((1, 20, 50, 50), (37, 20, 4, 3), dict(padding=5)),  # pads beyond the kernel's reach
])
def test_im2col_shifted_form(rng, xs, ws, kw, dtype):
    """Unit stride with enough channels and positions: one GEMM per tap on shifted views
    of the padded input, no columns."""
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    geom = conv_geometry(xs, ws, **kw)
    def lift(values, fill):
        return (fill,) * (3 - geom.d) + tuple(values)

    assert _im2col.shifted_layout(
        xs[0], geom.groups, ws[1], lift(geom.kernel, 1), lift(geom.stride, 1),
        lift(geom.dilation, 1), lift((lo for lo, _ in geom.padding), 0),
        lift(geom.spatial, 1), lift(geom.out_spatial, 1), np.dtype(dtype).itemsize,
        config.IM2COL_BUDGET_BYTES
    ) is not None
    y = numbaconv.conv(x, w, b, **kw, method="im2col")
    assert_close(y, conv_reference(x, w, b, **kw), dtype)


@pytest.fixture
def winograd_calls():
    with forcing_winograd() as calls:
        yield calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,kw", [
    ((1, 32, 30, 31), (24, 32, 3, 3), dict(padding=1)),  # partial last tiles
    ((2, 32, 17, 16), (16, 16, 3, 3), dict(padding=((2, 0), (1, 3)), groups=2)),
    ((1, 16, 40, 37), (20, 16, 3, 3), dict(padding=3, dilation=(2, 3))),  # 2x3 phases
    ((1, 24, 30, 30), (8, 24, 3, 3), dict(padding="same", dilation=4,
                                          padding_mode="reflect")),
    ((2, 16, 24, 22), (16, 16, 3, 3), dict()),  # no padding
    ((1, 16, 5, 6), (16, 16, 3, 3), dict(padding=(0, 1))),  # one tile row
    ((2, 16, 5, 12, 13), (12, 16, 3, 3, 3), dict(padding=1)),
    ((1, 16, 6, 14, 12), (12, 16, 2, 3, 3), dict(padding=(0, 1, 2), dilation=(3, 1, 1))),
])
def test_im2col_winograd_form(rng, winograd_calls, xs, ws, kw, dtype):
    """Winograd F(4x4, 3x3) on unit-stride 3x3 kernels against the float64 reference,
    over partial tiles, padding, groups, dilation and 3D."""
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    y = numbaconv.conv(x, w, b, **kw, method="im2col")
    assert_close(y, conv_reference(x, w, b, **kw), dtype)
    assert_close(numbaconv.conv(x, w, None, **kw, method="im2col"),
                 conv_reference(x, w, None, **kw), dtype)
    assert winograd_calls == [True, True]


@st.composite
def winograd_configurations(draw):
    d = draw(st.integers(2, 3))
    groups = draw(st.integers(1, 2))
    kernel = ((draw(st.integers(1, 3)),) if d == 3 else ()) + (3, 3)
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(d))
    pads = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(d))
    span = [dil * (k - 1) + 1 for k, dil in zip(kernel, dilation)]
    spatial = tuple(draw(st.integers(max(1, s - lo - hi), 14))
                    for s, (lo, hi) in zip(span, pads))
    mode = "zeros" if any(max(p) > s for p, s in zip(pads, spatial)) else draw(
        st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    if mode == "reflect" and any(max(p) >= s for p, s in zip(pads, spatial)):
        mode = "zeros"
    return dict(groups=groups, kernel=kernel, dilation=dilation, padding=pads,
                spatial=spatial, mode=mode, n=draw(st.integers(1, 2)),
                c_out=groups * draw(st.integers(1, 5)), bias=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float32, np.float64])))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=winograd_configurations(), seed=st.integers(0, 2**31))
def test_winograd_form_on_random_configurations(cfg, seed):
    rng = np.random.default_rng(seed)
    c_in = 16 * cfg["groups"]
    x = rng.standard_normal((cfg["n"], c_in) + cfg["spatial"]).astype(cfg["dtype"])
    w = rng.standard_normal((cfg["c_out"], 16) + cfg["kernel"]).astype(cfg["dtype"])
    b = rng.standard_normal(cfg["c_out"]).astype(cfg["dtype"]) if cfg["bias"] else None
    kw = dict(padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"],
              padding_mode=cfg["mode"])
    with forcing_winograd() as calls:
        y = numbaconv.conv(x, w, b, method="im2col", **kw)
    assert calls == [True]
    assert_close(y, conv_reference(x, w, b, **kw), cfg["dtype"])


def test_winograd_form_steps_aside_for_nonfinite_data(rng, winograd_calls):
    x = rng.standard_normal((1, 16, 20, 20)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    x[0, 3, 10, 10] = np.inf
    y = numbaconv.conv2d(x, w, padding=1, method="im2col")
    bad = np.zeros((20, 20), dtype=bool)
    bad[9:12, 9:12] = True  # the outputs whose 3x3 field holds (10, 10)
    np.testing.assert_array_equal(~np.isfinite(y[0]), np.broadcast_to(bad, y[0].shape))
    x[0, 3, 10, 10] = 0
    w[2, 5, 1, 1] = np.nan
    y = numbaconv.conv2d(x, w, padding=1, method="im2col")
    np.testing.assert_array_equal(~np.isfinite(y[0]), np.broadcast_to(
        np.arange(16)[:, None, None] == 2, y[0].shape))
    assert winograd_calls == [False, False]  # both went to the shifted GEMMs


def _form_of(xs, ws, kw, dtype="float32"):
    geom = conv_geometry(xs, ws, **kw)
    form, estimate = _plan.path_forms(geom, np.dtype(dtype).itemsize,
                                      _constants.machine_constants(), 2,
                                      _plan.current_budgets())["im2col"][0]
    return form.name, estimate


def test_winograd_form_where_it_pays(monkeypatch):
    """The cost model's choice between Winograd and the other GEMM forms."""
    form, estimate = _form_of((1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1))
    assert form == "winograd" and estimate.detail.startswith("Winograd F(4x4,3x3)")
    assert "Winograd" in str(numbaconv.explain((1, 64, 56, 56), (64, 64, 3, 3), padding=1))
    assert _form_of((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1))[0] == "winograd"
    assert _form_of((1, 64, 16, 56, 56), (128, 64, 3, 3, 3), dict(padding=1))[0] \
        == "winograd"
    # Few tiles for many channels: the weight transform costs more than it saves, and
    # the register blocks (the weight repacked by vector transposes) take it.
    assert _form_of((1, 256, 14, 14), (256, 256, 3, 3), dict(padding=1))[0] == "blocks"
    assert _form_of((1, 128, 17, 17), (128, 128, 1, 7), dict(padding=(0, 3)))[0] \
        == "blocks"
    # So does a long dilated 1D signal (wavenet_d256); a pointwise layer keeps its
    # input as columns.
    assert _form_of((1, 64, 16000), (64, 64, 2), dict(dilation=256))[0] == "blocks"
    assert _form_of((1, 256, 56, 56), (64, 256, 1, 1), dict())[0] == "columns"
    assert _form_of((1, 512, 7, 7), (512, 512, 3, 3), dict(padding=1))[0] == "shared"
    # Where it cannot run at all.
    assert _form_of((1, 8, 56, 56), (8, 8, 3, 3), dict(padding=1))[0] == "columns"
    assert _form_of((1, 64, 56, 56), (64, 64, 3, 3), dict(stride=2))[0] == "blocks"
    # A 3x5 kernel: the register blocks (2.07 against the shifted GEMMs' 2.15 ms).
    assert _form_of((1, 64, 56, 56), (64, 64, 3, 5), dict())[0] == "blocks"
    # A 1D layer: the register blocks (0.76 against the shifted GEMMs' 1.06 ms), unless
    # its output channels fill less than their 2 vectors.
    assert _form_of((1, 64, 3000), (64, 64, 3), dict())[0] == "blocks"
    assert _form_of((1, 64, 3000), (16, 64, 3), dict())[0] == "shifted"
    # Its buffers over the budget: the packed input alone is 1.4 MB.
    assert _winograd.winograd_grid(1, 1, 64, 64, (1, 3, 3), (1, 1, 1), (1, 1, 1),
                                   (1, 56, 56), 4, 2, 1 << 20) is None
    monkeypatch.setattr(config, "IM2COL_BUDGET_BYTES", 1 << 20)
    assert _form_of((1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1))[0] != "winograd"
    # The register blocks' channels-last copies (1.2 MB) over the budget too.
    assert _form_of((1, 64, 56, 56), (64, 64, 3, 3), dict(stride=2))[0] == "columns"


@pytest.mark.parametrize("out_spatial,dilation", [
    ((1, 56, 56), (1, 1, 1)), ((1, 7, 9), (1, 1, 1)), ((1, 42, 37), (1, 2, 3)),
    ((2, 5, 30), (1, 4, 7)), ((1, 3, 3), (1, 5, 5)),
])
def test_winograd_tiles_and_tasks_cover_every_output_once(out_spatial, dilation):
    _, OH, OW = out_spatial
    _, dh, dw = dilation
    # Brute force: an output's tile is (phase, its index within the phase // 4).
    tiles = {(i % dh, j % dw, i // dh // 4, j // dw // 4) for i in range(OH)
             for j in range(OW)}
    grid = _winograd.tile_grid(out_spatial, 3, dilation)
    _, TH, TW1 = grid
    assert max(t[2] for t in tiles) < TH and max(t[3] for t in tiles) < TW1 - 1
    for threads in (1, 2, 3):
        units, tasks = _winograd.plan_tasks(2, 3, out_spatial[0], dh * dw, grid, 16, 16,
                                            4, threads)
        # Every thread has work, if there are tile rows enough.
        assert len(tasks) >= min(threads, 2 * 3 * out_spatial[0] * dh * dw * TH)
        covered = {}
        for u0, u1, count in tasks:
            assert len({units[k, 1] for k in range(u0, u1)}) == 1  # one group
            rows = [units[k, 5] - units[k, 4] for k in range(u0, u1)]
            assert [units[k, 6] for k in range(u0, u1)] == list(
                TW1 * np.cumsum([0] + rows[:-1]))
            assert count == TW1 * sum(rows)
        for n, g, od, phase, tr0, tr1, _ in units:
            covered.setdefault((n, g, od, phase), []).extend(range(tr0, tr1))
        assert len(covered) == 2 * 3 * out_spatial[0] * dh * dw
        assert all(sorted(rows) == list(range(TH)) for rows in covered.values())


def test_winograd_tile_pitch_avoids_cache_set_conflicts():
    for itemsize in (4, 8):
        for tiles in range(1, 3000):
            pitch = _winograd.tile_pitch(tiles, itemsize)
            assert tiles <= pitch < tiles + 128 // itemsize
            assert pitch * itemsize % 128 == 64


def test_next_fast_len_matches_scipy():
    for n in list(range(1, 3000)) + [8191, 1_000_000, 123_457, 1_048_577]:
        assert _fft.next_fast_len(n) == scipy.fft.next_fast_len(n, real=True), n


def test_plans_follow_threads_and_budgets(monkeypatch, rng):
    """A cached plan is made again when the thread count or a budget changes: lowering
    the im2col budget after a Winograd plan was cached takes another form, not a
    Winograd grid that no longer fits."""
    import numba

    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    ref = conv_reference(x, w, padding=1)
    numbaconv.conv2d(x, w, padding=1, method="im2col")
    plan = _plan.get_plan(x, w, None, 1, 1, 1, 1, "zeros", "im2col", 2)
    assert plan.form.name == "winograd" and plan.form.threads == numba.get_num_threads()
    monkeypatch.setattr(config, "IM2COL_BUDGET_BYTES", 1 << 20)
    assert_close(numbaconv.conv2d(x, w, padding=1, method="im2col"), ref, np.float32)
    small = _plan.get_plan(x, w, None, 1, 1, 1, 1, "zeros", "im2col", 2)
    assert small.form.name != "winograd"
    monkeypatch.undo()
    if numba.config.NUMBA_NUM_THREADS > 1:
        numba.set_num_threads(1)
        try:
            assert_close(numbaconv.conv2d(x, w, padding=1, method="im2col"), ref,
                         np.float32)
            assert _plan.get_plan(x, w, None, 1, 1, 1, 1, "zeros", "im2col",
                                  2).form.threads == 1
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_explain_lists_every_form_of_every_path():
    e = numbaconv.explain((1, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert [f[0] for f in e.forms["im2col"]][:1] == ["winograd"]
    assert {f[0] for f in e.forms["im2col"]} == {"winograd", "blocks", "shifted", "columns"}
    assert [f[0] for f in e.forms["direct"]] == ["dense"]
    assert e.estimates["im2col"][0] == e.forms["im2col"][0][1]
    text = str(e)
    for name in ("winograd", "blocks", "shifted", "columns", "dense", "fft"):
        assert name in text
    depthwise = numbaconv.explain((1, 8, 9, 9), (8, 1, 3, 3), groups=8)
    assert depthwise.forms["direct"][0][0] == "channelwise"


def test_plans_follow_every_tunable(monkeypatch, rng):
    x = rng.standard_normal((1, 32, 48, 48)).astype(np.float32)  # 48 x 49 outputs
    # 16 output channels: one vector, too few for the register blocks.
    w = rng.standard_normal((16, 32, 3, 2)).astype(np.float32)
    assert _plan.get_plan(x, w, None, 1, 1, 1, 1, "zeros", "im2col", 2).form.name \
        == "shifted"
    monkeypatch.setattr(config, "SHIFTED_MIN_POSITIONS", 10 ** 9)
    assert _plan.get_plan(x, w, None, 1, 1, 1, 1, "zeros", "im2col", 2).form.name \
        == "columns"
    assert_close(numbaconv.conv2d(x, w, padding=1, method="im2col"),
                 conv_reference(x, w, padding=1), np.float32)


def test_cli_bench_times_the_methods_asked_for(capsys):
    from numbaconv.__main__ import main

    main(["bench", "--methods", "auto", "--cases", "mbv2_dw3"])
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("case"))
    assert lines[head].split()[:3] == ["case", "GFLOP", "auto"]
    assert "direct ms" not in lines[head]
    assert lines[head + 2].split()[0] == "mbv2_dw3"
    with pytest.raises(SystemExit, match="--methods: unknown method"):
        main(["bench", "--methods", "nope"])


@pytest.mark.parametrize("x_shape,w_shape,stride,dilation", [
    ((1, 16, 18, 40, 44), (8, 16, 3, 3, 3), (2, 2, 2), (1, 1, 1)),
    ((1, 16, 5000), (8, 16, 3), (2,), (1,)),
    ((2, 32, 150, 100), (16, 16, 3, 2), (3, 2), (2, 1)),
])
def test_shifted_form_takes_strided_layers(rng, x_shape, w_shape, stride, dilation):
    """A strided layer runs the shifted GEMM on the input split into stride phases, and
    agrees with the oracle, forward and in the weight gradient."""
    groups = x_shape[1] // w_shape[1]
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    kw = dict(stride=stride, padding=1, dilation=dilation, groups=groups)
    forms = [f[0] for f in numbaconv.explain(x_shape, w_shape, **kw).forms["im2col"]]
    assert "shifted" in forms
    plan = _plan.get_plan(x, w, None, stride, 1, dilation, groups, "zeros", "im2col", None)
    assert plan.form.name == "shifted"
    y = numbaconv.conv(x, w, **kw, method="im2col")
    assert_close(y, conv_reference(x, w, **kw), np.float64)
    g = rng.standard_normal(y.shape)
    gw = numbaconv.conv_backward(g, x, w, **kw, input_grad=False)[1]
    eps_dir = rng.standard_normal(w.shape)
    # <grad_w, v> is the derivative of <conv(x, w), g> along v: exact, the conv is linear
    assert np.vdot(gw, eps_dir) == pytest.approx(
        np.vdot(conv_reference(x, eps_dir, **kw), g), rel=1e-9)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 3), cg=st.integers(1, config.CHANNELWISE_MAX_CHANNELS),
       groups=st.integers(1, 3), cog=st.integers(1, 3), k=st.integers(1, 4),
       stride=st.integers(1, 3), dilation=st.integers(1, 2), pad=st.integers(0, 2),
       seed=st.integers(0, 2**31))
def test_grouped_layers_take_the_channelwise_kernel(d, cg, groups, cog, k, stride,
                                                   dilation, pad, seed):
    """Up to CHANNELWISE_MAX_CHANNELS input channels per group: the channel-wise kernel
    (every input channel's planes in one buffer, split into stride phases), against
    the oracle."""
    assume(k ** d <= config.CHANNELWISE_MAX_TAPS)
    rng = np.random.default_rng(seed)
    spatial = tuple(int(v) for v in rng.integers((k - 1) * dilation + 1, 12, d))
    x = rng.standard_normal((2, groups * cg) + spatial)
    w = rng.standard_normal((groups * cog, cg) + (k,) * d)
    b = rng.standard_normal(groups * cog)
    kw = dict(stride=stride, padding=pad, dilation=dilation, groups=groups)
    plan = _plan.get_plan(x, w, b, stride, pad, dilation, groups, "zeros", "direct", None)
    assert plan.form.name == "channelwise"
    y = numbaconv.conv(x, w, b, **kw, method="direct")
    assert_close(y, conv_reference(x, w, b, **kw), np.float64)
    # The weight gradient by the channel-wise gradient kernel: <grad_w, v> is the
    # derivative of <conv(x, w), g> along v (exact: the convolution is linear in w).
    g = rng.standard_normal(y.shape)
    gw = numbaconv.conv_backward(g, x, w, **kw, input_grad=False)[1]
    v = rng.standard_normal(w.shape)
    assert np.vdot(gw, v) == pytest.approx(np.vdot(conv_reference(x, v, **kw), g),
                                           rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 3), cg=st.integers(2, config.CHANNELWISE_MAX_CHANNELS),
       groups=st.integers(1, 3), cog=st.integers(config.STEM_MIN_OUT_CHANNELS, 21),
       k=st.integers(1, 5), stride=st.integers(1, 3), dilation=st.integers(1, 2),
       pad=st.integers(0, 3), n=st.integers(1, 3),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_stem_layers_take_the_stem_kernel(d, cg, groups, cog, k, stride, dilation, pad, n,
                                          dtype, seed):
    """2-4 input channels ungrouped, or 2-8 per group, and 8 or more output channels
    (per group): the stem kernel (register blocks of 8 output channels, chunks of the
    phase planes), against the oracle; output channels that fill no whole block
    included."""
    assume(k ** d * cg <= 200 and (groups > 1 or cg <= config.STEM_MAX_CHANNELS))
    rng = np.random.default_rng(seed)
    spatial = tuple(int(v) for v in rng.integers((k - 1) * dilation + 1, 30 // d + 4, d))
    x = rng.standard_normal((n, groups * cg) + spatial).astype(dtype)
    w = rng.standard_normal((groups * cog, cg) + (k,) * d).astype(dtype)
    b = rng.standard_normal(groups * cog).astype(dtype)
    kw = dict(stride=stride, padding=pad, dilation=dilation, groups=groups)
    plan = _plan.get_plan(x, w, b, stride, pad, dilation, groups, "zeros", "direct", None)
    assert plan.form.name == "stem"
    x_before = x.copy()
    y = numbaconv.conv(x, w, b, **kw, method="direct")
    assert_close(y, conv_reference(x, w, b, **kw), dtype)
    np.testing.assert_array_equal(x, x_before)


def test_stem_kernel_copies_planes_a_few_samples_at_a_time(monkeypatch, rng):
    """A batch whose input planes exceed STEM_PLANE_BYTES runs in slabs of samples, and a
    chunk of the phase plane may start and end mid-row: the result is unchanged."""
    x = rng.standard_normal((5, 3, 40, 23))
    w = rng.standard_normal((12, 3, 3, 5))
    kw = dict(stride=(2, 1), padding=(1, 2))
    whole = numbaconv.conv2d(x, w, **kw, method="direct")
    monkeypatch.setattr(config, "STEM_PLANE_BYTES", 1)
    plan = _plan.get_plan(x, w, None, (2, 1), (1, 2), 1, 1, "zeros", "direct", None)
    assert plan.form.name == "stem" and plan.form.samples == 1
    sliced = numbaconv.conv2d(x, w, **kw, method="direct")
    np.testing.assert_allclose(sliced, whole, rtol=1e-12, atol=1e-12)
    assert_close(sliced, conv_reference(x, w, **kw), np.float64)


@pytest.mark.parametrize("x_shape,w_shape,groups", [
    ((1, 1, 32, 32), (16, 1, 3, 3), 1),      # one input channel: channel-wise
    ((1, 8, 32, 32), (16, 2, 3, 3), 4),      # grouped: channel-wise
    ((1, 3, 32, 32), (4, 3, 3, 3), 1),       # fewer than 8 output channels
    ((1, 5, 32, 32), (16, 5, 3, 3), 1),      # more than STEM_MAX_CHANNELS inputs
])
def test_other_layers_do_not_take_the_stem_kernel(x_shape, w_shape, groups):
    plan = _plan.get_plan(np.zeros(x_shape), np.zeros(w_shape), None, 1, 1, 1, groups,
                          "zeros", "direct", None)
    assert plan.form.name != "stem"


@pytest.mark.parametrize("kernel", [(3, 3), (2, 2), (5, 5)])
def test_stem_kernel_keeps_nonfinite_values_in_their_receptive_fields(rng, kernel):
    """27, 12 and 75 (input channel, tap) pairs: the kernel's passes take 4 pairs, and
    the padding pairs with zero weights (0 * NaN is NaN) read what the first pair reads.
    Input (5, 9) of channel 0 is padded (6, 10), in the stride phase the first pair
    reads."""
    x = rng.standard_normal((1, 3, 20, 24)).astype(np.float32)
    w = rng.standard_normal((16, 3) + kernel).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 5, 9] = np.nan
    x[0, 2, 11, 7] = np.inf
    x[0, 1, 19, 23] = -np.inf
    plan = _plan.get_plan(x, w, None, 2, 1, 1, 1, "zeros", "direct", None)
    assert plan.form.name == "stem"
    y = numbaconv.conv2d(x, w, stride=2, padding=1, method="direct")
    kh, kw = kernel
    field = np.zeros(y.shape[2:], dtype=bool)
    for _, i, j in zip(*np.nonzero(~np.isfinite(x[0]))):
        # Output (p, q) reads padded rows 2p..2p+kh-1, i.e. input rows 2p-1..2p+kh-2.
        for p in range(y.shape[2]):
            for q in range(y.shape[3]):
                if 2 * p - 1 <= i <= 2 * p + kh - 2 and 2 * q - 1 <= j <= 2 * q + kw - 2:
                    field[p, q] = True
    assert not np.isfinite(y[0][:, field]).any()
    assert np.isfinite(y[0][:, ~field]).all()


@pytest.mark.parametrize("method", ["auto", "direct", "im2col", "fft"])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("xs,ws,stride", [
    ((2, 24, 17, 12), (32, 24, 1, 1), 2),
    ((1, 16, 9, 13), (8, 16, 1, 1), (3, 2)),
    ((3, 8, 31), (5, 8, 1), 4),
    ((1, 4, 5, 7, 9), (6, 4, 1, 1, 1), (2, 1, 3)),
    ((2, 8, 6, 6), (8, 2, 1, 1), 2),  # grouped
])
def test_strided_pointwise_runs_on_the_subsample(rng, method, layout, xs, ws, stride):
    """A 1x1 kernel at stride > 1 without padding runs as the pointwise layer of the
    input's subsample (_plan.run_geometry), on every path and in both layouts."""
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    groups = xs[1] // ws[1]
    ref = conv_reference(x, w, b, stride, groups=groups)
    d = len(ws) - 2
    if layout == "channels_last":
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    x_before = x.copy()
    y = numbaconv.conv(x, w, b, stride, groups=groups, method=method, layout=layout)
    if layout == "channels_last":
        y = np.moveaxis(y, -1, 1)
    assert_close(y, ref, np.float32)
    np.testing.assert_array_equal(x, x_before)
    plan = _plan.get_plan(x, w, b, stride, 0, 1, groups, "zeros", method, d, layout)
    assert plan.subsample == (1,) * (3 - d) + tuple(np.broadcast_to(stride, d))
    assert plan.stride == (1, 1, 1)


def test_strided_pointwise_with_padding_keeps_its_stride(rng):
    x = rng.standard_normal((1, 8, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    plan = _plan.get_plan(x, w, None, 2, 1, 1, 1, "zeros", "auto", 2)
    assert plan.subsample is None and plan.stride == (1, 2, 2)
    assert_close(numbaconv.conv2d(x, w, None, 2, 1), conv_reference(x, w, None, 2, 1),
                 np.float32)
    explanation = numbaconv.explain((1, 256, 56, 56), (512, 256, 1, 1), stride=2)
    assert "input as columns (1x1)" in explanation.forms["im2col"][0][3]


def _force_vector_width(monkeypatch, choose):
    """Plans whose channel-wise form takes ``choose(out_spatial, kernel, stride,
    dilation, itemsize)`` as its sliding blocks' width (0: the plain blocks)."""
    from numbaconv import _direct
    monkeypatch.setattr(_direct, "channelwise_vector_width", choose)
    _plan.path_forms.cache_clear()


@pytest.fixture
def register_blocks_everywhere(monkeypatch):
    """Plans whose channel-wise form takes the sliding register blocks wherever they
    apply (unit stride and dilation along H), whatever the kernel's size."""
    from numbaconv import _direct

    def everywhere(out_spatial, kernel, stride, dilation, itemsize):
        if stride[1] != 1 or dilation[1] != 1:
            return 0
        vector = lanes(itemsize)
        return _direct.sliding_shape(out_spatial[1], out_spatial[2], vector)[0] * vector

    _force_vector_width(monkeypatch, everywhere)
    yield
    _plan.path_forms.cache_clear()


@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(d=st.integers(1, 3), cg=st.integers(1, 3), groups=st.integers(1, 4),
       cog=st.integers(1, 2), kh=st.integers(1, 9), kw=st.integers(1, 9),
       stride_w=st.integers(1, 3), dilation_w=st.integers(1, 2), pad=st.integers(0, 4),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_channelwise_register_blocks(register_blocks_everywhere, d, cg, groups, cog, kh,
                                     kw, stride_w, dilation_w, pad, dtype, seed):
    """The channel-wise kernel's register blocks (4 rows x 2 vectors, or 8 rows x 1
    vector on narrow outputs, over every tap), against the oracle: output rows and
    columns that fill no whole block, several
    input channels per group, strides and dilation along W, 3D kernels (the depth taps
    added to the blocks' sums), both dtypes."""
    kernel = (kh, kw) if d == 2 else (2, kh, kw) if d == 3 else (kw,)
    assume(np.prod(kernel) <= config.CHANNELWISE_MAX_TAPS)  # larger ones: the next test
    rng = np.random.default_rng(seed)
    dilation = (1,) * (d - 1) + (dilation_w,)
    stride = (1,) * (d - 1) + (stride_w,)
    spatial = tuple(int(rng.integers((k - 1) * dl + 1, (k - 1) * dl + 40 // d))
                    for k, dl in zip(kernel, dilation))
    x = rng.standard_normal((2, groups * cg) + spatial).astype(dtype)
    w = rng.standard_normal((groups * cog, cg) + kernel).astype(dtype)
    b = rng.standard_normal(groups * cog).astype(dtype)
    kwargs = dict(stride=stride, padding=pad, dilation=dilation, groups=groups)
    plan = _plan.get_plan(x, w, b, stride, pad, dilation, groups, "zeros", "direct", None)
    assert plan.form.name == "channelwise" and plan.form.vector_width > 0
    x_before = x.copy()
    y = numbaconv.conv(x, w, b, **kwargs, method="direct")
    assert_close(y, conv_reference(x, w, b, **kwargs), dtype)
    np.testing.assert_array_equal(x, x_before)


@pytest.fixture
def plain_blocks_everywhere(monkeypatch):
    """Plans whose channel-wise form takes the plain register blocks everywhere."""
    _force_vector_width(monkeypatch, lambda *args: 0)
    yield
    _plan.path_forms.cache_clear()


@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(d=st.integers(1, 3), cg=st.integers(1, 3), groups=st.integers(1, 4),
       cog=st.integers(1, 2), k=st.integers(1, 5), stride=st.integers(1, 3),
       dilation=st.integers(1, 2), pad=st.integers(0, 3), long_rows=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_channelwise_plain_blocks(plain_blocks_everywhere, d, cg, groups, cog, k, stride,
                                  dilation, pad, long_rows, dtype, seed):
    """The channel-wise kernel's plain register blocks (8 vectors: 1, 2, 4 or 8 along
    a row), written straight into the output with masked row ends, against the
    oracle: any stride and dilation along every axis, planes of one row and long rows
    (1D signals), 3D kernels (each depth's taps added to the output), several input
    channels per group, both dtypes."""
    rng = np.random.default_rng(seed)
    kernel = (k,) * d
    reach = (k - 1) * dilation + 1
    high = reach + (300 if long_rows and d == 1 else 40 // d)
    spatial = tuple(int(rng.integers(reach, high)) for _ in range(d))
    x = rng.standard_normal((2, groups * cg) + spatial).astype(dtype)
    w = rng.standard_normal((groups * cog, cg) + kernel).astype(dtype)
    b = rng.standard_normal(groups * cog).astype(dtype)
    kwargs = dict(stride=stride, padding=pad, dilation=dilation, groups=groups)
    plan = _plan.get_plan(x, w, b, stride, pad, dilation, groups, "zeros", "direct", None)
    assume(plan.form.name == "channelwise")
    assert plan.form.vector_width == 0
    x_before = x.copy()
    y = numbaconv.conv(x, w, b, **kwargs, method="direct")
    assert_close(y, conv_reference(x, w, b, **kwargs), dtype)
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_depthwise_kernel_takes_register_blocks(dtype, rng):
    """A RepLKNet-style depthwise layer (a kernel nearly as large as the map) takes the
    register blocks unforced, with a bias: against the oracle."""
    x = rng.standard_normal((2, 8, 23, 21)).astype(dtype)
    w = rng.standard_normal((8, 1, 17, 17)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    plan = _plan.get_plan(x, w, b, 1, 8, 1, 8, "zeros", "auto", None)
    assert plan.method == "direct" and plan.form.vector_width > 0
    y = numbaconv.conv2d(x, w, b, padding=8, groups=8)
    assert_close(y, conv_reference(x, w, b, padding=8, groups=8), dtype)


@pytest.mark.parametrize("shape,kernel,blocks", [
    ((1, 128, 28, 28), 31, True),    # RepLKNet
    ((1, 64, 56, 56), 13, True),
    ((1, 144, 56, 56), 3, True),     # MobileNet
    ((1, 144, 28, 28), 3, True),
    ((1, 384, 14, 14), 7, True),     # one vector wide: blocks of 8 rows
    ((1, 64, 1, 4000), 1, False),    # a kernel one row tall shares no loads
])
def test_channelwise_plan_takes_register_blocks(shape, kernel, blocks):
    c = shape[1]
    geom = conv_geometry(shape, (c, 1, kernel, kernel), 1, kernel // 2, 1, c)
    from numbaconv import _direct
    form = _direct.plan_direct(1, c, 1, 1, (1, kernel, kernel), (1, 1, 1), (1, 1, 1),
                               (1,) + geom.out_spatial, 4, 2, 4)
    assert form.name == "channelwise"
    assert (form.vector_width > 0) == blocks
    explanation = str(numbaconv.explain(shape, (c, 1, kernel, kernel), padding=kernel // 2,
                                        groups=c))
    assert ("sliding register blocks" in explanation) == blocks
