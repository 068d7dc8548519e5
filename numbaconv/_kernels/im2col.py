"""Column building for the im2col + GEMM path (Numba, serial, run on Python threads).

``build_columns`` writes, for one sample, the receptive fields of a block of outputs as
the columns of a matrix: ``cols[g, k, j]`` is input ``k = ((c*KD + kd)*KH + kh)*KW + kw``
of output ``p0 + j`` (outputs numbered ``(od*OH + oh)*OW + ow``) in group ``g0 + g``.
That row order is the weight's own ``(Cg, KD, KH, KW)`` order, so the product
``weight[g].reshape(COg, K) @ cols[g]`` needs no repacked weight and lands directly in
the output's ``(COg, OD*OH*OW)`` layout.

Each row ``(g, k)`` walks the output rows in its block and copies the inputs its tap
reads, writing zeros where the tap falls into the padding. The kernel is serial and
releases the GIL; the caller runs it on a few Python threads over disjoint rows. (A
``parallel=True`` kernel would leave Numba's OpenMP threads spinning while BLAS runs
next, and on a 2-core machine that slowed the following GEMM from 0.6 ms to 8 ms.)
"""

from __future__ import annotations

from numba import njit

from ..config import CACHE, FASTMATH

_JIT = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True)


@njit(**_JIT)
def build_columns(x, cols, rows, g0, p0, kernel, stride, dilation, pad, out_spatial):
    """Fill rows ``rows[0] <= r < rows[1]`` of ``cols`` ``(gc, K, pc)`` (row ``r`` is
    ``cols[r // K, r % K]``) from one sample ``x`` ``(G, Cg, D, H, W)``.

    ``kernel``, ``stride``, ``dilation``, ``pad`` (zero padding before each axis) and
    ``out_spatial`` are ``(d, h, w)`` tuples.
    """
    gc, K, pc = cols.shape
    D, H, W = x.shape[2], x.shape[3], x.shape[4]
    KD, KH, KW = kernel
    OH, OW = out_spatial[1], out_spatial[2]
    sd, sh, sw = stride
    dd, dh, dw = dilation
    pd, ph, pw = pad
    for r in range(rows[0], rows[1]):
        g = r // K
        k = r % K
        kw = k % KW
        kh = (k // KW) % KH
        kd = (k // (KW * KH)) % KD
        c = k // (KW * KH * KD)
        row = cols[g, k]
        plane = x[g0 + g, c]
        # Output columns ow in [lo, hi) read inside the input row; outside, padding.
        off = kw * dw - pw
        lo = 0
        if off < 0:
            lo = min(OW, (-off + sw - 1) // sw)
        hi = 0
        if W - off > 0:
            hi = min(OW, (W - off + sw - 1) // sw)
        hi = max(hi, lo)
        od = p0 // (OH * OW)
        oh = (p0 // OW) % OH
        ow0 = p0 % OW
        j = 0
        while j < pc:
            n = min(OW - ow0, pc - j)
            i_d = od * sd + kd * dd - pd
            i_h = oh * sh + kh * dh - ph
            if i_d < 0 or i_d >= D or i_h < 0 or i_h >= H:
                t_lo = t_hi = n
            else:
                t_lo = min(max(lo - ow0, 0), n)
                t_hi = min(max(hi - ow0, t_lo), n)
                # Slices of known length: plain vector copies, no index wraparound.
                dst = row[j + t_lo: j + t_hi]
                base = ow0 * sw + off + t_lo * sw
                if sw == 1:
                    src = plane[i_d, i_h, base: base + (t_hi - t_lo)]
                    for t in range(t_hi - t_lo):
                        dst[t] = src[t]
                else:
                    src = plane[i_d, i_h, base:]
                    for t in range(t_hi - t_lo):
                        dst[t] = src[t * sw]
            head = row[j: j + t_lo]
            for t in range(t_lo):
                head[t] = 0
            tail = row[j + t_hi: j + n]
            for t in range(n - t_hi):
                tail[t] = 0
            j += n
            ow0 = 0
            oh += 1
            if oh == OH:
                oh = 0
                od += 1
