"""Tunables of numbaconv, kept in one place.

FASTMATH
    The LLVM fast-math flags the kernels compile with. ``reassoc`` lets LLVM split a sum
    into vector partial sums (without it the reduction loops do not vectorise) and
    ``contract`` allows fused multiply-add. ``nnan``/``ninf`` are deliberately absent: a
    NaN or Inf in the input must reach exactly the outputs whose receptive field holds it.
    Reassociation changes the rounding of a sum, not its accuracy class; results stay
    within SPEC.md's tolerances.
CACHE
    Compile kernels to Numba's on-disk cache. Numba writes the cache next to the package
    and, where that directory is read-only, to a per-user directory instead
    (``NUMBA_CACHE_DIR`` overrides both).
MIN_JOBS_PER_THREAD
    The direct kernels split their work into at least this many jobs per thread (by
    output rows, then by chunks of a row and of the output channels), so that two threads
    stay balanced even when an output has only a few rows.
IM2COL_BUDGET_BYTES
    The most memory the im2col path's buffers may take (default 256 MiB): the column
    buffers of all threads together (at most 8 MiB each), the shared columns of a small
    output, the padded input of the shifted-GEMM form, or the Winograd form's transformed
    weight and buffers (with the packed input of a 3D kernel); beyond it those forms give
    way to the column form. Column matrices are built and multiplied in blocks of output
    positions (or channels).
BACKGROUND_COMPILE
    With ``method="auto"``, a call whose kernel is neither compiled nor in Numba's
    on-disk cache does not wait seconds for it: a separate process compiles it into the
    cache, and until that is done the call runs on NumPy/SciPy (one GEMM per kernel tap,
    or the FFT path), at a fraction of the kernel's speed but with the same results
    within SPEC.md's tolerances. Later calls use the kernel. Named paths
    (``method="direct"`` and so on) always compile in the foreground. The environment
    variable ``NUMBACONV_BACKGROUND_COMPILE=0`` turns this off too (then a cold call
    compiles its kernel before it returns, saying so once on the ``numbaconv`` logger).
FFT_BUDGET_BYTES
    The most memory the FFT path's spectra of one block of output channels may take
    (default 256 MiB); more output channels are processed in turns.
"""

FASTMATH = frozenset({"reassoc", "contract", "nsz", "arcp"})
CACHE = True
MIN_JOBS_PER_THREAD = 4
IM2COL_BUDGET_BYTES = 256 << 20
FFT_BUDGET_BYTES = 256 << 20
BACKGROUND_COMPILE = True
