"""Dask arrays (SPEC.md "Dask arrays"): lazy results equal to the in-memory call."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numbaconv
from conftest import assert_close

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

from numbaconv import _dask  # noqa: E402
from numbaconv._dask import aligned_chunks, axis_window, output_chunks  # noqa: E402

FUNCS = {1: numbaconv.conv1d, 2: numbaconv.conv2d, 3: numbaconv.conv3d}
MODES = ["zeros", "reflect", "replicate", "circular"]


def _chunking(draw, size, stride, halo):
    """Chunks along one axis: one chunk, regular, uneven, or smaller than the halo."""
    kind = draw(st.sampled_from(["single", "regular", "uneven", "tiny"]))
    if kind == "single" or size <= 1:
        return (size,)
    if kind == "tiny":
        step = max(1, min(halo, size) // 2) if halo > 1 else 1
        return _split(size, [step] * size)
    if kind == "regular":
        return _split(size, [draw(st.integers(1, size))] * size)
    cuts = sorted(draw(st.sets(st.integers(1, size - 1), min_size=1, max_size=4)))
    return tuple(b - a for a, b in zip([0, *cuts], [*cuts, size]))


def _split(size, steps):
    chunks, left = [], size
    for step in steps:
        if left <= 0:
            break
        chunks.append(min(step, left))
        left -= step
    return tuple(chunks)


@st.composite
def dask_configurations(draw):
    d = draw(st.integers(1, 3))
    c_in = draw(st.sampled_from([1, 2, 4, 6]))
    groups = draw(st.sampled_from([g for g in (1, 2, c_in) if c_in % g == 0]))
    c_out = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(d))
    span = [dil * (k - 1) + 1 for k, dil in zip(kernel, dilation)]
    top = {1: 40, 2: 14, 3: 8}[d]
    spatial = tuple(draw(st.integers(max(3, sp), top)) for sp in span)
    form = draw(st.sampled_from(["int", "per_axis", "pairs", "same", "valid"]))
    if form == "int":
        padding = draw(st.integers(0, 2))
    elif form == "per_axis":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(d))
    elif form == "pairs":
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 2))) for _ in range(d))
    else:
        padding = form
    mode = draw(st.sampled_from(MODES))
    halo = max(span)
    chunks = tuple(_chunking(draw, s, st_, halo) for s, st_ in zip(spatial, stride))
    batched = draw(st.booleans())
    n = draw(st.integers(1, 3))
    return dict(d=d, c_in=c_in, c_out=c_out, groups=groups, kernel=kernel, stride=stride,
                dilation=dilation, spatial=spatial, padding=padding, mode=mode,
                chunks=chunks, batched=batched, n=n, bias=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                batch_chunk=draw(st.integers(1, n)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=dask_configurations(), seed=st.integers(0, 2**31))
def test_dask_matches_in_memory(cfg, seed):
    rng = np.random.default_rng(seed)
    d = cfg["d"]
    shape = (cfg["n"], cfg["c_in"]) + cfg["spatial"]
    x = rng.standard_normal(shape).astype(cfg["dtype"])
    w = rng.standard_normal((cfg["c_out"], cfg["c_in"] // cfg["groups"]) + cfg["kernel"])
    w = w.astype(cfg["dtype"])
    b = rng.standard_normal(cfg["c_out"]).astype(cfg["dtype"]) if cfg["bias"] else None
    chunks = (cfg["batch_chunk"], 1) + cfg["chunks"]
    if not cfg["batched"]:
        x, chunks = x[0], chunks[1:]
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
              groups=cfg["groups"], padding_mode=cfg["mode"])
    try:
        ref = FUNCS[d](x, w, b, **kw)
    except ValueError as error:  # e.g. reflect padding wider than the input
        with pytest.raises(ValueError, match=str(error)[:20]):
            FUNCS[d](da.from_array(x, chunks=chunks), w, b, **kw)
        return
    y = FUNCS[d](da.from_array(x, chunks=chunks), w, b, **kw)
    assert isinstance(y, da.Array)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert_close(y.compute(scheduler="sync"), ref, cfg["dtype"])


def test_nothing_is_computed_while_the_graph_is_built():
    def explode(block):
        raise AssertionError("a block was computed")

    x = da.zeros((2, 3, 40, 40), chunks=(1, 3, 10, 10)).map_blocks(
        explode, meta=np.empty((0, 0, 0, 0)))
    w = np.ones((4, 3, 3, 3))
    y = numbaconv.conv2d(x, w, padding="same", padding_mode="reflect")
    assert y.shape == (2, 4, 40, 40)
    with pytest.raises(AssertionError, match="a block was computed"):
        y.compute(scheduler="sync")
    with pytest.raises(ValueError, match="groups=2 must divide"):
        numbaconv.conv2d(x, w, groups=2)
    with pytest.raises(ValueError, match="padding_mode='reflect' needs"):
        numbaconv.conv2d(x, w, padding=40, padding_mode="reflect")


def test_output_chunks():
    x = da.zeros((1, 2, 64, 60), chunks=(1, 1, 16, 20))
    w = np.ones((3, 2, 3, 3))
    y = numbaconv.conv2d(x, w, padding="same")
    assert y.chunks == ((1,), (3,), (16,) * 4, (20,) * 3)
    y = numbaconv.conv2d(x, w, stride=2, padding="same")
    assert y.chunks == ((1,), (3,), (8,) * 4, (10,) * 3)
    # Chunk boundaries not on a multiple of the stride move to the nearest one.
    x = da.zeros((1, 1, 30), chunks=(1, 1, (7, 7, 7, 9)))
    y = numbaconv.conv1d(x, np.ones((1, 1, 3)), stride=3, padding="same")
    assert y.chunks[2] == (2, 3, 2, 3) and y.shape[2] == 10
    assert_close(y.compute(), numbaconv.conv1d(np.zeros((1, 1, 30)), np.ones((1, 1, 3)),
                                               stride=3, padding="same"), np.float64)


def test_axis_planning():
    assert aligned_chunks((7, 7, 7, 9), 3) == (6, 9, 6, 9)
    assert aligned_chunks((1, 1, 1, 1), 4) == (4,)
    assert output_chunks((10, 10, 5), 1, 23) == (10, 10, 3)   # "valid" drops 2
    assert output_chunks((10, 10), 1, 5) == (5,)               # and may merge chunks
    assert output_chunks((10, 10), 1, 24) == (10, 14)          # padding adds to the last
    # Circular padding reads the far end of the axis; reflect mirrors the near end.
    window = axis_window(0, 2, 10, 3, 1, 1, 1, "circular")
    assert window.runs == ((9, 9, 1), (0, 2, 1))
    window = axis_window(0, 1, 10, 3, 1, 1, 2, "reflect")
    assert window.runs == ((2, 1, -1), (0, 0, 1))
    window = axis_window(0, 1, 10, 3, 1, 1, 5, "zeros")
    assert window.runs == ()   # wholly in the padding: reads nothing


def test_nan_stays_in_its_receptive_field(monkeypatch):
    # auto's choice for the interior block, made the FFT whatever this machine's tuning.
    monkeypatch.setattr(_dask, "chosen_paths", lambda *_: ("fft", "direct"))
    x = np.random.default_rng(0).standard_normal((1, 1, 8192)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((1, 1, 513)).astype(np.float32)
    chunk = (1, 1, 2048)
    x[0, 0, 3000] = np.nan
    y = numbaconv.conv1d(da.from_array(x, chunks=chunk), w, padding="same").compute()
    ref = numbaconv.conv1d(x, w, padding="same")
    assert np.array_equal(np.isnan(y), np.isnan(ref))
    assert np.isnan(y[0, 0, 3000 - 256:3000 + 257]).all()
    assert np.isfinite(y).sum() == 8192 - 513
    assert_close(np.nan_to_num(y), np.nan_to_num(ref), np.float32)


def test_every_block_takes_one_path(monkeypatch):
    x = np.random.default_rng(0).standard_normal((1, 8, 50, 50)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((8, 8, 3, 3)).astype(np.float32)
    y = numbaconv.conv2d(da.from_array(x, chunks=(1, 8, 20, 20)), w, padding=1)
    seen = set()
    real = _dask.conv_arrays

    def spy(*args):
        seen.add(args[8])
        return real(*args)

    monkeypatch.setattr(_dask, "conv_arrays", spy)
    y.compute(scheduler="sync")
    assert len(seen) == 1 and "auto" not in seen


@pytest.mark.parametrize("function, args", [
    (numbaconv.conv_transpose2d, (np.ones((4, 2, 3, 3)),)),
    (numbaconv.conv_backward, (np.ones((4, 2, 3, 3)), np.ones((1, 2, 3, 3)))),
])
def test_gradients_refuse_dask_arrays(function, args):
    x = da.ones((1, 4, 5, 5), chunks=2)
    with pytest.raises(TypeError, match="dask array"):
        function(x, *args)


def test_weight_may_not_be_a_dask_array():
    with pytest.raises(TypeError, match="weight is a dask array"):
        numbaconv.conv2d(da.ones((1, 2, 5, 5)), da.ones((1, 2, 3, 3)))


def test_unknown_chunk_sizes_are_refused():
    x = da.ones(10, chunks=5)
    x = x[x > 0][None, None]   # boolean indexing leaves the chunk sizes unknown
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        numbaconv.conv1d(x, np.ones((1, 1, 3)))


def test_layers_take_dask_arrays():
    layer = numbaconv.Conv2d(3, 4, 3, padding="same", padding_mode="replicate")
    x = np.random.default_rng(0).standard_normal((2, 3, 17, 13))
    y = layer(da.from_array(x, chunks=(1, 3, 8, 8)))
    assert isinstance(y, da.Array)
    assert_close(y.compute(), layer(x), np.float64)


def test_layer_forward_keeps_a_dask_input_lazy():
    """The layer keeps its input for backward without computing it; backward then
    refuses the dask array, as conv_backward does."""
    def explode(block):
        raise AssertionError("a block was computed")

    x = da.zeros((2, 3, 20, 20), chunks=(1, 3, 10, 10)).map_blocks(
        explode, meta=np.empty((0, 0, 0, 0)))
    layer = numbaconv.Conv2d(3, 4, 3, padding=1)
    y = layer(x)
    assert isinstance(y, da.Array) and y.shape == (2, 4, 20, 20)
    with pytest.raises(TypeError, match="dask array"):
        layer.backward(np.ones(y.shape))


def test_import_does_not_import_dask():
    code = "import numbaconv, sys; print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def _volume():
    x = np.random.default_rng(3).standard_normal((2, 2, 12, 20, 18)).astype(np.float32)
    w = np.random.default_rng(4).standard_normal((3, 2, 3, 3, 3)).astype(np.float32)
    return x, w


def test_process_scheduler_matches_threaded():
    x, w = _volume()
    y = numbaconv.conv3d(da.from_array(x, chunks=(1, 2, 6, 7, 9)), w, padding="same",
                         padding_mode="reflect")
    threaded = y.compute(scheduler="threads")
    with dask.config.set(scheduler="processes", num_workers=2):
        processes = y.compute()
    assert np.array_equal(threaded, processes)
    assert_close(threaded, numbaconv.conv3d(x, w, padding="same", padding_mode="reflect"),
                 np.float32)


def test_distributed_cluster_matches_threaded():
    distributed = pytest.importorskip("distributed")
    x, w = _volume()
    y = numbaconv.conv3d(da.from_array(x, chunks=(1, 2, 6, 7, 9)), w, stride=2,
                         padding="same", padding_mode="circular")
    threaded = y.compute(scheduler="threads")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        clustered = client.compute(y).result()
    assert np.array_equal(threaded, clustered)


def test_out_of_core_example_runs(tmp_path):
    pytest.importorskip("zarr")
    result = subprocess.run(
        [sys.executable, "-m", "numbaconv", "volume", "--gib", "0.01", "--chunk", "32",
         "--kernel", "3", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "check: ok" in result.stdout
    for field in ("tasks", "wall", "GiB/s", "peak RSS"):
        assert field in result.stdout
