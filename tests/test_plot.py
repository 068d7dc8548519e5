"""bench ... --plot: the ratio bar charts (numbaconv._plot), on fake measurements so
that nothing here times anything."""

import math
import sys

import pytest

from numbaconv import _peers, _plot
from numbaconv.__main__ import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


def _read_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    import matplotlib.image

    return matplotlib.image.imread(path)  # (height, width, channels)


def _fake_result(entry="forward"):
    """What ``_peers.measure`` returns for two cases and two rounds: torch on both,
    torch_cl on the 2D case only (no 1D channels_last), onnxruntime missing."""
    cases = [c for c in _peers.FORWARD if c.name in ("r50_1x1_56", "conv1d_s2")]
    times = {"numbaconv": {"r50_1x1_56": [1.0e-3, 1.2e-3], "conv1d_s2": [2.0e-3, 2.0e-3]},
             "torch": {"r50_1x1_56": [2.0e-3, 2.4e-3], "conv1d_s2": [1.0e-3, 1.0e-3]},
             "torch_cl": {"r50_1x1_56": [0.5e-3, 0.6e-3]}}
    from dataclasses import asdict

    return dict(entry=entry, cases=[asdict(c) for c in cases],
                libraries=["numbaconv", "torch", "torch_cl"], times=times,
                missing=["onnxruntime"], rounds=2)


def test_plot_ratios_writes_a_png_and_skips_missing_ratios(mpl, tmp_path):
    panel = {"title": "fake peers", "cases": [
        ("r50_3x3_56 (dense)", {"PyTorch NCHW": 0.77, "ONNX Runtime": 0.74}),
        ("stem_1d (stem)", {"PyTorch NCHW": 0.55, "PyTorch channels_last": None,
                            "ONNX Runtime": 0.93}),
        ("b8_3x3_56 (dense)", {"PyTorch NCHW": 1.7, "ONNX Runtime": float("nan")}),
        ("img_k63 (large kernel)", {"PyTorch NCHW": 0.02, "ONNX Runtime": 0.0}),
        ("no_ratio_at_all", {}),
    ]}
    path = tmp_path / "peers.png"
    assert _plot.plot_ratios([panel], str(path)) == str(path)
    image = _read_png(path)
    height, width = image.shape[:2]
    assert 300 < width < 3000 and 200 < height < 3000


def test_plot_ratios_draws_several_panels(mpl, tmp_path):
    one = {"title": "forward", "cases": [("a", {"PyTorch NCHW": 1.2})]}
    two = {"title": "signal", "cases": [(f"case_{i}", {"SciPy": 0.5 + i / 10})
                                        for i in range(12)]}
    single, double = tmp_path / "one.png", tmp_path / "two.png"
    _plot.plot_ratios([one], single)
    _plot.plot_ratios([one, two], double)
    assert _read_png(double).shape[0] > _read_png(single).shape[0]  # one more subplot
    with pytest.raises(ValueError, match="panels"):
        _plot.plot_ratios([], tmp_path / "none.png")


def test_peers_panel_from_a_measure_result():
    panel = _plot.peers_panel(_fake_result())
    assert "bench --peers" in panel["title"] and "2 rounds" in panel["title"]
    cases = dict(panel["cases"])
    assert list(cases) == ["r50_1x1_56 (dense)", "conv1d_s2 (strided)"]  # suite order
    assert cases["r50_1x1_56 (dense)"] == pytest.approx(
        {"PyTorch NCHW": 0.5, "PyTorch channels_last": 2.0})
    # torch_cl has no 1D case: None (which keeps the peers' order); onnxruntime is not
    # installed: left out
    row = cases["conv1d_s2 (strided)"]
    assert list(row) == ["PyTorch NCHW", "PyTorch channels_last"]
    assert row["PyTorch NCHW"] == pytest.approx(2.0) and row["PyTorch channels_last"] is None
    assert all(math.isfinite(r) for row in cases.values() for r in row.values()
               if r is not None)


def test_peers_panel_of_the_layout_entry_divides_by_its_own_library():
    result = _fake_result("layout")
    times = result["times"]
    result.update(own="numbaconv_cl", libraries=["numbaconv_cl", "numbaconv", "torch_cl"],
                  times={"numbaconv_cl": times["numbaconv"], "numbaconv": times["torch"],
                         "torch_cl": times["torch_cl"]})
    panel = _plot.peers_panel(result)
    assert "bench --layout" in panel["title"]
    row = dict(panel["cases"])["r50_1x1_56 (dense)"]
    assert row == pytest.approx({"numbaconv channels-first": 0.5,
                                 "PyTorch channels_last": 2.0})


def test_cli_plot_draws_the_measured_ratios(mpl, tmp_path, monkeypatch, capsys):
    calls = []

    def fake_measure(entry, names, rounds):
        calls.append((entry, names, rounds))
        return _fake_result(entry)

    monkeypatch.setattr(_peers, "measure", fake_measure)
    path = tmp_path / "p.png"
    assert main(["bench", "--backward", "--cases", "r50_1x1_s2", "--rounds", "1",
                 "--plot", str(path)]) == 0
    assert calls == [("backward", ["r50_1x1_s2"], 1)]
    assert f"plot: {path}" in capsys.readouterr().out
    _read_png(path)


def test_without_matplotlib_the_message_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    with pytest.raises(ImportError, match=r"numbaconv\[plot\]"):
        _plot.plot_ratios([{"title": "t", "cases": [("a", {"p": 1.0})]}],
                          tmp_path / "x.png")

    def must_not_measure(*args):
        raise AssertionError("measured although the plot cannot be drawn")

    monkeypatch.setattr(_peers, "measure", must_not_measure)
    with pytest.raises(SystemExit, match=r"numbaconv\[plot\]"):
        main(["bench", "--peers", "--cases", "r50_1x1_56", "--plot",
              str(tmp_path / "x.png")])


def test_cli_plot_alone_draws_the_peers_and_signal_panels(mpl, tmp_path, monkeypatch,
                                                          capsys):
    from numbaconv import _signal_bench

    entries = []
    monkeypatch.setattr(_peers, "measure", lambda entry, names, rounds: (
        entries.append(entry), _fake_result(entry))[1])
    monkeypatch.setattr(_signal_bench, "measure", lambda names, rounds: (
        entries.append("signal"),
        {"times": {"img_k63": {"numbaconv": [1.0, 2.0], "fftconvolve": [2.0, 2.0]}},
         "rounds": rounds})[1])
    monkeypatch.setattr(_signal_bench, "format_result", lambda result: "")
    panels = []
    monkeypatch.setattr(_plot, "plot_ratios", lambda p, path: (panels.extend(p), path)[1])
    assert main(["bench", "--plot", str(tmp_path / "all.png"), "--rounds", "2"]) == 0
    assert entries == ["forward", "signal"]
    assert panels[1]["cases"] == [("img_k63", {"SciPy (best)": 0.75})]
    with pytest.raises(SystemExit, match="--cases"):
        main(["bench", "--plot", str(tmp_path / "all.png"), "--cases", "img_k63"])
