"""Weight gradient of channel-wise (depthwise) convolutions (Numba, parallel over
output channels).

With one input channel per group the weight gradient is tiny (``C_out x taps``) and the
im2col GEMM degenerates into thousands of matrix-vector products; here each thread owns
whole output channels and, per tap, sums the products of output-gradient rows with the
input rows the tap reads, as contiguous dot products (no two threads write one value).
"""

from __future__ import annotations

from numba import njit, prange

from ..config import CACHE, FASTMATH

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)


@njit(parallel=True, **_JIT)
def channelwise_weight_grad(x, g, gw, stride, dilation, pad):
    """Write ``gw`` ``(G, COg, KD, KH, KW)``.

    ``x`` ``(N, G, D, H, W)`` is the unpadded input (one channel per group), ``g``
    ``(N, G, COg, OD, OH, OW)`` the output gradient; ``stride``, ``dilation`` and ``pad``
    (zero padding before each axis) are ``(d, h, w)`` tuples.
    """
    N, G, D, H, W = x.shape
    COg, OD, OH, OW = g.shape[2], g.shape[3], g.shape[4], g.shape[5]
    KD, KH, KW = gw.shape[2], gw.shape[3], gw.shape[4]
    sd, sh, sw = stride
    dd, dh, dw = dilation
    pd, ph, pw = pad
    for job in prange(G * COg):
        gi = job // COg
        m = job % COg
        for kd in range(KD):
            for kh in range(KH):
                for kw in range(KW):
                    off = kw * dw - pw
                    # Output columns whose input column ow*sw + off lies inside the row.
                    lo = 0
                    if off < 0:
                        lo = min(OW, (-off + sw - 1) // sw)
                    hi = 0
                    if W - off > 0:
                        hi = min(OW, (W - off + sw - 1) // sw)
                    acc = 0.0
                    for n in range(N):
                        for od in range(OD):
                            i_d = od * sd + kd * dd - pd
                            if i_d < 0 or i_d >= D:
                                continue
                            for oh in range(OH):
                                i_h = oh * sh + kh * dh - ph
                                if i_h < 0 or i_h >= H or hi <= lo:
                                    continue
                                grow = g[n, gi, m, od, oh, lo:hi]
                                if sw == 1:
                                    xrow = x[n, gi, i_d, i_h, lo + off: hi + off]
                                    for t in range(hi - lo):
                                        acc += grow[t] * xrow[t]
                                else:
                                    xrow = x[n, gi, i_d, i_h, lo * sw + off:]
                                    for t in range(hi - lo):
                                        acc += grow[t] * xrow[t * sw]
                    gw[gi, m, kd, kh, kw] = acc
