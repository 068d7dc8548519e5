"""Convolution of dask arrays: a lazy graph of in-memory convolutions on exact windows.

Imported only when ``conv*`` is given a ``dask.array.Array`` (SPEC.md "Dask arrays").

Each output block is computed from exactly the input it needs, worked out backwards from
the block: along each spatial axis, output positions ``[o0, o1)`` read the input
positions ``[s*o0 - pb, s*(o1 - 1) - pb + dl*(k - 1)]``. Where that window crosses the
array's true edge:

- zero padding is passed to the in-memory call as the block's own padding (the kernels
  skip it; nothing is materialised);
- reflect, replicate and circular padding are gathered explicitly from the positions
  they copy (for circular, from the far end of the axis), as the in-memory call pads
  before its kernel, and the block is then convolved unpadded.

So every block sees the values the whole-array call would, at any padding, stride,
dilation and chunking, including chunks smaller than the halo. A block takes its own
input chunk whole and the parts of its neighbours' chunks from one halo task per chunk.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import operator
from typing import NamedTuple

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ._conv_arrays import conv_arrays
from ._dispatch import chosen_paths
from ._registry import METHODS
from ._padding import NUMPY_MODES
from ._spec import _checked_array, check_call, conv_geometry


class AxisWindow(NamedTuple):
    """What one output block reads along one spatial axis.

    ``runs`` are ``(first, last, step)`` input runs (inclusive, ``step`` +1 or -1, the
    latter mirroring for reflect padding), read in order and joined to give the
    window; ``pads`` is the zero padding left to the in-memory call. No runs means the
    window lies wholly in zero padding.
    """

    runs: tuple
    pads: tuple


def aligned_chunks(chunks: tuple, stride: int) -> tuple:
    """``chunks`` with every inner boundary moved to the nearest multiple of ``stride``
    (boundaries that meet merge), so each output block starts on an input chunk."""
    if stride == 1:
        return chunks
    bounds = np.cumsum(chunks)[:-1]
    length = int(sum(chunks))
    inner = sorted({int(round(b / stride)) * stride for b in bounds} - {0, length})
    edges = [0, *(b for b in inner if 0 < b < length), length]
    return tuple(int(b - a) for a, b in zip(edges[:-1], edges[1:]))


def output_chunks(chunks: tuple, stride: int, out_size: int) -> tuple:
    """Output chunks along one axis: the (stride-aligned) input chunks divided by the
    stride, the last taking the remainder; empty chunks are dropped."""
    edges = [0]
    for bound in np.cumsum(chunks)[:-1]:
        edge = min(int(bound) // stride, out_size)
        if edge > edges[-1]:
            edges.append(edge)
    if out_size > edges[-1] or len(edges) == 1:
        edges.append(out_size)
    return tuple(b - a for a, b in zip(edges[:-1], edges[1:]))


def axis_window(o0: int, o1: int, size: int, kernel: int, stride: int, dilation: int,
                pad_before: int, mode: str) -> AxisWindow:
    """The :class:`AxisWindow` of output positions ``[o0, o1)`` along one axis."""
    lo = stride * o0 - pad_before
    hi = stride * (o1 - 1) - pad_before + dilation * (kernel - 1) + 1
    if 0 <= lo and hi <= size:
        return AxisWindow(((lo, hi - 1, 1),), (0, 0))
    if mode == "zeros":
        start, stop = max(lo, 0), min(hi, size)
        if start >= stop:
            return AxisWindow((), (0, 0))
        return AxisWindow(((start, stop - 1, 1),), (start - lo, hi - stop))
    # The positions each padded position copies, by the np.pad the in-memory call pads
    # with; the part inside the array as one run, so that it takes whole chunks.
    pad_lo, pad_hi = max(0, -lo), max(0, hi - size)
    sources = np.pad(np.arange(size), (pad_lo, pad_hi), mode=NUMPY_MODES[mode])
    sources = sources[lo + pad_lo:hi + pad_lo]
    start, stop = max(lo, 0), min(hi, size)
    core = ((start, stop - 1, 1),) if start < stop else ()
    n_before = min(0, hi) - lo if lo < 0 else 0
    n_after = hi - max(size, lo) if hi > size else 0
    return AxisWindow(_runs(sources[:n_before]) + core
                      + _runs(sources[len(sources) - n_after:]), (0, 0))


def _runs(sources: np.ndarray) -> tuple:
    """``sources`` as ``(first, last, step)`` runs of consecutive positions."""
    runs = []
    for source in sources.tolist():
        if runs:
            first, last, step = runs[-1]
            delta = source - last
            if abs(delta) == 1 and step in (0, delta):
                runs[-1] = (first, source, delta)
                continue
        runs.append((source, source, 0))
    return tuple((a, b, step or 1) for a, b, step in runs)


def _chunk_segments(runs: tuple, edges: np.ndarray) -> list:
    """``(chunk index, (start, stop, step) within it, whole chunk?)`` pieces that read
    ``runs``."""
    segments = []
    for first, last, step in runs:
        position = first
        while (position - last) * step <= 0:
            chunk = int(np.searchsorted(edges, position, side="right")) - 1
            base, top = int(edges[chunk]), int(edges[chunk + 1]) - 1
            end = min(last, top) if step > 0 else max(last, base)
            stop = end - base + step
            # A slice's (start, stop, step): slices themselves are unhashable here.
            local = (position - base, None if stop < 0 else stop, step)
            segments.append((chunk, local, step > 0 and position == base and end == top))
            position = end + step
    return segments


class BlockParameters(NamedTuple):
    """What every block's task shares (one graph entry, not one copy per task)."""

    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple
    dilation: tuple
    groups: int
    method: str           # the path every block takes for finite data
    nonfinite_method: str  # ... and for data holding NaN or Inf
    dtype: np.dtype


def convolve_block(pieces, windows, parameters: BlockParameters) -> np.ndarray:
    """One output block: assemble its window from ``pieces`` and convolve it in memory.

    ``pieces`` is an input chunk or piece, or lists of them nested one level per
    trailing spatial axis (``np.block`` order); ``windows`` gives each spatial axis's
    :class:`AxisWindow`.
    """
    window = np.block(pieces) if isinstance(pieces, list) else pieces
    return _convolve_window(window, tuple(w.pads for w in windows), parameters)


def convolve_zero_block(window_shape, parameters: BlockParameters) -> np.ndarray:
    """An output block whose window lies wholly in zero padding: it reads no input."""
    window = np.zeros(window_shape, dtype=parameters.dtype)
    return _convolve_window(window, ((0, 0),) * len(parameters.stride), parameters)


def _convolve_window(window, pads, p: BlockParameters) -> np.ndarray:
    method = p.method
    if method == "fft" and not (np.isfinite(window).all()
                                and np.isfinite(p.weight).all()):
        method = p.nonfinite_method
    return conv_arrays(window, p.weight, p.bias, p.stride, pads, p.dilation, p.groups,
                 "zeros", method, len(p.stride))


def dask_conv(x, weight, bias, stride, padding, dilation, groups, padding_mode, method,
              d):
    """``conv*`` of a dask array ``x``: a lazy dask array of the in-memory result.

    Arguments as for :func:`numbaconv.conv`; they are checked here, before any graph is
    built. ``auto`` is resolved once, for an interior block's window, and that path is
    used for every block (with ``auto``'s usual switch away from the FFT for a block
    holding NaN or Inf).
    """
    _checked_array("input", np.empty(0, dtype=x.dtype))
    weight = _checked_array("weight", weight)
    if bias is not None:
        bias = _checked_array("bias", bias)
    if any(np.isnan(c) for axis in x.chunks for c in axis):
        raise ValueError(
            "input is a dask array with unknown chunk sizes (NaN in its chunks); call "
            "x.compute_chunk_sizes() first")
    geom, padding_mode, method, dtype = check_call(
        x.shape, x.dtype, weight, bias, stride, padding, dilation, groups, padding_mode,
        method, d, METHODS)
    d = geom.d
    if geom.batch is None:
        return dask_conv(x[None], weight, bias, stride, padding, dilation, groups,
                         padding_mode, method, d)[0]

    # The channel axis whole; strided axes chunked at multiples of the stride.
    spatial_chunks = tuple(aligned_chunks(c, s) for c, s in zip(x.chunks[2:], geom.stride))
    x = x.rechunk((x.chunks[0], (geom.in_channels,)) + spatial_chunks)
    out_spatial_chunks = tuple(
        output_chunks(c, s, o)
        for c, s, o in zip(spatial_chunks, geom.stride, geom.out_spatial))

    axes = []  # per spatial axis: [(AxisWindow, segments) per output block]
    for a in range(d):
        edges = np.concatenate([[0], np.cumsum(spatial_chunks[a])]).astype(np.int64)
        out_edges = np.concatenate([[0], np.cumsum(out_spatial_chunks[a])])
        blocks = []
        for o0, o1 in zip(out_edges[:-1], out_edges[1:]):
            window = axis_window(int(o0), int(o1), geom.spatial[a], geom.kernel[a],
                                 geom.stride[a], geom.dilation[a], geom.padding[a][0],
                                 padding_mode)
            blocks.append((window, _chunk_segments(window.runs, edges)))
        axes.append(blocks)

    # auto's choice for the largest (interior) block's window, unpadded.
    window_shape = tuple(
        geom.stride[a] * (max(out_spatial_chunks[a]) - 1)
        + geom.dilation[a] * (geom.kernel[a] - 1) + 1 for a in range(d))
    interior = (max(1, *x.chunks[0]), geom.in_channels) + window_shape
    if method == "auto":
        finite_method, nonfinite_method = chosen_paths(
            conv_geometry(interior, weight.shape, geom.stride, 0, geom.dilation,
                          geom.groups), dtype.itemsize)
    else:
        finite_method = nonfinite_method = method
    parameters = BlockParameters(weight, bias, geom.stride, geom.dilation, geom.groups,
                                 finite_method, nonfinite_method, dtype)

    token = tokenize(x.name, weight, bias, geom, padding_mode, method, dtype)
    name, halo_name = f"numbaconv-conv-{token}", f"numbaconv-halo-{token}"
    parameters_key = (f"numbaconv-parameters-{token}",)
    graph = {parameters_key: parameters}
    with _collector_paused():
        _add_block_tasks(graph, x, axes, geom, out_spatial_chunks, name, halo_name,
                         parameters_key)
    layer = HighLevelGraph.from_collections(name, graph, dependencies=[x])
    chunks = (x.chunks[0], (geom.out_channels,)) + out_spatial_chunks
    return da.Array(layer, name, chunks, meta=np.empty((0,) * (d + 2), dtype=dtype))


@contextlib.contextmanager
def _collector_paused():
    """Python's cycle collector off while the graph's tuples are made: they hold no
    cycles, and its passes over them took 70% of the build (1.3 s of 1.7 s for 10,000
    3D blocks)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _add_block_tasks(graph, x, axes, geom, out_spatial_chunks, name, halo_name,
                     parameters_key):
    """One task per output block, and one per input chunk that copies out the parts of
    it that other blocks read (its halo parts).

    A block takes its own chunk whole and the halo parts of its neighbours, so each
    chunk is freed as soon as its own block and its halo task have run; with one slicing
    task per part instead, dask kept every chunk until its last neighbour had run,
    2-3 planes of chunks at once (2.4 GiB for a 6 GiB volume in 128^3 chunks).
    """
    halos = {}  # input chunk index -> {part: its position in the halo task's result}
    rereads = _Rereads(x, name)
    for n, batch in enumerate(x.chunks[0]):
        for index in itertools.product(*(range(len(blocks)) for blocks in axes)):
            chosen = [axes[a][j] for a, j in enumerate(index)]
            windows = tuple(window for window, _ in chosen)
            if any(not window.runs for window in windows):
                shape = (batch, geom.in_channels) + tuple(
                    geom.stride[a] * (out_spatial_chunks[a][j] - 1)
                    + geom.dilation[a] * (geom.kernel[a] - 1) + 1
                    for a, j in enumerate(index))
                graph[(name, n, 0) + index] = (convolve_zero_block, shape, parameters_key)
                continue
            pieces = _nested_pieces(halos, rereads, halo_name, n,
                                    [segments for _, segments in chosen])
            graph[(name, n, 0) + index] = (convolve_block, pieces, windows,
                                           parameters_key)
    for chunk_index, parts in halos.items():
        graph[(halo_name,) + chunk_index] = (halo_parts, (x.name,) + chunk_index,
                                             list(parts))
    graph.update(rereads.tasks)


class _Rereads:
    """Where blocks take whole input chunks from: a second read of the chunk, when its
    task is a read (a chain of single-input tasks down to data, as for ``from_zarr`` or
    ``from_array``), else the chunk itself.

    With the chunk itself, a chunk stays in memory from its read, early enough for its
    neighbours' halos, until its own block runs: dask then held 2-5 planes of chunks
    (9.3 GiB for a 28 GiB volume in 128^3 chunks). Read a second time, just before its
    block, the first read goes as soon as its halo parts are copied out.
    """

    def __init__(self, x, name):
        self.name = x.name
        self.reread_name = f"{name}-reread"
        self.tasks = {}
        try:
            from dask._task_spec import GraphNode, Task

            self._graph = x.__dask_graph__()
            self._node_types = (GraphNode, Task)
        except (ImportError, AttributeError):  # another dask's graph spec: no rereads
            self._graph = None

    def key(self, index):
        """The key a block reads the whole chunk ``index`` from."""
        original = (self.name,) + index
        if self._graph is None:
            return original
        new = (self.reread_name,) + index
        if new not in self.tasks:
            task = self._fused_read(original, new)
            if task is None:
                return original
            self.tasks[new] = task
        return new

    def _fused_read(self, key, new_key):
        node_type, task_type = self._node_types
        chain, node = [], self._graph.get(key)
        while isinstance(node, task_type) and len(chain) < 4:
            chain.append(node)
            inputs = [k for k in node.dependencies
                      if isinstance(self._graph.get(k), task_type)]
            if not inputs:
                return node_type.fuse(*chain, key=new_key) if len(chain) > 1 else \
                    chain[0].substitute({}, key=new_key)
            if len(inputs) > 1:
                return None
            node = self._graph.get(inputs[0])
        return None


def halo_parts(chunk: np.ndarray, parts: list) -> tuple:
    """Copies of the ``parts`` (per spatial axis ``(start, stop, step)``) of an input
    chunk that neighbouring blocks read: copies, so that the chunk itself can go."""
    lead = (slice(None), slice(None))
    return tuple(chunk[lead + tuple(slice(*axis) for axis in part)].copy()
                 for part in parts)


def _nested_pieces(halos, rereads, halo_name, n, axis_segments):
    """The nested list of input pieces (``np.block`` order) for one block: whole chunks
    by their keys (from ``rereads``), other parts taken from their chunk's halo task
    (registered in ``halos``)."""
    pieces = []
    for combination in itertools.product(*axis_segments):
        chunks, part, whole = zip(*combination)
        index = (n, 0) + chunks
        if all(whole):
            pieces.append(rereads.key(index))
        else:
            positions = halos.setdefault(index, {})
            pieces.append((operator.getitem, (halo_name,) + index,
                           positions.setdefault(part, len(positions))))
    # Nest them one list level per axis, the last axis innermost.
    for count in [len(segments) for segments in axis_segments[:0:-1]]:
        pieces = [pieces[i:i + count] for i in range(0, len(pieces), count)]
    # np.block joins the innermost lists along the last axis, so outer lists of one
    # element can go; a lone piece then needs no assembly at all.
    while isinstance(pieces, list) and len(pieces) == 1:
        pieces = pieces[0]
    return pieces
