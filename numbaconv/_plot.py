"""``bench ... --plot FILE.png``: bar charts of numbaconv's time over its peers' times.

A *panel* is ``{"title": str, "cases": [(case_name, {peer_name: ratio, ...}), ...]}``
with ``ratio = numbaconv time / peer time`` (< 1: numbaconv faster); a ratio that is
absent, ``None``, not finite or not positive is left out. :func:`plot_ratios` draws
one subplot per panel: per case a group of horizontal bars, one per peer, from the
1.0 line to the ratio on a log axis (so 0.5 and 2 are as far from 1 on either side).

matplotlib is optional (the ``plot`` extra) and imported only when a plot is drawn,
with its non-interactive Agg backend.
"""

from __future__ import annotations

import math
import textwrap

INSTALL = 'pip install "numbaconv[plot]"'
XLABEL = "numbaconv time / peer time, log scale; < 1: numbaconv faster"

# bench --peers' library names (numbaconv._peers) as a plot's legend spells them.
PEER_NAMES = {"torch": "PyTorch NCHW", "torch_cl": "PyTorch channels_last",
              "onnxruntime": "ONNX Runtime", "numbaconv": "numbaconv channels-first",
              "numbaconv_cl": "numbaconv channels_last"}
ENTRY_TITLES = {"forward": "bench --peers (forward, conv)",
                "backward": "bench --backward (conv_backward, both gradients)",
                "transpose": "bench --transpose (conv_transpose*d)",
                "layout": "bench --layout (numbaconv channels_last's time over the peers')",
                "float64": "bench --float64 (the forward suite in float64, conv)"}


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or an ImportError that says what to
    install."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"--plot needs matplotlib: {INSTALL}") from None
    matplotlib.use("Agg")  # no display needed; before pyplot is first imported
    import matplotlib.pyplot as plt

    return plt


def require_matplotlib() -> None:
    """For the command line, before a long measurement: SystemExit with the install
    hint where matplotlib is missing."""
    try:
        _pyplot()
    except ImportError as exc:
        raise SystemExit(str(exc)) from None


def _valid(ratio) -> bool:
    if ratio is None or isinstance(ratio, (bool, str)):
        return False
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        return False
    return math.isfinite(ratio) and ratio > 0


def peers_panel(result) -> dict:
    """The panel of a :func:`numbaconv._peers.measure` result: its per-case ratios to
    each peer (``numbaconv._peers.ratios``, the median over rounds of the same round's
    ratio), cases labelled with their kind, in the suite's order."""
    from ._peers import ratios

    rat = ratios(result)
    kinds = {c["name"]: c["kind"] for c in result["cases"]}
    own = result.get("own", "numbaconv")  # numbaconv_cl for the layout entry
    peers = [lib for lib in result["libraries"] if lib != own]
    cases = [(f"{name} ({kinds[name]})",  # None where a peer has no such layer
              {PEER_NAMES.get(lib, lib): row.get(lib) for lib in peers})
             for name, row in rat.items()]
    title = ENTRY_TITLES.get(result["entry"], f"bench ({result['entry']})")
    rounds = result["rounds"]
    title += (f": median over {rounds} round{'s' if rounds != 1 else ''}, each library "
              "in its own process")
    return {"title": title, "cases": cases}


def _ticks(lo, hi):
    """Tick values within ``[lo, hi]``: powers of two (of four over a wide range), and
    0.67, 0.8, 1.25 and 1.5 over a narrow one."""
    if hi / lo <= 20:
        candidates = [0.125, 0.25, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 4.0, 8.0]
    else:
        step = 1 if hi / lo <= 2.0 ** 11 else 2
        candidates = [2.0 ** e for e in range(-20, 21, step)]
    return [t for t in candidates if lo <= t <= hi]


def _format(t) -> str:
    return f"{t:g}" if t >= 0.5 else f"1/{round(1 / t)}"


FASTER = (0.86, 0.95, 0.86)  # the background of the numbaconv-faster side


def plot_ratios(panels, path, *, dpi: int = 110) -> str:
    """Draw ``panels`` (see the module docstring), one subplot each, stacked, and save
    the figure to ``path`` (PNG; another extension matplotlib knows, such as .svg or
    .pdf, gives that format). Returns ``path``.

    Each peer keeps one colour over all panels; each panel's title ends with every
    peer's geomean ratio over that panel's cases. A case without any ratio shows
    ``n/a`` on the 1.0 line.
    """
    panels = list(panels)
    if not panels:
        raise ValueError("plot_ratios: panels is empty")
    plt = _pyplot()
    from matplotlib.patches import Patch

    named = []  # every peer once, in order of first appearance (a None ratio counts)
    for panel in panels:
        for _, row in panel["cases"]:
            named += [peer for peer in (row or {}) if peer not in named]
    peers = [peer for peer in named  # those with a ratio to draw: one colour each
             if any(_valid((row or {}).get(peer)) for p in panels for _, row in p["cases"])]
    palette = plt.get_cmap("tab10").colors
    colours = {peer: palette[i % len(palette)] for i, peer in enumerate(peers)}

    bar = 0.8 / max(1, len(peers))  # a case's group is 0.8 of a row high
    heights = [max(2, len(p["cases"])) * (0.12 + 0.13 * len(peers)) + 1.2 for p in panels]
    legend_inches = 0.45
    longest = max((len(name) for p in panels for name, _ in p["cases"]), default=10)
    total = sum(heights) + legend_inches
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(7.0 + 0.06 * longest, total),
                             gridspec_kw={"height_ratios": heights})
    for ax, panel in zip(axes[:, 0], panels):
        cases = list(panel["cases"])
        values = [r for _, row in cases for r in (row or {}).values() if _valid(r)]
        low = math.log(min([float(v) for v in values] + [0.5]))
        high = math.log(max([float(v) for v in values] + [2.0]))
        margin = 0.15 * (high - low) + 0.1  # room for the value labels
        lo, hi = math.exp(low - margin), math.exp(high + margin)
        for i, (_, row) in enumerate(cases):
            present = [p for p in peers if _valid((row or {}).get(p))]
            if not present:
                ax.text(1.0, i, " n/a", va="center", ha="left", fontsize=7, color="0.4")
            for j, peer in enumerate(present):
                ratio = float(row[peer])
                y = i + (j - (len(present) - 1) / 2) * bar
                ax.barh(y, ratio - 1.0, left=1.0, height=bar * 0.92,
                        color=colours[peer], edgecolor="none", zorder=2)
                label = f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"
                ax.text(ratio * (1.02 if ratio >= 1 else 1 / 1.02), y, label,
                        va="center", ha="left" if ratio >= 1 else "right", fontsize=7)
        ax.axvspan(lo, 1.0, color=FASTER, zorder=0, linewidth=0)
        ax.axvline(1.0, color="black", linewidth=1.2, zorder=3)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ticks = _ticks(lo, hi)
        ax.set_xticks(ticks, [_format(t) for t in ticks])
        ax.minorticks_off()
        ax.grid(axis="x", color="0.8", linewidth=0.6, zorder=1)
        ax.set_yticks(range(len(cases)), [name for name, _ in cases], fontsize=8.5)
        ax.set_ylim(len(cases) - 0.5, -0.5)  # the first case on top
        ax.set_xlabel(XLABEL, fontsize=9)
        geomeans = []
        for peer in peers:
            mine = [row[peer] for _, row in cases if _valid((row or {}).get(peer))]
            if mine:
                gm = math.exp(sum(math.log(v) for v in mine) / len(mine))
                geomeans.append(f"{peer} {gm:.2f}")
        # Wrapped, so that a long title stays within the figure's width.
        title = "\n".join(textwrap.wrap(panel.get("title", ""), 95))
        if geomeans:
            title += "\ngeomean: " + ", ".join(geomeans)
        ax.set_title(title, fontsize=9.5, loc="left")
    handles = [Patch(color=colours[p], label=p) for p in peers]
    handles.append(Patch(color=FASTER, label="numbaconv faster (< 1)"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8.5,
               frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - legend_inches / total))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
