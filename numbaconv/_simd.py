"""SIMD vectors for Numba kernels, so that a register block of accumulators stays in
registers across a loop over taps.

LLVM vectorises only a kernel's innermost loop, and each pass of such a loop loads and
stores its accumulators in memory. A kernel that wants accumulators to live in registers
across an outer loop (a block of output rows summed over every tap of a large kernel)
has no way to say so in Numba's types. :class:`Vector` is that way: a value of LLVM type
``<LANES x float>`` that the kernel loads (:func:`vload`), multiplies and adds
(:func:`vfma`) and stores (:func:`vstore`); as a loop-carried local it is a register.

``VECTOR_BYTES`` is the host's register width (64 bytes with AVX-512F, else 32): wider
vectors than the registers would be split into several, and a block of 8 of them would
spill. The lanes of a dtype are ``VECTOR_BYTES // itemsize``.

Under ``NUMBA_DISABLE_JIT=1`` (coverage runs of the kernels' Python bodies) the same
names are NumPy functions on arrays of ``lanes`` elements.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


def _host_vector_bytes() -> int:
    features = llvm_binding.get_host_cpu_features()
    return 64 if features.get("avx512f", False) else 32


VECTOR_BYTES = _host_vector_bytes()


def lanes(itemsize: int) -> int:
    """Elements of one vector of ``itemsize``-byte numbers."""
    return VECTOR_BYTES // itemsize


class Vector(types.Type):
    """A SIMD vector of ``lanes(dtype)`` elements of a float dtype."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = lanes(dtype.bitwidth // 8)
        super().__init__(name=f"Vector({dtype} x {self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _address(context, builder, array_type, array, index):
    """Pointer to ``array.data[index]``, cast to a pointer to the vector type."""
    data = context.make_array(array_type)(context, builder, array).data
    element = builder.gep(data, [index])
    vector = context.get_value_type(Vector(array_type.dtype))
    return builder.bitcast(element, vector.as_pointer())


def _splat(builder, vector_type, scalar):
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), scalar,
                                 ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count),
                        [0] * vector_type.count)
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), zeros)


@intrinsic
def _vload(typingctx, array, index):
    """``array[index: index + lanes]`` as a :class:`Vector` (``array`` C-contiguous and
    1D; no bounds check)."""
    vector = Vector(array.dtype)

    def codegen(context, builder, sig, args):
        address = _address(context, builder, sig.args[0], args[0], args[1])
        return builder.load(address, align=array.dtype.bitwidth // 8)

    return vector(array, index), codegen


@intrinsic
def _vstore(typingctx, array, index, value):
    """``array[index: index + lanes] = value`` (no bounds check)."""
    if not (isinstance(value, Vector) and value.dtype == array.dtype):
        return None

    def codegen(context, builder, sig, args):
        address = _address(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], address, align=array.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(array, index, value), codegen


@intrinsic
def _vsplat(typingctx, scalar):
    """A :class:`Vector` with every lane ``scalar``."""
    vector = Vector(scalar)

    def codegen(context, builder, sig, args):
        return _splat(builder, context.get_value_type(vector), args[0])

    return vector(scalar), codegen


@intrinsic
def _vfma(typingctx, acc, x, scale):
    """``acc + x * scale`` (``scale`` a scalar, broadcast, or a vector: lane by lane):
    one fused multiply-add where the CPU has it."""
    if not (isinstance(acc, Vector) and x == acc and scale in (acc, acc.dtype)):
        return None  # no such signature: Numba reports the types it was given

    def codegen(context, builder, sig, args):
        vector_type = context.get_value_type(sig.args[0])
        factor = args[2]
        if not isinstance(sig.args[2], Vector):
            factor = _splat(builder, vector_type, factor)
        # "contract" lets the back end fuse the two into one FMA where the CPU has it.
        product = builder.fmul(args[1], factor, flags=("contract",))
        return builder.fadd(args[0], product, flags=("contract",))

    return acc(acc, x, scale), codegen


def _lane_mask(builder, lanes_count, count):
    """``<lanes x i1>``: lane ``i`` set where ``i < count`` (``count`` an integer)."""
    # Compared as 32-bit lanes: one register of them, where 64-bit lanes take two.
    i32 = ir.IntType(32)
    count32 = builder.trunc(count, i32) if count.type.width > 32 else count
    lane_numbers = ir.Constant(ir.VectorType(i32, lanes_count), list(range(lanes_count)))
    bound = _splat(builder, ir.VectorType(i32, lanes_count), count32)
    return builder.icmp_signed("<", lane_numbers, bound)


def _masked_intrinsic(builder, name, vector_type, arg_types):
    """LLVM's ``llvm.masked.load`` or ``llvm.masked.store`` (``name``) for
    ``vector_type``: AVX-512's masked moves, AVX's ``vmaskmov``."""
    element = "f32" if vector_type.element == ir.FloatType() else "f64"
    result = vector_type if name == "load" else ir.VoidType()
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(result, arg_types),
        f"llvm.masked.{name}.v{vector_type.count}{element}.p0")


@intrinsic
def _vload_first(typingctx, array, index, count):
    """``array[index: index + count]`` in the first ``count`` lanes of a
    :class:`Vector`, zeros in the others (``0 <= count <= lanes``): no element past
    ``index + count`` is read."""
    vector = Vector(array.dtype)

    def codegen(context, builder, sig, args):
        address = _address(context, builder, sig.args[0], args[0], args[1])
        vector_type = context.get_value_type(vector)
        mask = _lane_mask(builder, vector_type.count, args[2])
        i32 = ir.IntType(32)
        fn = _masked_intrinsic(builder, "load", vector_type,
                               [address.type, i32, mask.type, vector_type])
        return builder.call(fn, [address, ir.Constant(i32, array.dtype.bitwidth // 8),
                                 mask, ir.Constant(vector_type, None)])

    return vector(array, index, count), codegen


@intrinsic
def _vstore_first(typingctx, array, index, value, count):
    """``array[index: index + count] = value[:count]`` (``0 <= count <= lanes``): no
    element past ``index + count`` is written."""
    if not (isinstance(value, Vector) and value.dtype == array.dtype):
        return None

    def codegen(context, builder, sig, args):
        address = _address(context, builder, sig.args[0], args[0], args[1])
        vector_type = context.get_value_type(sig.args[2])
        mask = _lane_mask(builder, vector_type.count, args[3])
        i32 = ir.IntType(32)
        fn = _masked_intrinsic(builder, "store", vector_type,
                               [vector_type, address.type, i32, mask.type])
        builder.call(fn, [args[2], address, ir.Constant(i32, array.dtype.bitwidth // 8),
                          mask])
        return context.get_dummy_value()

    return types.none(array, index, value, count), codegen


def _half_lanes(typingctx, a, b, first):
    if not (isinstance(a, Vector) and a == b):
        return None

    def codegen(context, builder, sig, args):
        count = context.get_value_type(sig.args[0]).count
        picks = ir.Constant(ir.VectorType(ir.IntType(32), count),
                            list(range(first, 2 * count, 2)))
        return builder.shuffle_vector(args[0], args[1], picks)

    return a(a, b), codegen


@intrinsic
def _veven(typingctx, a, b):
    """The even lanes of ``a`` followed by ``b`` (lanes 0, 2, 4, ... of the pair):
    the stride-2 elements from an even start, for a stride-phase split."""
    return _half_lanes(typingctx, a, b, 0)


@intrinsic
def _vodd(typingctx, a, b):
    """The odd lanes of ``a`` followed by ``b`` (lanes 1, 3, 5, ... of the pair)."""
    return _half_lanes(typingctx, a, b, 1)


@intrinsic
def _vswap_blocks(typingctx, a, b, size):
    """``(a', b')``: ``a`` and ``b`` with their off-diagonal blocks of ``size`` lanes
    swapped (``size`` a literal power of two below the lanes): a' holds the blocks
    0, 2, 4, ... of ``a`` interleaved with those of ``b``, b' the blocks 1, 3, 5, ...
    Applied with ``size`` = lanes/2, lanes/4, ..., 1 to the pairs ``(v[i], v[i+size])``
    of ``lanes`` vectors (``i // size`` even), it transposes them as a square matrix."""
    if not (isinstance(a, Vector) and a == b and isinstance(size, types.IntegerLiteral)):
        return None
    h = size.literal_value

    def codegen(context, builder, sig, args):
        count = context.get_value_type(sig.args[0]).count
        # Lanes of the pair (a, b): a's lane l is l, b's is count + l.
        first = [l if (l // h) % 2 == 0 else count + l - h for l in range(count)]
        second = [l + h if (l // h) % 2 == 0 else count + l for l in range(count)]
        i32 = ir.IntType(32)
        lo = builder.shuffle_vector(args[0], args[1],
                                    ir.Constant(ir.VectorType(i32, count), first))
        hi = builder.shuffle_vector(args[0], args[1],
                                    ir.Constant(ir.VectorType(i32, count), second))
        return context.make_tuple(builder, sig.return_type, [lo, hi])

    return types.UniTuple(a, 2)(a, b, size), codegen


@intrinsic
def _vzip(typingctx, a, b):
    """``(low, high)``: the lanes of ``a`` and ``b`` interleaved, ``a0 b0 a1 b1 ...``
    (the inverse of ``veven``/``vodd``): two stride-2 phases written back as one run."""
    if not (isinstance(a, Vector) and a == b):
        return None

    def codegen(context, builder, sig, args):
        count = context.get_value_type(sig.args[0]).count
        i32 = ir.IntType(32)
        low = [l // 2 + (count if l % 2 else 0) for l in range(count)]
        high = [count // 2 + lane for lane in low]
        lo = builder.shuffle_vector(args[0], args[1],
                                    ir.Constant(ir.VectorType(i32, count), low))
        hi = builder.shuffle_vector(args[0], args[1],
                                    ir.Constant(ir.VectorType(i32, count), high))
        return context.make_tuple(builder, sig.return_type, [lo, hi])

    return types.UniTuple(a, 2)(a, b), codegen


@intrinsic
def _vadd(typingctx, a, b):
    """``a + b`` lane by lane."""
    if not (isinstance(a, Vector) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def _vrotate_groups(typingctx, a, size):
    """``a`` with each group of ``size`` lanes (``size`` a literal dividing the lanes)
    rotated down by one: lane ``l`` takes lane ``g + (l - g + 1) % size`` of ``a``,
    ``g`` its group's first lane. Within 128-bit groups, one in-lane shuffle."""
    if not (isinstance(a, Vector) and isinstance(size, types.IntegerLiteral)):
        return None
    h = size.literal_value
    if h < 1 or a.lanes % h:
        return None

    def codegen(context, builder, sig, args):
        count = context.get_value_type(sig.args[0]).count
        picks = [l // h * h + (l % h + 1) % h for l in range(count)]
        return builder.shuffle_vector(
            args[0], ir.Constant(args[0].type, ir.Undefined),
            ir.Constant(ir.VectorType(ir.IntType(32), count), picks))

    return a(a, size), codegen


def _vload_py(array, index):
    return array[index: index + lanes(array.itemsize)].copy()


def _vstore_py(array, index, value):
    array[index: index + value.shape[0]] = value


def _vsplat_py(scalar):
    scalar = np.asarray(scalar)
    return np.full(lanes(scalar.itemsize), scalar, dtype=scalar.dtype)


def _vfma_py(acc, x, scale):
    return acc + x * scale


def _veven_py(a, b):
    return np.concatenate([a, b])[0::2]


def _vodd_py(a, b):
    return np.concatenate([a, b])[1::2]


def _vswap_blocks_py(a, b, size):
    blocks = (np.arange(a.shape[0]) // size) % 2 == 0
    lanes_ = np.arange(a.shape[0])
    first = np.where(blocks, a[lanes_], b[np.maximum(lanes_ - size, 0)])
    second = np.where(blocks, a[np.minimum(lanes_ + size, a.shape[0] - 1)], b[lanes_])
    return first, second


def _vzip_py(a, b):
    zipped = np.empty(2 * a.shape[0], dtype=a.dtype)
    zipped[0::2], zipped[1::2] = a, b
    return zipped[: a.shape[0]], zipped[a.shape[0]:]


def _vadd_py(a, b):
    return a + b


def _vrotate_groups_py(a, size):
    return a.reshape(-1, size)[:, np.r_[1:size, 0]].reshape(-1)


def _vload_first_py(array, index, count):
    vector = np.zeros(lanes(array.itemsize), dtype=array.dtype)
    vector[:count] = array[index: index + count]
    return vector


def _vstore_first_py(array, index, value, count):
    array[index: index + count] = value[:count]


if numba.config.DISABLE_JIT:
    vload, vstore, vsplat, vfma = _vload_py, _vstore_py, _vsplat_py, _vfma_py
    vload_first, vstore_first = _vload_first_py, _vstore_first_py
    veven, vodd, vswap_blocks = _veven_py, _vodd_py, _vswap_blocks_py
    vadd, vrotate_groups, vzip = _vadd_py, _vrotate_groups_py, _vzip_py
else:
    vload, vstore, vsplat, vfma = _vload, _vstore, _vsplat, _vfma
    vload_first, vstore_first = _vload_first, _vstore_first
    veven, vodd, vswap_blocks = _veven, _vodd, _vswap_blocks
    vadd, vrotate_groups, vzip = _vadd, _vrotate_groups, _vzip
