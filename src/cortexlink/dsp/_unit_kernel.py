"""Numba kernel of the unit matcher (:mod:`cortexlink.dsp.units`; imported lazily).

One call processes one chunk, sample by sample, in four steps:

1. scaling to µV and the band-pass of every channel through the extractor's biquad cascade
   (direct form II transposed, float32, each channel starting in the steady state of its
   first finite sample; a non-finite sample stops it until the next finite one restarts it);
2. the reference: the mean of the filtered reference channels running at that sample
   (``ref_w``; none for ``reference="none"``) subtracted from every channel, into a ring
   buffer of the last samples: the extractor's filtered, common-average-referenced signal;
3. detection on each *primary* channel as the extractor counts crossings: the first sample
   below threshold after one at or above it, at least ``dead_n`` samples after the last
   crossing; the trough is the minimum over ``trough_n`` samples from the crossing;
4. once the trough window has closed and ``post - 1`` samples after the trough have come
   (the later of the two; with the defaults always the latter) the snippet ``[trough - pre,
   trough + post)`` of the
   primary's group of channels is complete: in ``collect`` mode the primary and the trough sample
   are written out, and the snippet too while ``snip`` has room (fitting), else
   it is compared with the templates of the units on that primary (weighted squared distance)
   and, when the nearest is within its ``maxd``, a spike of that unit is reported at this
   sample.

``dead_n >= trough_n + post`` (checked by the caller) keeps at most one snippet pending per
primary. Scalar state lives in arrays so that the next call resumes exactly: the output does
not depend on how the stream is chunked.
"""

from __future__ import annotations

import numpy as np
from numba import njit


_FM = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(cache=True, nogil=True, fastmath=_FM)
def match_chunk(data, gain, offset, ref_w, z0, z1, coef, zi, started, ring, t0,
                prim_ch, thr, prev_above, last_cross, search_end, trough_t, trough_v, pend_t, act,
                dead_n, trough_n, pre, post, grp_rows, u_first, u_count, tmpl, wts, maxd,
                collect, ev_a, ev_t, snip, xbuf):
    """Run one chunk; return the number of events written (spikes, or detections when collecting).

    Every channel is filtered (a row of the ring per sample, channels contiguous, so that the
    loops over channels vectorise); ``z0``/``z1`` (sections, channels) are the two delays of each
    section; ``ref_w`` is 1.0 for a reference channel; ``started[C]`` is True once every
    channel's filter has started (the fast path).
    """
    n, C = data.shape
    S = coef.shape[0]
    P = prim_ch.shape[0]
    G = grp_rows.shape[1]
    L = pre + post
    mask = ring.shape[0] - 1
    cap = ev_t.shape[0]
    big = np.float32(3.0e38)
    ne = 0
    for i in range(n):
        t = t0 + i
        slot = t & mask
        # 1. scale to µV; a non-finite sample stops its channel's filter until the next finite one
        row = data[i]
        nbad = 0
        for c in range(C):
            v = np.float32(row[c]) * gain[c] + offset[c]
            nbad += 0 if abs(v) < big else 1
            xbuf[c] = v
        if nbad > 0 or not started[C]:
            allst = True
            for c in range(C):
                x = xbuf[c]
                if not abs(x) < big:
                    started[c] = False
                    xbuf[c] = 0.0
                elif not started[c]:
                    for s in range(S):
                        z0[s, c] = zi[s, 0] * x
                        z1[s, c] = zi[s, 1] * x
                    started[c] = True
                allst = allst and started[c]
            started[C] = allst
        # 2. band-pass of every channel
        for s in range(S):
            b0 = coef[s, 0]
            b1 = coef[s, 1]
            b2 = coef[s, 2]
            a1 = coef[s, 3]
            a2 = coef[s, 4]
            za = z0[s]
            zb = z1[s]
            for c in range(C):
                v = xbuf[c]
                y = b0 * v + za[c]
                za[c] = b1 * v - a1 * y + zb[c]
                zb[c] = b2 * v - a2 * y
                xbuf[c] = y
        # ... then the reference: the mean of the filtered reference channels running at this
        # sample (the extractor's order, so that a channel leaving the reference causes no step)
        out = ring[slot]
        acc = np.float32(0.0)
        cnt = np.float32(0.0)
        if started[C]:
            for c in range(C):
                acc += xbuf[c] * ref_w[c]
                cnt += ref_w[c]
        else:
            for c in range(C):
                w = ref_w[c] if started[c] else np.float32(0.0)
                acc += xbuf[c] * w
                cnt += w
        m = acc / cnt if cnt > 0 else np.float32(0.0)
        if started[C]:
            for c in range(C):
                out[c] = xbuf[c] - m
        else:
            for c in range(C):
                out[c] = xbuf[c] - m if started[c] else np.float32(0.0)
        # 3. detection on the primaries (thresholds of channels that may not cross lie below any sample)
        n_act = act[P]
        for p in range(P):
            y = out[prim_ch[p]]
            above = y >= thr[p]
            if (not above) and prev_above[p] and t - last_cross[p] >= dead_n:
                last_cross[p] = t
                trough_v[p] = y
                trough_t[p] = t
                search_end[p] = t + trough_n - 1
                act[n_act] = p
                n_act += 1
            prev_above[p] = above
        # ... the open trough windows and pending snippets, 4. classification
        j = 0
        while j < n_act:
            p = act[j]
            if search_end[p] >= 0:
                y = out[prim_ch[p]]
                if y < trough_v[p]:
                    trough_v[p] = y
                    trough_t[p] = t
                if t >= search_end[p]:
                    search_end[p] = -1
                    pend_t[p] = trough_t[p] + post - 1
            if pend_t[p] < 0 or t < pend_t[p]:
                j += 1
                continue
            pend_t[p] = -1
            n_act -= 1                      # done with p: the last open one takes its place
            act[j] = act[n_act]
            base = trough_t[p] - pre
            if collect:
                if ne < snip.shape[0]:
                    for g in range(G):
                        rr = grp_rows[p, g]
                        for k in range(L):
                            snip[ne, g, k] = ring[(base + k) & mask, rr] if rr >= 0 else 0.0
                if ne < cap:
                    ev_a[ne] = p
                    ev_t[ne] = trough_t[p]
                ne += 1
                continue
            best = -1
            bd = np.inf
            for u in range(u_first[p], u_first[p] + u_count[p]):
                d = 0.0
                for g in range(G):
                    w = wts[u, g]
                    if w == 0.0:
                        continue
                    rr = grp_rows[p, g]
                    part = 0.0
                    for k in range(L):
                        e = ring[(base + k) & mask, rr] - tmpl[u, g, k]
                        part += e * e
                    d += part * w
                if d < bd:
                    bd = d
                    best = u
            if best >= 0 and bd <= maxd[best]:
                if ne < cap:
                    ev_a[ne] = best
                    ev_t[ne] = t
                ne += 1
        act[P] = n_act
    return ne
