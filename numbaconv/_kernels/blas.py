"""BLAS GEMM callable from Numba kernels, and cacheable.

Numba's own ``np.dot`` reaches BLAS through a ctypes pointer, which stops
``cache=True`` (every process would recompile the kernel). Here SciPy's Fortran
``sgemm``/``dgemm`` (``scipy.linalg.cython_blas``) are registered with LLVM under
symbol names of our own and declared as external functions, so compiled kernels refer to
them by name and load from Numba's cache like any other.

``gemm`` follows the Fortran convention (column-major). A row-major ``(R, C)`` array
with row stride ``ld`` is a column-major ``(C, R)`` matrix with leading dimension ``ld``,
so row-major ``C = A @ B`` is ``gemm('N', 'N', n=C.cols, m... )``: see the callers.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic


_registered = False


def register_blas() -> None:
    """Make the ``numbaconv_sgemm``/``numbaconv_dgemm`` symbols known to LLVM. Call it
    before the first call of a kernel that uses :func:`gemm` (compiled or cached);
    deferred to then because finding SciPy's BLAS takes a while."""
    global _registered
    if not _registered:
        for name, address in _blas_addresses().items():
            llvm.add_symbol(f"numbaconv_{name}", address)
        _registered = True


def _blas_addresses() -> dict:
    """``{"sgemm": address, "dgemm": address}`` of SciPy's Cython BLAS.

    ``scipy.linalg.cython_blas`` is loaded as a lone extension module, without running
    ``scipy.linalg``'s ``__init__`` (0.22 s of a warm first call here, against 2 ms),
    and the addresses read from its capsules, as Numba's
    ``get_cython_function_address`` does; where that fails, that function is used.
    """
    import ctypes
    import importlib.util
    import os

    try:
        import scipy

        folder = os.path.join(os.path.dirname(scipy.__file__), "linalg")
        (path,) = [os.path.join(folder, f) for f in os.listdir(folder)
                   if f.startswith("cython_blas.") and f.endswith((".so", ".pyd"))]
        spec = importlib.util.spec_from_file_location("cython_blas", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        get_name = ctypes.pythonapi.PyCapsule_GetName
        get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
        get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        get_pointer.restype = ctypes.c_void_p
        get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        capsules = {name: module.__pyx_capi__[name] for name in ("sgemm", "dgemm")}
        return {name: get_pointer(c, get_name(c)) for name, c in capsules.items()}
    except Exception:  # another layout of SciPy: the documented way
        return {name: get_cython_function_address("scipy.linalg.cython_blas", name)
                for name in ("sgemm", "dgemm")}

_GEMM_SIG = types.void(*([types.voidptr] * 13))
_sgemm = types.ExternalFunction("numbaconv_sgemm", _GEMM_SIG)
_dgemm = types.ExternalFunction("numbaconv_dgemm", _GEMM_SIG)


@intrinsic
def _ptr(typingctx, array):
    """Address of an array's first element (any layout), as ``void*``."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.bitcast(ary.data, cgutils.voidptr_t)
    return types.voidptr(array), codegen


# Not cached on its own: it is compiled into each kernel that calls it (and cached with
# it), so that kernels of different modules, compiled by different processes at once
# (``warmup``), never share a cache index.
@njit(nogil=True)
def gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Fortran ``?gemm``: ``c = alpha * op(a) @ op(b) + beta * c``, column-major.

    ``trans_a``/``trans_b`` are ``ord('N')`` or ``ord('T')``; ``a``, ``b``, ``c`` are
    arrays (views allowed) whose first element starts each matrix, all of one dtype
    (float32 or float64), with leading dimensions ``lda``, ``ldb``, ``ldc``.
    """
    chars = np.empty(2, dtype=np.uint8)
    chars[0] = trans_a
    chars[1] = trans_b
    ints = np.empty(6, dtype=np.int32)
    ints[0], ints[1], ints[2] = m, n, k
    ints[3], ints[4], ints[5] = lda, ldb, ldc
    scal = np.empty(2, dtype=c.dtype)
    scal[0] = alpha
    scal[1] = beta
    args = (_ptr(chars), _ptr(chars[1:]), _ptr(ints), _ptr(ints[1:]), _ptr(ints[2:]),
            _ptr(scal), _ptr(a), _ptr(ints[3:]), _ptr(b), _ptr(ints[4:]), _ptr(scal[1:]),
            _ptr(c), _ptr(ints[5:]))
    if c.itemsize == 4:
        _sgemm(*args)
    else:
        _dgemm(*args)


def _gemm_python(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """``gemm`` for ``NUMBA_DISABLE_JIT=1`` (coverage runs of the kernels' Python
    bodies), where arrays are NumPy views starting at each matrix's first element."""
    from numpy.lib.stride_tricks import as_strided

    def matrix(x, rows, cols, ld):  # column-major view
        return as_strided(x, shape=(rows, cols), strides=(x.itemsize, ld * x.itemsize))

    op_a = matrix(a, *((m, k) if trans_a == 78 else (k, m)), lda)
    op_b = matrix(b, *((k, n) if trans_b == 78 else (n, k)), ldb)
    op_a = op_a if trans_a == 78 else op_a.T
    op_b = op_b if trans_b == 78 else op_b.T
    out = matrix(c, m, n, ldc)
    product = alpha * (op_a @ op_b)
    out[...] = product if beta == 0 else product + beta * out


if not hasattr(gemm, "py_func"):  # NUMBA_DISABLE_JIT=1: njit returned the function
    gemm = _gemm_python
