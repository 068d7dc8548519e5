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
The kernels' work split and the forms' thresholds (measured on the development machine,
2-core AMD EPYC, AVX-512; see each module for the measurements):

IM2COL_TASK_BYTES
    Bytes of columns per task of the column form, at most (8 MiB: smaller tasks made
    slower single-threaded GEMMs, 1.10 against 1.26 ms at 512 KiB on r50_3x3_56).
IM2COL_MIN_TASKS_PER_THREAD
    Column-form tasks per thread at least (more, smaller tasks measured slower: each
    GEMM repacks the weight).
IM2COL_MIN_TASK_POSITIONS, IM2COL_MIN_TASK_CHANNELS
    The fewest output positions a task is cut down to before cutting by output channels
    instead, and the fewest channels a channel block keeps.
SHIFTED_MIN_CHANNELS, SHIFTED_MIN_TAPS, SHIFTED_MIN_POSITIONS, SHIFTED_CHUNK
    The shifted-GEMM form needs this many input channels per group (each tap's GEMM has
    depth Cg), kernel taps (with 2 taps the column form's one deeper GEMM won:
    wavenet_d256 0.94 against 1.32 ms) and output positions in all (fewer made the
    per-tap GEMMs too thin: r50_3x3_14 0.96 against 1.07 ms); it computes output
    positions in chunks of ``SHIFTED_CHUNK`` (384-768 best, 1024 up to 25% slower).
COL2IM_TASK_BYTES
    Bytes of columns per block of output rows in the col2im input gradient at most
    (1 MiB: 5-10% faster than 8 MiB on the transposed layers of ``bench --transpose``,
    the scatter then reading the columns from cache).
CHANNELS_LAST_MIN_CHANNELS
    Input channels a channels-last dense layer needs to run on its channels-last GEMM
    form (each tap's columns copy runs of that many contiguous values); with fewer (the
    3-channel stems) it runs channels-first on transposed copies: resnet_conv1 3.8 ms
    in place against 2.3 ms channels-first here.
BLOCKS_MIN_POSITIONS
    Output positions (over the batch) a channels-last dense layer needs to run on the
    register blocks, which repack the weight per call: r50_3x3_7 (49 positions, a
    512 x 512 x 3 x 3 weight) took 1.5 ms in the kernel and 2.4 more to repack.
WINOGRAD_TASK_BYTES, WINOGRAD_MIN_CHANNELS
    Bytes of transformed tiles and products per Winograd task at most (2-8 MiB alike,
    1 MiB made 256-channel GEMMs too thin), and the input channels per group it needs
    (each of its GEMMs has depth Cg).
CHANNELWISE_MAX_TAPS, CHANNELWISE_MIN_PLANES_PER_THREAD, CHANNELWISE_MAX_CHANNELS
    One input channel per group takes the channel-wise direct kernel up to this many
    taps, or with at least this many output planes per thread (3x faster than dot
    products on a 31x31 depthwise layer; with fewer planes the dense kernel, which
    splits rows, wins). Grouped layers of up to ``CHANNELWISE_MAX_CHANNELS`` input and
    output channels per group take it up to ``CHANNELWISE_MAX_TAPS`` taps.
STEM_MAX_CHANNELS, STEM_MIN_OUT_CHANNELS, STEM_PLANE_BYTES
    Ungrouped layers with 2 to ``STEM_MAX_CHANNELS`` input and at least
    ``STEM_MIN_OUT_CHANNELS`` output channels (RGB image and video stems) may take the
    stem kernel on the direct path (the cost model decides), which copies the input
    planes of as many samples at a time as fit in ``STEM_PLANE_BYTES``.
DIRECT_PACK_BYTES
    Bytes of packed input rows per dense direct job: small enough to stay in L2 next to
    the weights.
L2_BYTES
    The L2 cache size the cost model assumes (a weight larger than this streams from
    memory for every output row of the dense direct kernel).
FFT_SEGMENT_FACTORS
    Overlap-save block lengths the FFT path tries, as multiples of the kernel's span.
FFT_FALLBACK_ADVANTAGE
    How much faster (estimated) the FFT path must be than the NumPy tap sums to serve as
    ``auto``'s path while a kernel compiles (the tap sums round as the kernels do).
WORKSPACE_MAX_CACHED_BYTES
    Kernel scratch buffers up to this size are kept across calls (a fresh multi-MB buffer
    pays a page fault per 4 KiB: resnet_conv1 3.5 against 0.86 ms).
OPENMP_SPINCOUNT
    ``GOMP_SPINCOUNT`` set for Numba's OpenMP workers unless the user set it or
    ``OMP_WAIT_POLICY`` (the default 300,000 spins, about 10 ms, starved the BLAS
    threads of a following GEMM on 2 cores: 0.6 ms became 8 ms).

Plans made with one set of these values are made again when any of them changes
(:func:`snapshot` is part of every plan's cache key).
"""

import operator

FASTMATH = frozenset({"reassoc", "contract", "nsz", "arcp"})
CACHE = True
MIN_JOBS_PER_THREAD = 4
IM2COL_BUDGET_BYTES = 256 << 20
FFT_BUDGET_BYTES = 256 << 20
BACKGROUND_COMPILE = True

IM2COL_TASK_BYTES = 8 << 20
IM2COL_MIN_TASKS_PER_THREAD = 1
IM2COL_MIN_TASK_POSITIONS = 64
IM2COL_MIN_TASK_CHANNELS = 16
SHIFTED_MIN_CHANNELS = 16
SHIFTED_MIN_TAPS = 3
SHIFTED_MIN_POSITIONS = 2048
SHIFTED_CHUNK = 512
COL2IM_TASK_BYTES = 1 << 20
CHANNELS_LAST_MIN_CHANNELS = 16
BLOCKS_MIN_POSITIONS = 128
WINOGRAD_TASK_BYTES = 4 << 20
WINOGRAD_MIN_CHANNELS = 16
CHANNELWISE_MAX_TAPS = 32
CHANNELWISE_MIN_PLANES_PER_THREAD = 4
CHANNELWISE_MAX_CHANNELS = 8
STEM_MAX_CHANNELS = 4
STEM_MIN_OUT_CHANNELS = 8
STEM_PLANE_BYTES = 16 << 20
DIRECT_PACK_BYTES = 1 << 17
L2_BYTES = 1 << 20
FFT_SEGMENT_FACTORS = (2, 4, 8, 16, 32)
FFT_FALLBACK_ADVANTAGE = 4.0
WORKSPACE_MAX_CACHED_BYTES = 64 << 20
OPENMP_SPINCOUNT = "10000"

_TUNABLES = ("MIN_JOBS_PER_THREAD", "IM2COL_BUDGET_BYTES", "FFT_BUDGET_BYTES",
             "IM2COL_TASK_BYTES", "IM2COL_MIN_TASKS_PER_THREAD",
             "IM2COL_MIN_TASK_POSITIONS", "IM2COL_MIN_TASK_CHANNELS",
             "SHIFTED_MIN_CHANNELS", "SHIFTED_MIN_TAPS", "SHIFTED_MIN_POSITIONS",
             "SHIFTED_CHUNK", "COL2IM_TASK_BYTES", "CHANNELS_LAST_MIN_CHANNELS",
             "BLOCKS_MIN_POSITIONS", "WINOGRAD_TASK_BYTES",
             "WINOGRAD_MIN_CHANNELS",
             "CHANNELWISE_MAX_TAPS", "CHANNELWISE_MIN_PLANES_PER_THREAD",
             "CHANNELWISE_MAX_CHANNELS",
             "STEM_MAX_CHANNELS", "STEM_MIN_OUT_CHANNELS", "STEM_PLANE_BYTES",
             "DIRECT_PACK_BYTES", "L2_BYTES", "FFT_SEGMENT_FACTORS",
             "FFT_FALLBACK_ADVANTAGE")


_GET_TUNABLES = operator.itemgetter(*_TUNABLES)


def snapshot() -> tuple:
    """The current values of the tunables that shape a plan (its cache key's part)."""
    return _GET_TUNABLES(globals())
