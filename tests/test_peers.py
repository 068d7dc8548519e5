"""bench --peers / --backward / --transpose: the peers compute what numbaconv computes,
and the worker processes report their times."""

import numpy as np
import pytest

from numbaconv import _peers

PEERS = [lib for lib in ("torch", "torch_cl", "onnxruntime") if _peers.available(lib)]


def _values(result):
    if isinstance(result, (list, tuple)):
        return [np.asarray(r) for r in result if r is not None]
    return [np.asarray(result)]


@pytest.mark.skipif(not PEERS, reason="no peer installed (the peers extra)")
@pytest.mark.parametrize("entry,name", [
    ("forward", "resnext_s2"), ("forward", "incep_1x7"), ("forward", "stem_1d"),
    ("backward", "mbnet_stem"), ("transpose", "t2d_3x3_s2"), ("transpose", "t3d_4x4_s4"),
])
def test_peers_compute_what_numbaconv_computes(entry, name):
    """Each peer's call, as the benchmark builds it, gives numbaconv's values, so that
    the ratios compare the same work."""
    cases = [c for c in _peers.SUITES[entry] if c.name == name]
    ours = _values(_peers.build_calls("numbaconv", entry, cases, 2)[name]())
    for lib in PEERS:
        calls = _peers.build_calls(lib, entry, cases, 2)
        if name not in calls:  # channels_last has no 1D layout; ORT no backward
            continue
        theirs = _values(calls[name]())
        # torch's backward returns (grad_input, grad_weight, None); ORT a list of one
        theirs = [t.numpy() if hasattr(t, "numpy") else t for t in theirs]
        assert len(theirs) == len(ours), lib
        for a, b in zip(ours, theirs):
            b = np.asarray(b, dtype=np.float64)
            scale = max(1.0, float(np.abs(b).max()))
            assert a.shape == b.shape, lib
            assert float(np.abs(a - b).max()) <= 1e-4 * scale, lib


def test_measure_runs_each_library_in_its_own_process():
    result = _peers.measure("transpose", ["t1d_k4_s2"], rounds=2, libraries=PEERS[:1],
                            progress=False)
    assert result["libraries"][0] == "numbaconv"
    times = result["times"]["numbaconv"]["t1d_k4_s2"]
    assert len(times) == 2 and all(t > 0 for t in times)
    table = _peers.format_result(result)
    assert "t1d_k4_s2" in table and "geomean all" in table
    if PEERS:
        ratio = _peers.ratios(result)["t1d_k4_s2"]
        assert ratio["fastest"] > 0


def test_missing_peers_are_reported(monkeypatch):
    monkeypatch.setattr(_peers, "available", lambda lib: lib == "numbaconv")
    result = _peers.measure("forward", ["r50_1x1_56"], rounds=1, progress=False)
    assert result["missing"] == ["torch", "torch_cl", "onnxruntime"]
    assert "not installed, skipped" in _peers.format_result(result)


def test_every_case_is_a_valid_layer():
    """Every case of the three suites is a call numbaconv accepts (checked by shape)."""
    import numbaconv
    from numbaconv._spec import transpose_output_shape

    for case in _peers.FORWARD + _peers.BACKWARD:
        numbaconv.output_shape(case.input_shape, case.weight_shape,
                               tuple(case.per_axis(case.stride)), case.padding,
                               tuple(case.per_axis(case.dilation)))
    for case in _peers.TRANSPOSE:
        transpose_output_shape(case.input_shape, case.weight_shape, case.stride,
                               case.padding, case.output_padding, case.groups,
                               case.dilation, d=case.d)


def test_layers_bench_times_layer_and_function_on_the_same_arrays(capsys, tmp_path):
    """bench --layers: both calls per case and round, the ratio their quotient."""
    import json

    from numbaconv import _layer_bench
    from numbaconv.__main__ import main

    assert main(["bench", "--layers", "--cases", "r50_1x1_56,mbv3_dw5", "--rounds", "2",
                 "--json", str(tmp_path / "layers.json")]) == 0
    table = capsys.readouterr().out
    assert "r50_1x1_56" in table and "mbv3_dw5" in table and "geomean all" in table
    result = json.loads((tmp_path / "layers.json").read_text())
    rows = result["times"]["mbv3_dw5"]
    assert len(rows) == 2 and all(t > 0 for row in rows for t in row)
    ratio = _layer_bench.ratios(result)["mbv3_dw5"]
    assert ratio == np.median([layer / function for layer, function in rows])
    assert _layer_bench.ratio_panel(result)["cases"][0][0] == "r50_1x1_56 (dense)"


@pytest.mark.skipif("torch" not in PEERS, reason="PyTorch not installed")
def test_float64_entry_runs_both_libraries_in_float64():
    """bench --float64: numbaconv and PyTorch convolve the forward suite's arrays in
    float64, to float64's tolerance of each other."""
    cases = [c for c in _peers.SUITES["float64"] if c.name == "resnext_s2"]
    ours = _peers.build_calls("numbaconv", "float64", cases, 2)["resnext_s2"]()
    theirs = _peers.build_calls("torch", "float64", cases, 2)["resnext_s2"]().numpy()
    assert ours.dtype == np.float64 and theirs.dtype == np.float64
    scale = max(1.0, float(np.abs(theirs).max()))
    assert float(np.abs(ours - theirs).max()) <= 1e-10 * scale
    assert _peers.PEERS["float64"] == ("torch",) and _peers.OWN["float64"] == "numbaconv"
