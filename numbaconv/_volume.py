"""``python -m numbaconv volume``: a larger-than-memory 3D convolution, zarr to zarr.

Makes a synthetic float32 volume on disk (once; it is reused while its shape and chunks
match), convolves it through dask (3D, ``"same"``, reflect padding) into a zarr output
with a progress bar, prints size, chunking, task count, wall time, throughput and the
process's peak memory, and checks sampled blocks against the in-memory call on windows
read straight from the input. Needs the ``dask`` extra (dask, zarr).
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

GIB = 2**30
# Written chunks are stored as they are: by default zarr first compares every chunk with
# the fill value, to skip storing empty ones, and on the 6 GiB volume that comparison was
# 7.5% of the whole run's CPU time (perf), for outputs that are never empty here.
_WRITE_CONFIG = {"write_empty_chunks": True}


def volume_shape(gib: float, chunk: int) -> tuple[int, int, int]:
    """A ``(D, H, W)`` float32 volume of about ``gib`` GiB, a whole number of chunks
    along H and W (D takes the rest), at least one chunk along each axis."""
    voxels = gib * GIB / 4
    side = chunk * max(1, round(voxels ** (1 / 3) / chunk))
    return (max(chunk, round(voxels / side**2)), side, side)


def make_volume(path: str, shape, chunk: int, seed: int = 0) -> None:
    """Write a float32 normal-random volume of ``shape`` to the zarr array at ``path``,
    chunk by chunk (the whole volume is never in memory)."""
    import dask.array as da
    import zarr

    chunks = (chunk,) * 3
    target = zarr.create_array(path, shape=shape, chunks=chunks, dtype="float32",
                               compressors=None, overwrite=True)
    values = da.random.default_rng(seed).standard_normal(size=shape, chunks=chunks,
                                                         dtype=np.float32)
    da.store(values, target, lock=False)


def _existing(path: str, shape, chunk: int) -> bool:
    import zarr

    try:
        array = zarr.open_array(path, mode="r")
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.ArrayNotFoundError):
        return False
    return array.shape == tuple(shape) and array.chunks == (chunk,) * 3


def peak_rss_gib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def check_blocks(source, result, weight, rng, samples: int = 3) -> float:
    """Largest error, relative to the output's scale, of sampled output regions against
    the in-memory call on their input windows (reflect padding only where a window
    meets the volume's edge): both corners, and regions across chunk borders."""
    from . import conv3d

    shape, chunk = source.shape, source.chunks
    halo = [(k - 1) // 2 for k in weight.shape[2:]]
    size = [min(c, s) for c, s in zip(chunk, shape)]
    starts = [tuple(0 for _ in shape), tuple(s - z for s, z in zip(shape, size))]
    for _ in range(samples):
        # Centred on a chunk corner, so the region spans chunk borders on every axis.
        starts.append(tuple(
            int(np.clip(c * rng.integers(1, max(2, s // c)) - z // 2, 0, s - z))
            for c, s, z in zip(chunk, shape, size)))
    worst = 0.0
    for start in starts:
        region = tuple(slice(a, a + z) for a, z in zip(start, size))
        lo = [max(r.start - h, 0) for r, h in zip(region, halo)]
        hi = [min(r.stop + h, s) for r, h, s in zip(region, halo, shape)]
        pads = tuple((h - (r.start - a), h - (b - r.stop))
                     for r, h, a, b in zip(region, halo, lo, hi))
        window = source[tuple(slice(a, b) for a, b in zip(lo, hi))]
        expected = conv3d(window[None, None], weight, padding=pads,
                          padding_mode="reflect")[0, 0]
        got = result[region]
        scale = max(1.0, float(np.abs(expected).max()))
        worst = max(worst, float(np.abs(got - expected).max()) / scale)
    return worst


def in_memory_rates(source, weight, gib: float = 1.0, rounds: int = 5):
    """Voxels per second of the in-memory call on a sub-volume of about ``gib`` GiB read
    from ``source``: its first call (which also pays for touching fresh memory), and the
    median of ``rounds`` calls after it."""
    from . import conv3d

    d, h, w = source.shape
    depth = max(1, min(d, int(gib * GIB / 4 / (h * w))))
    block = np.asarray(source[:depth])[None, None]
    times = []
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        conv3d(block, weight, padding="same", padding_mode="reflect")
        times.append(time.perf_counter() - t0)
    return block.size / times[0], block.size / float(np.median(times[1:]))


def copy_time(source, path: str, scheduler: str, workers: int) -> float:
    """Wall time of storing ``source`` into a new zarr array at ``path`` through dask
    (the out-of-core run's reads and writes without its convolution); removes it."""
    import dask
    import dask.array as da
    import zarr

    target = zarr.create_array(path, shape=source.shape, chunks=source.chunks,
                               dtype="float32", compressors=None, overwrite=True,
                               config=_WRITE_CONFIG)
    stored = da.store(da.from_zarr(source), target, lock=False, compute=False)
    t0 = time.perf_counter()
    if scheduler in ("distributed", "processes"):
        scheduler = "threads"
    dask.compute(stored, scheduler=scheduler, num_workers=workers)
    wall = time.perf_counter() - t0
    shutil.rmtree(path, ignore_errors=True)
    return wall


def run(directory: str, gib: float, chunk: int, kernel: int, scheduler: str,
        workers: int, compare: bool, keep: bool) -> int:
    """Make (or reuse) the volume, convolve it out of core, report and check; 0 if the
    check passes."""
    import dask
    import dask.array as da
    import zarr
    from dask.diagnostics import ProgressBar

    from . import conv3d

    os.makedirs(directory, exist_ok=True)
    source_path = os.path.join(directory, "input.zarr")
    result_path = os.path.join(directory, "output.zarr")
    shape = volume_shape(gib, chunk)
    if not _existing(source_path, shape, chunk):
        needed = 2.05 * math.prod(shape) * 4 / GIB
        if _free_gib(directory) < needed:
            print(f"the input and output need {needed:.1f} GiB free in {directory}; "
                  f"there are {_free_gib(directory):.1f}")
            return 2
        print(f"writing a {np.prod(shape) * 4 / GIB:.2f} GiB synthetic volume to "
              f"{source_path} ...", flush=True)
        t0 = time.perf_counter()
        # In a child process, so that the peak memory below is the convolution's own.
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            pool.submit(make_volume, source_path, shape, chunk).result()
        print(f"  written in {time.perf_counter() - t0:.1f} s", flush=True)

    source = zarr.open_array(source_path, mode="r")
    shutil.rmtree(result_path, ignore_errors=True)  # an earlier run's, kept
    if _free_gib(directory) < 1.05 * source.nbytes / GIB:
        print(f"the output needs {source.nbytes / GIB:.1f} GiB free in {directory}; "
              f"there are {_free_gib(directory):.1f}")
        return 2
    weight = np.random.default_rng(1).random((1, 1) + (kernel,) * 3).astype(np.float32)
    weight /= weight.sum()
    x = da.from_zarr(source)[None, None]
    y = conv3d(x, weight, padding="same", padding_mode="reflect")[0, 0]
    target = zarr.create_array(result_path, shape=y.shape, chunks=source.chunks,
                               dtype="float32", compressors=None, overwrite=True,
                               config=_WRITE_CONFIG)
    stored = da.store(y, target, lock=False, compute=False)
    tasks = len(stored.__dask_graph__())
    size = source.nbytes / GIB
    print(f"volume {shape} float32, {size:.2f} GiB; chunks {source.chunks} "
          f"({math.prod(x.numblocks)} blocks); kernel {kernel}^3, 'same', reflect")
    print(f"{tasks:,} tasks; scheduler {scheduler} x {workers}, "
          f"Numba threads {_numba_threads(scheduler, workers)}", flush=True)

    # The progress bar's last update waits for its timer (dask's ProgressBar._finish
    # joins it), so a long dt would add up to dt to the wall time.
    with ProgressBar(dt=0.1):
        t0 = time.perf_counter()
        if scheduler == "distributed":
            _compute_distributed(stored, workers)
        else:
            if scheduler == "processes":  # read by the worker processes' Numba
                os.environ["NUMBA_NUM_THREADS"] = str(_numba_threads(scheduler, workers))
            dask.compute(stored, scheduler=scheduler, num_workers=workers)
        wall = time.perf_counter() - t0
    rate = source.size / wall
    print(f"wall {wall:.1f} s: {size / wall:.3f} GiB/s, {rate / 1e6:.1f} Mvoxel/s; "
          f"peak RSS of this process {peak_rss_gib():.2f} GiB")
    if compare:
        first_rate, memory_rate = in_memory_rates(source, weight)
        print(f"in memory (1 GiB sub-volume): {memory_rate / 1e6:.1f} Mvoxel/s (median "
              f"of warm calls; the first call {first_rate / 1e6:.1f}); out of core / in "
              f"memory = {rate / memory_rate:.2f} ({rate / first_rate:.2f} of the first "
              f"call)")
    error = check_blocks(source, zarr.open_array(result_path, mode="r"), weight,
                         np.random.default_rng(2))
    ok = error <= 1e-4
    print(f"check: {'ok' if ok else 'FAILED'}, sampled blocks (corners and across "
          f"chunk borders) within {error:.2g} of the in-memory call (tolerance 1e-4)",
          flush=True)
    if not keep:
        shutil.rmtree(result_path, ignore_errors=True)
    if compare:
        if _free_gib(directory) < 1.05 * size:
            print(f"I/O alone: skipped, it needs {size:.1f} GiB free in {directory}")
        else:
            copy_wall = copy_time(source, os.path.join(directory, "copy.zarr"),
                                  scheduler, workers)
            print(f"I/O alone (the same zarr-to-zarr store of the input, no "
                  f"convolution): {copy_wall:.1f} s, {size / copy_wall:.3f} GiB/s")
    return 0 if ok else 1


def _free_gib(directory: str) -> float:
    return shutil.disk_usage(directory).free / GIB


def _numba_threads(scheduler: str, workers: int) -> int:
    if scheduler in ("processes", "distributed"):
        return max(1, (os.cpu_count() or 1) // workers)
    import numba

    return numba.get_num_threads()


def _compute_distributed(stored, workers: int) -> None:
    from distributed import Client, LocalCluster

    threads = _numba_threads("distributed", workers)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None,
                      env={"NUMBA_NUM_THREADS": str(threads)}) as cluster, \
            Client(cluster) as client:
        client.compute(stored).result()
