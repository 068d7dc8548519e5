"""Threads, the on-disk kernel cache and the command line."""

import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import numbaconv

ROOT = Path(__file__).resolve().parents[1]


def _run(code, env=None, cwd=None, timeout=300):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)


def test_concurrent_threads_give_identical_results():
    rng = np.random.default_rng(0)
    cases = [(rng.standard_normal((2, 8, 20, 20), dtype=np.float32),
              rng.standard_normal((8, 8 // g, 3, 3), dtype=np.float32), g) for g in (1, 8)]
    expected = [numbaconv.conv2d(x, w, padding=1, groups=g) for x, w, g in cases]

    def work(i):
        x, w, g = cases[i % 2]
        return i % 2, numbaconv.conv2d(x, w, padding=1, groups=g)

    with ThreadPoolExecutor(8) as pool:
        for k, y in pool.map(work, range(64)):
            np.testing.assert_array_equal(y, expected[k])


def test_workqueue_layer_survives_concurrent_calls():
    """Numba's workqueue layer aborts the process on concurrent parallel launches."""
    result = _run("""
        import numpy as np, numba, numbaconv
        from concurrent.futures import ThreadPoolExecutor
        x = np.random.default_rng(0).standard_normal((1, 16, 24, 24), dtype=np.float32)
        w = np.ones((16, 16, 3, 3), np.float32)
        ref = numbaconv.conv2d(x, w, padding=1)
        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda _: numbaconv.conv2d(x, w, padding=1), range(40)))
        assert all(np.array_equal(o, ref) for o in outs)
        print(numba.threading_layer(), "ok")
    """, env={"NUMBA_THREADING_LAYER": "workqueue", "NUMBA_NUM_THREADS": "4"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["workqueue", "ok"]


def test_read_only_package_falls_back_to_user_cache(tmp_path):
    """With the package directory unwritable, kernels are cached per user instead.

    Permission bits do not stop root, so the child process also makes every write test
    inside the package fail, as a read-only file system would; that is the check Numba
    makes before it picks a cache directory.
    """
    package = tmp_path / "site" / "numbaconv"
    shutil.copytree(ROOT / "numbaconv", package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in [package, *package.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    home = tmp_path / "home"
    code = f"""
        import tempfile
        real = tempfile.TemporaryFile
        def read_only(*args, dir=None, **kwargs):
            if dir is not None and str(dir).startswith({str(package)!r}):
                raise PermissionError(30, "Read-only file system", dir)
            return real(*args, dir=dir, **kwargs)
        tempfile.TemporaryFile = read_only
        import numpy as np, numbaconv
        print(numbaconv.__file__)
        y = numbaconv.conv2d(np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3)))
        assert (y == 18).all()
    """
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    try:
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                                capture_output=True, text=True, env=env,
                                cwd=package.parent, timeout=300)
    finally:
        for path in [package, *package.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert result.returncode == 0, result.stderr[-2000:]
    assert str(package) in result.stdout
    assert not list(package.rglob("*.nbi")), "cache written into the read-only package"
    assert list(home.rglob("*.nbi")), "no kernel cached in the user cache directory"


def test_read_only_package_as_root_with_unwritable_cache_dir(tmp_path):
    """Root can write anywhere, so test the fallback via an unwritable NUMBA_CACHE_DIR
    target instead: the call must still succeed (Numba warns and compiles in memory)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = _run("""
        import numpy as np, numbaconv
        y = numbaconv.conv1d(np.ones((1, 2, 9)), np.ones((3, 2, 3)))
        assert (y == 6).all()
        print("ok")
    """, env={"NUMBA_CACHE_DIR": str(blocker / "sub")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok" in result.stdout


def test_cli_demo_prints_the_seed_example():
    result = subprocess.run([sys.executable, "-m", "numbaconv", "demo"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    out = lines.index("output (3x3):")
    assert [line.split() for line in lines[out + 1:out + 4]] == [["3"] * 3] * 2 + [["0"] * 3]
    assert "parameters 9,472" in result.stdout and "MACs 118,013,952" in result.stdout
    assert "GFLOP/s" in result.stdout


def test_cli_warmup_and_usage():
    result = subprocess.run([sys.executable, "-m", "numbaconv", "warmup"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    # every form (forward and weight-gradient) x 2 dtypes, each with its time, and the total
    from numbaconv._registry import FORMS

    timed = sorted(tuple(line.split()[:2]) for line in lines[:-1])
    assert timed == sorted((f, d) for f in FORMS for d in ("float32", "float64")), lines
    assert all(line.endswith(" s") for line in lines[:-1]), lines
    assert lines[-1].split()[0] == "all" and "worker processes" in lines[-1], lines
    bad = subprocess.run([sys.executable, "-m", "numbaconv", "nonsense"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = [b.split("```")[0].strip() for b in readme.split("```bash")[1:3]]
    assert blocks[0].endswith("python -m numbaconv demo")
    assert blocks[1] in ci.splitlines()


def test_scratch_buffers_are_reused_and_capped():
    from numbaconv import _workspace

    _workspace.release()
    a = _workspace.scratch("t", (4, 5), np.float32)
    b = _workspace.scratch("t", (2, 3), np.float32)
    assert a.shape == (4, 5) and b.shape == (2, 3) and b.flags.c_contiguous
    assert np.shares_memory(a, b)  # the same kept buffer
    c = _workspace.scratch("t", (10, 10), np.float32)  # grows
    assert c.size == 100 and not np.shares_memory(a, c)
    assert not np.shares_memory(c, _workspace.scratch("u", (10, 10), np.float32))
    assert not np.shares_memory(c, _workspace.scratch("t", (10, 10), np.float64))
    big = (numbaconv.config.WORKSPACE_MAX_CACHED_BYTES // 4 + 1,)
    assert not np.shares_memory(_workspace.scratch("t", big, np.float32),
                                _workspace.scratch("t", big, np.float32))
    _workspace.release()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_and_scratch_start_a_cache_line(dtype):
    """numbaconv's outputs (both layouts) and scratch buffers start at a 64-byte
    boundary, so a layer reading the one before's output loads whole cache lines."""
    from numbaconv._workspace import ALIGNMENT, aligned_empty, scratch
    for shape in [(0,), (1,), (3, 5, 7), (2, 64, 9)]:
        a = aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
        assert a.flags.writeable
        assert a.size == 0 or a.ctypes.data % ALIGNMENT == 0
    x = np.ones((1, 3, 9, 9), dtype)
    w = np.ones((4, 3, 3, 3), dtype)
    for layout, xx in (("channels_first", x), ("channels_last", np.moveaxis(x, 1, -1))):
        y = numbaconv.conv2d(xx, w, padding=1, layout=layout)
        assert y.ctypes.data % ALIGNMENT == 0
    with numbaconv._threads.kernel_launch:
        assert scratch("test_alignment", (5, 7), dtype).ctypes.data % ALIGNMENT == 0
