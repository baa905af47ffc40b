"""Fitting of unit templates (:func:`fit_unit_templates`, re-exported by :mod:`cortexlink.dsp.units`)."""

from __future__ import annotations

import sys
from typing import Any, Mapping

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.dsp._unit_base import UnitTemplates, _Matcher
from cortexlink.dsp.features import FeatureExtractor

_KEEP = 200          # training snippets kept per unit (and unlabelled ones per channel) for the distances


def _groups(fx: FeatureExtractor, prims: np.ndarray, n_neighbours: int) -> np.ndarray:
    """Each primary channel and its ``n_neighbours`` nearest good channels (by position)."""
    pos = np.asarray(fx.channel_map.positions_um, float)
    bad = fx.bad_channels_
    G = 1 + n_neighbours
    out = np.full((prims.size, G), -1, np.int64)
    for i, p in enumerate(prims):
        d = np.hypot(*(pos - pos[p]).T)
        d[p] = -1.0
        d[bad] = np.inf
        order = np.argsort(d, kind="stable")
        nb = [int(c) for c in order if c != p and np.isfinite(d[c])][:n_neighbours]
        out[i, 0] = p
        out[i, 1:1 + len(nb)] = nb
    return out


def _nearest(ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    """For each ``x``, the nearest value of the sorted, non-empty ``ref``."""
    j = np.clip(np.searchsorted(ref, x), 1, max(ref.size - 1, 1))
    lo, hi = ref[j - 1], ref[np.minimum(j, ref.size - 1)]
    return np.where(np.abs(lo - x) <= np.abs(hi - x), lo, hi)


def _bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, unit="s")


def fit_unit_templates(extractor: FeatureExtractor, data: np.ndarray, spikes: Mapping[str, Any],
                       channels: Mapping[str, int], *, n_neighbours: int = 4, pre_ms: float = 0.4,
                       post_ms: float = 0.8, tol_ms: float = 0.3, min_ptp_frac: float = 0.25,
                       accept_quantile: float = 0.99, min_spikes: int = 20, progress: bool = False) -> Any:
    """Fit one template per sorted unit, in the extractor's filtered, referenced signal.

    Parameters
    ----------
    extractor : FeatureExtractor
        The chain the templates are for. Not calibrated: it is calibrated on the first
        ``calibration_s`` of ``data`` (its stream state is not touched either way).
    data : ndarray (n_samples, n_channels), int16 counts or float32 µV
        The recording the spike times refer to (sample 0 = its first row).
    spikes : mapping unit id -> sample indices
        Spike times of each unit (any alignment: the median lag from each time to the trough
        of the crossing detected on the unit's channel is learnt per unit).
    channels : mapping unit id -> channel index
        Each unit's main channel (detection runs there).
    n_neighbours : int
        Neighbouring channels (nearest by position, good ones) in each unit's snippet; a
        neighbour whose template's peak-to-peak is below ``min_ptp_frac`` of the main
        channel's is left out of the distance.
    pre_ms, post_ms : float
        Snippet before and from the trough.
    tol_ms : float
        A detection on the main channel belongs to a unit when its trough lies within this of
        a spike time plus the unit's lag; one within reach of two units is left out.
    accept_quantile : float
        A unit's acceptance distance: this quantile of its training spikes' distances.
    min_spikes : int
        Units with fewer labelled training spikes are left out (listed in ``info["skipped"]``).
    progress : bool
        Progress bars (two passes over the data).

    Returns
    -------
    UnitTemplates
    """
    fx = extractor
    if not isinstance(fx, FeatureExtractor):
        raise ConfigError(f"extractor must be a cortexlink.dsp.FeatureExtractor; got {type(fx).__name__}")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != fx.n_channels or data.dtype not in (np.int16, np.float32) \
            or data.shape[0] < 2:
        raise ValidationError(f"data must be (n_samples >= 2, {fx.n_channels}) int16 or float32; got "
                              f"{data.shape} {data.dtype}")
    if not 0.5 <= accept_quantile <= 1.0:
        raise ConfigError(f"accept_quantile must be in [0.5, 1]; got {accept_quantile!r}")
    if n_neighbours < 0 or min_spikes < 2:
        raise ConfigError(f"n_neighbours must be >= 0 and min_spikes >= 2; got {n_neighbours}, {min_spikes}")
    if set(spikes) != set(channels):
        raise ValidationError("spikes and channels must name the same units; differ in "
                              f"{sorted(set(spikes) ^ set(channels))[:5]}")
    if not spikes:
        raise ValidationError("no units to fit (spikes is empty)")
    if not fx.is_calibrated:
        fx.calibrate(data[: max(2, int(round(fx.calibration_s * fx.fs_hz)))])
    fs = fx.fs_hz
    pre = max(1, int(round(pre_ms * fs / 1000.0)))
    post = max(2, int(round(post_ms * fs / 1000.0)))
    uids = list(spikes)
    chan = np.asarray([int(channels[u]) for u in uids], np.int64)
    if chan.min() < 0 or chan.max() >= fx.n_channels:
        raise ValidationError(f"channels must be indices 0..{fx.n_channels - 1}; got {chan.min()}..{chan.max()}")
    prims = np.unique(chan)
    groups = _groups(fx, prims, n_neighbours)
    m = _Matcher(fx, None, prims, groups, pre, post)
    block = max(1, int(round(0.5 * fs)))
    n = data.shape[0]

    # pass 1: every detection (main channel, trough sample)
    det_p, det_t = [], []
    bar = _bar(n, progress, "units: detect")
    for i in range(0, n, block):
        a, t, _ = m.run(np.ascontiguousarray(data[i:i + block]), i, collect=True)
        det_p.append(a)
        det_t.append(t)
        if bar is not None:
            bar.update(min(block, n - i))
    if bar is not None:
        bar.close()
    det_p = np.concatenate(det_p)
    det_t = np.concatenate(det_t)
    label = np.full(det_t.size, -1, np.int64)          # -1 unlabelled, -2 ambiguous
    tol = max(1, int(round(tol_ms * fs / 1000.0)))
    reach = int(round(1.0 * fs / 1000.0))
    skipped: dict[str, str] = {}
    offsets: dict[int, int] = {}
    pidx_of = np.searchsorted(prims, chan)
    for u, uid in enumerate(uids):
        s = np.sort(np.asarray(spikes[uid], np.int64))
        s = s[(s >= 0) & (s < n)]
        on = np.flatnonzero(det_p == pidx_of[u])
        T = det_t[on]
        if s.size < min_spikes or T.size == 0:
            skipped[uid] = f"{s.size} spikes in the data, {T.size} detections on its channel"
            continue
        lag = _nearest(T, s) - s
        lag = lag[np.abs(lag) <= reach]
        if lag.size < min_spikes:
            skipped[uid] = f"only {lag.size} of {s.size} spikes have a crossing on channel {chan[u]} within 1 ms"
            continue
        off = int(np.median(lag))
        offsets[u] = off
        want = s + off
        hit = on[np.abs(T - _nearest(want, T)) <= tol]
        label[hit] = np.where(label[hit] == -1, u, -2)
    counts = np.bincount(label[label >= 0], minlength=len(uids))
    for u in list(offsets):
        if counts[u] < min_spikes:
            skipped[uids[u]] = f"only {counts[u]} labelled detections (min_spikes={min_spikes})"
            del offsets[u]
    fitted = sorted(offsets)
    if not fitted:
        raise ValidationError(f"no unit could be fitted: {dict(list(skipped.items())[:5])}")

    # pass 2: snippets; template sums over every labelled detection, a strided subset kept
    G, L = groups.shape[1], pre + post
    sums = np.zeros((len(uids), G, L), np.float64)
    stride = np.maximum(counts // _KEEP, 1)
    seen = np.zeros(len(uids), np.int64)
    kept: dict[int, list[np.ndarray]] = {u: [] for u in fitted}
    unl_stride = np.maximum(np.bincount(det_p[label == -1], minlength=prims.size) // _KEEP, 1)
    unl_seen = np.zeros(prims.size, np.int64)
    unlabelled: dict[int, list[np.ndarray]] = {p: [] for p in range(prims.size)}
    m.reset()
    pos = 0
    bar = _bar(n, progress, "units: templates")
    for i in range(0, n, block):
        a, t, sn = m.run(np.ascontiguousarray(data[i:i + block]), i, collect=True, snip_cap=1 << 30)
        lab = label[pos:pos + a.size]
        if a.size and not (np.array_equal(det_p[pos:pos + a.size], a) and np.array_equal(det_t[pos:pos + a.size], t)):
            raise RuntimeError("unit template fit: the second pass detected differently from the first")
        pos += a.size
        for e in range(a.size):
            u = int(lab[e])
            if u >= 0 and u in kept:
                sums[u] += sn[e]
                if seen[u] % stride[u] == 0 and len(kept[u]) < _KEEP:
                    kept[u].append(sn[e].copy())
                seen[u] += 1
            elif u == -1:
                p = int(a[e])
                if unl_seen[p] % unl_stride[p] == 0 and len(unlabelled[p]) < _KEEP:
                    unlabelled[p].append(sn[e].copy())
                unl_seen[p] += 1
        if bar is not None:
            bar.update(min(block, n - i))
    if bar is not None:
        bar.close()

    noise = np.asarray(fx.noise_rms_uv_, float)
    U = len(fitted)
    prim_out = chan[fitted]
    grp_out = groups[pidx_of[fitted]]
    tmpl = np.stack([sums[u] / seen[u] for u in fitted]).astype(np.float32)
    weight = np.zeros((U, G), np.float32)
    for k in range(U):
        ptp = tmpl[k].max(axis=1) - tmpl[k].min(axis=1)
        use = (grp_out[k] >= 0) & (ptp >= min_ptp_frac * ptp[0])
        use[0] = True
        nv = noise[np.maximum(grp_out[k], 0)] ** 2
        weight[k, use] = 1.0 / (nv[use] * use.sum() * L)
    # acceptance distances from the kept training snippets
    def dist(snips: np.ndarray, k: int) -> np.ndarray:
        e = snips - tmpl[k][None]
        return np.einsum("ngl,g->n", e * e, weight[k].astype(np.float64))

    maxd = np.zeros(U, np.float32)
    info: dict[str, Any] = {"units": {}, "skipped": skipped}
    for k, u in enumerate(fitted):
        maxd[k] = float(np.quantile(dist(np.stack(kept[u]), k), accept_quantile))
    by_prim: dict[int, list[int]] = {}
    for k, u in enumerate(fitted):
        by_prim.setdefault(int(pidx_of[u]), []).append(k)
    for p, ks in by_prim.items():
        for k in ks:
            u = fitted[k]
            own = np.stack(kept[u])
            D = np.stack([dist(own, j) for j in ks])
            best = np.asarray(ks)[np.argmin(D, axis=0)]
            ok = (best == k) & (D.min(axis=0) <= maxd[best])
            fa = 0.0
            if unlabelled[p]:
                un = np.stack(unlabelled[p])
                Du = np.stack([dist(un, j) for j in ks])
                bu = np.asarray(ks)[np.argmin(Du, axis=0)]
                fa = float(np.mean((bu == k) & (Du.min(axis=0) <= maxd[bu])))
            info["units"][uids[u]] = {"n_train": int(seen[u]), "offset_samples": int(offsets[u]),
                                      "channel": int(chan[u]), "channels_used": int((weight[k] > 0).sum()),
                                      "max_distance": round(float(maxd[k]), 3),
                                      "train_recall": round(float(ok.mean()), 4), "train_false_accept": round(fa, 4)}
    t = UnitTemplates(unit_ids=tuple(uids[u] for u in fitted), primary=prim_out.astype(np.int64),
                      group=grp_out.astype(np.int64), template=tmpl, weight=weight, max_distance=maxd,
                      pre=pre, post=post, fs_hz=float(fs), n_channels=fx.n_channels,
                      band_hz=(float(fx.band_hz[0]), float(fx.band_hz[1])), filter_order=int(fx.filter_order),
                      reference=str(fx.reference), trough_window_ms=float(fx.trough_window_ms), info=info)
    t.check()
    return t

