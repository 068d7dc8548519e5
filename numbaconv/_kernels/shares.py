"""Run a kernel's per-thread shares in a ``prange`` without compiling them into it.

A ``parallel=True`` kernel whose loop body calls a large compiled function links that
function's code into the loop's own and has LLVM optimise it all over again: for the
Winograd task body that was 9 of the form's 24 s of compile time. Here the loop calls
the share through its address instead (taken at run time from the share's compiled
code, see :meth:`numbaconv._compile.Kernel.address`), so the parallel driver compiles
in a fraction of a second and the share keeps the code it was compiled to.

A share is an ``@njit`` function ``share(th, threads, *args) -> float64`` that does
thread ``th``'s part of the work; the driver of each kernel module (``run_shares``)
adds up what the shares return.
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic


@intrinsic
def call_share(typingctx, address, th, threads, args):
    """``share(th, threads, *args)`` for the share compiled at ``address`` (an int) for
    exactly these argument types, by Numba's own calling convention."""
    arg_types = (th, threads) + tuple(args.types)
    sig = types.float64(address, th, threads, args)

    def codegen(context, builder, signature, llargs):
        address_value, th_value, threads_value, packed = llargs
        values = [th_value, threads_value] + [builder.extract_value(packed, i)
                                              for i in range(len(args.types))]
        fnty = context.call_conv.get_function_type(types.float64, arg_types)
        share = builder.inttoptr(address_value, fnty.as_pointer())
        _, result = context.call_conv.call_function(builder, share, types.float64,
                                                    arg_types, values)
        return result

    return sig, codegen
