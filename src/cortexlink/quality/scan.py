"""One streaming pass over a recording: per-channel signal statistics, a content hash, a fingerprint.

:func:`summarise` reads a recording in bounded blocks (never the whole file) and keeps only
accumulators, so memory does not grow with the recording's length. Every per-block step is
vectorised over channels (a 1024-channel implant block is split into channel groups of bounded
size, never looped channel by channel).

What each :class:`~cortexlink.quality.model.ChannelStats` field means here:

* ``rms_uv``: RMS after removing each 1-s window's mean.
* ``ptp_uv``: the channel's maximum minus its minimum over the whole recording.
* ``flat_fraction``: fraction of 1-s windows whose peak-to-peak is below :data:`FLAT_PTP_UV`
  (EEG-like channels) or below :data:`FLAT_REL_IMPLANT` × the median window peak-to-peak of the
  recording's implant channels in the same window (implant channels).
* ``clip_fraction``: fraction of samples sitting exactly on the channel's maximum or minimum *in
  runs of at least two equal samples* (a rail). 0 for a channel that never moves (that is flat).
* ``line_ratio``: Welch PSD averaged over the blocks; mean power within ±:data:`LINE_HALF_BAND_HZ`
  of the mains over the median power 5-15 Hz away on either side, per channel at whichever of
  50 / 60 Hz stands out more on that channel (a 50 Hz hum in a 60 Hz recording is still caught;
  ``extra["line_hz_per_channel"]`` says which), or at ``line_hz`` only when it is given; a
  candidate is skipped when ``fs < 2.5 × mains``. The file's ``line_hz`` is the candidate with the
  larger mean log-ratio over channels, reported when some channel reaches
  :data:`LINE_FOUND_RATIO`.
* ``artefact_fraction``: fraction of 1-s windows where ``|x - window median|`` exceeds
  :data:`AMP_ARTEFACT_UV` (EEG-like) / :data:`IMPLANT_AMP_ARTEFACT_UV` (implant), or a
  sample-to-sample step exceeds :data:`GRAD_MULT` × the channel's typical mean ``|diff|``
  (median over the block's windows).
* ``snr_db``: EEG-like channels: ``10·log10`` of the mean PSD in :data:`SNR_BAND_HZ` over the
  median PSD of the high-frequency floor (:data:`SNR_FLOOR_HZ`, mains ±2 Hz and harmonics left
  out), i.e. how far the EEG band stands above a white floor. Implant raw channels: ``20·log10``
  of the mean 1-s-window spike-band peak ``|min|`` over the noise RMS (pure Gaussian noise at
  30 kHz gives about 12.5 dB). NaN where the band is not available.
* ``noise_rms_uv`` (implant raw): mean over 1-s windows of ``median(|bp|) / 0.6745`` after a
  :data:`SPIKE_BAND_HZ` band-pass (4th-order Butterworth, state carried across blocks).
* ``crossing_rate_hz`` (implant raw): downward crossings of :data:`CROSSING_MULT` × the window's
  noise, per second.

Implant sessions without raw samples (``rec.reader is None``, ``rec.features`` set) are summarised
from their features: ``crossing_rate_hz`` = mean ``/tx`` count per bin / ``bin_s``; ``rms_uv`` and
``noise_rms_uv`` = mean ``/sbp`` × √(π/2) (sbp is the mean |x| of the spike band, and this is the
RMS of Gaussian noise with that mean absolute value: a spike-band noise estimate, biased upward
on electrodes where units fire; ``extra["level_source"] == "sbp"`` says so); ``flat_fraction`` = 1-s windows with no crossing and a constant ``/sbp``; the
rest are NaN. NaN bins are left out of every statistic.

``content_hash``: SHA-256 over ``"<n_channels>x<n_samples>@<fs>"`` and each channel's SHA-256 of
its samples quantised to int32 steps of :data:`HASH_QUANTUM_UV` (little-endian), so the same
samples re-saved (another file name, EDF → FIF) give the same hash whenever the values round the
same, whatever the block size.
``fingerprint``: per channel (sorted by channel name) log-RMS then lag-1 autocorrelation.

Extras kept in ``RecordingSummary.extra`` (arrays per channel, in the recording's channel
order): ``flat_first_s``, ``clip_first_s``, ``artefact_first_s``, ``line_first_s`` (first block
whose own line ratio exceeded :data:`LINE_EVENT_RATIO`), ``max_uv``, ``min_uv``,
``line_ratio_by_hz`` ({50.0: array, 60.0: array}), ``line_hz_per_channel``, plus ``source`` ("raw" or "features"),
``snr_kind``, ``n_windows``, ``missing_fraction`` (raw: NaN / inf samples, which are then read
as 0 µV; features: bins with no finite value:
a feature stream holds NaN where the recording pipeline left an electrode out, or before its
first complete bin; statistics are taken over the finite bins).
"""

from __future__ import annotations

import math

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.quality._scan_features import (HASH_QUANTUM_UV, WINDOW_S, _first, _fingerprint, _Hasher,
                                               summarise_features)
from cortexlink.quality.model import ChannelStats, Recording, RecordingSummary

__all__ = ["summarise", "HASH_QUANTUM_UV", "WINDOW_S"]

#: A 1-s window of an EEG-like channel is flat below this peak-to-peak (µV).
FLAT_PTP_UV = 0.5
#: A 1-s window of an implant channel is flat below this fraction of the median channel's ptp.
FLAT_REL_IMPLANT = 0.05
#: Amplitude artefact: ``|x - window median|`` above this (µV), EEG-like channels.
AMP_ARTEFACT_UV = 150.0
#: Amplitude artefact threshold for wideband implant channels (µV).
IMPLANT_AMP_ARTEFACT_UV = 1000.0
#: Gradient artefact: a step larger than this multiple of the channel's typical mean |diff|.
GRAD_MULT = 10.0
#: Mains candidates (Hz).
LINE_CANDIDATES_HZ = (50.0, 60.0)
#: Half-width of the mains band (Hz).
LINE_HALF_BAND_HZ = 1.0
#: The neighbourhood compared with the mains band: this far away on either side (Hz).
LINE_NEIGHBOUR_HZ = (5.0, 15.0)
#: A block whose own line ratio exceeds this marks ``line_first_s``.
LINE_EVENT_RATIO = 10.0
#: The mains is reported as found (``line_hz``) when some channel's ratio reaches this.
LINE_FOUND_RATIO = 3.0
#: EEG band for the SNR (Hz), and the high-frequency floor band it is compared with.
SNR_BAND_HZ = (1.0, 40.0)
SNR_FLOOR_HZ = (45.0, 500.0)
#: PSD bins above this are not kept (Hz): nothing here looks higher.
PSD_KEEP_HZ = 500.0
#: Implant spike band (Hz), and the crossing threshold in multiples of the noise.
SPIKE_BAND_HZ = (300.0, 5000.0)
CROSSING_MULT = -4.5
#: Window medians (artefact reference, implant MAD noise) use every k-th sample so that at most
#: about this many samples enter each median (every sample below 8 kHz).
MEDIAN_SAMPLES = 8000
#: Most values read per block (all channels), and per channel group processed at once. A block
#: holds at least one 1-s window (and one Welch segment) of every channel, so 1024 channels at
#: 30 kHz read 1 s (250 MB as float64) at a time.
MAX_BLOCK_VALUES = 32_000_000
MAX_GROUP_VALUES = 4_000_000

_MAD = 0.6744897501960817


def _line_ratio(psd: np.ndarray, freqs: np.ndarray, line: float) -> np.ndarray:
    """Mean PSD within ±LINE_HALF_BAND_HZ of ``line`` over the median PSD of its neighbourhood."""
    dist = np.abs(freqs - line)
    inb = dist <= LINE_HALF_BAND_HZ
    nb = (dist >= LINE_NEIGHBOUR_HZ[0]) & (dist <= LINE_NEIGHBOUR_HZ[1])
    if not inb.any() or nb.sum() < 3:
        return np.full(psd.shape[0], np.nan)
    num = psd[:, inb].mean(axis=1)
    den = np.median(psd[:, nb], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    r[(den <= 0) & (num <= 0)] = 1.0
    r[(den <= 0) & (num > 0)] = np.inf
    return r


def _snr_eeg(psd: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    band = (freqs >= SNR_BAND_HZ[0]) & (freqs <= SNR_BAND_HZ[1])
    nyq = freqs[-1] if freqs.size else 0.0
    floor = (freqs >= SNR_FLOOR_HZ[0]) & (freqs <= min(SNR_FLOOR_HZ[1], 0.9 * nyq))
    for line in LINE_CANDIDATES_HZ:
        for h in range(1, 11):
            floor &= np.abs(freqs - h * line) > 2.0
    if band.sum() < 2 or floor.sum() < 3:
        return np.full(psd.shape[0], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(psd[:, band].mean(axis=1) / np.median(psd[:, floor], axis=1))


class _RawAcc:
    """Accumulators of the raw pass (arrays per channel)."""

    def __init__(self, rec: Recording, fs: float) -> None:
        c = rec.n_channels
        self.fs = fs
        self.implant = np.array([t == "implant" for t in rec.channel_types], dtype=bool)
        if self.implant.size != c:
            self.implant = np.zeros(c, dtype=bool)
        self.sumsq = np.zeros(c)
        self.lag1 = np.zeros(c)
        self.n = 0
        self.vmax = np.full(c, -np.inf)
        self.vmin = np.full(c, np.inf)
        self.cmax = np.zeros(c)
        self.cmin = np.zeros(c)
        self.fmax = np.full(c, np.nan)
        self.fmin = np.full(c, np.nan)
        self.prev_last = np.full(c, np.nan)
        self.n_windows = 0
        self.flat = np.zeros(c)
        self.art = np.zeros(c)
        self.flat_first = np.full(c, np.nan)
        self.art_first = np.full(c, np.nan)
        nper = int(round(2 * fs)) if fs <= 2000 else int(round(fs))
        self.nperseg = max(8, nper)
        from scipy.signal import get_window

        self.win = get_window("hann", self.nperseg)
        self.psd_scale = 1.0 / (fs * float(np.sum(self.win ** 2)))
        self.freqs = np.fft.rfftfreq(self.nperseg, 1.0 / fs)
        self.n_keep = int(np.searchsorted(self.freqs, PSD_KEEP_HZ, side="right"))
        self.freqs = self.freqs[: self.n_keep]
        self.psd = np.zeros((c, self.n_keep))
        self.psd_w = 0.0
        self.cands = [f for f in LINE_CANDIDATES_HZ if fs >= 2.5 * f]
        self.line_first = {f: np.full(c, np.nan) for f in self.cands}
        # implant spike band
        self.sos = None
        self.zi = None
        n_imp = int(self.implant.sum())
        if n_imp and fs >= 1000.0:
            from scipy.signal import butter, sosfilt_zi

            hi = min(SPIKE_BAND_HZ[1], 0.45 * fs)
            self.sos = butter(2, [SPIKE_BAND_HZ[0], hi], btype="bandpass", fs=fs, output="sos")
            self.zi0 = sosfilt_zi(self.sos)                 # sections × 2
            self.zi = np.zeros((self.sos.shape[0], c, 2))
        self.noise_sum = np.zeros(c)
        self.noise_n = np.zeros(c)
        self.cross = np.zeros(c)
        self.peak_sum = np.zeros(c)


def _welch(x: np.ndarray, acc: _RawAcc) -> np.ndarray:
    """Welch PSD (Hann, 50 % overlap, each segment's mean removed, one-sided density), rows × kept bins;
    the same as ``scipy.signal.welch(..., detrend="constant")`` without its copies."""
    from scipy import fft

    nper = acc.nperseg
    step = nper // 2
    nseg = 1 + (x.shape[1] - nper) // step
    frames = np.lib.stride_tricks.sliding_window_view(x, nper, axis=-1)[:, ::step][:, :nseg]
    seg = frames * acc.win
    seg -= frames.mean(axis=-1, keepdims=True) * acc.win
    spec = fft.rfft(seg, axis=-1)[..., : acc.n_keep]
    p = (spec.real ** 2 + spec.imag ** 2).mean(axis=1) * acc.psd_scale
    p[:, 1:] *= 2.0
    if nper % 2 == 0 and acc.n_keep == nper // 2 + 1:
        p[:, -1] /= 2.0                      # the Nyquist bin is not doubled
    return p


def _windows(x: np.ndarray, w: int, last: bool) -> list[tuple[np.ndarray, int]]:
    """Split rows × samples into (rows × n_windows × w view, first sample) pieces: full windows, then
    a shorter tail window when it is at least half a window or the recording's end."""
    n = x.shape[1]
    nfull = n // w
    out = []
    if nfull:
        out.append((x[:, : nfull * w].reshape(x.shape[0], nfull, w), 0))
    tail = n - nfull * w
    if tail >= 2 and (tail * 2 >= w or last or not nfull):
        out.append((x[:, nfull * w:][:, None, :], nfull * w))
    return out


def _group_pass(acc: _RawAcc, x: np.ndarray, sl: slice, s0: int, w: int, last: bool,
                wstats: dict[str, np.ndarray]) -> None:
    """Update the accumulators for channels ``sl`` from their block ``x`` (rows × samples)."""
    from scipy.signal import sosfilt

    fs = acc.fs
    n = x.shape[1]
    # clipping: samples at the block's extreme in runs, merged with the running extreme
    for sign, vext, cnt, first in ((1.0, acc.vmax, acc.cmax, acc.fmax), (-1.0, acc.vmin, acc.cmin, acc.fmin)):
        bext = x.max(axis=1) if sign > 0 else x.min(axis=1)
        eq = x == bext[:, None]
        prev = acc.prev_last[sl]
        n_eq = np.count_nonzero(eq, axis=1)
        c = np.zeros(x.shape[0])
        t_first = np.full(x.shape[0], s0 / fs)
        rows = np.flatnonzero((n_eq >= 2) | (eq[:, 0] & (prev == bext)))   # only these can hold a run
        if rows.size:
            e = eq[rows]
            run = e[:, 1:] & e[:, :-1]
            in_run = np.zeros_like(e)
            in_run[:, 1:] |= run
            in_run[:, :-1] |= run
            in_run[:, 0] |= e[:, 0] & (prev[rows] == bext[rows])
            c[rows] = in_run.sum(axis=1)
            t_first[rows] = (s0 + np.argmax(in_run, axis=1)) / fs
        cur = vext[sl]
        new = (bext > cur) if sign > 0 else (bext < cur)
        same = bext == cur
        cnt_sl, first_sl = cnt[sl], first[sl]
        cnt_sl[new] = c[new]
        first_sl[new] = np.where(c[new] > 0, t_first[new], np.nan)
        cnt_sl[same] += c[same]
        fill = same & np.isnan(first_sl) & (c > 0)
        first_sl[fill] = t_first[fill]
        cnt[sl], first[sl] = cnt_sl, first_sl
        vext[sl] = np.where(new, bext, cur)
    acc.prev_last[sl] = x[:, -1]
    # windows: rms, lag-1, ptp, artefact measures
    pieces = _windows(x, w, last)
    ptp, dev, gmax, gmean = [], [], [], []
    for xw, _ in pieces:
        m = xw.mean(axis=-1, keepdims=True)
        d = xw - m
        acc.sumsq[sl] += np.einsum("cwt,cwt->c", d, d)
        acc.lag1[sl] += np.einsum("cwt,cwt->c", d[..., 1:], d[..., :-1])
        wmax, wmin = xw.max(axis=-1), xw.min(axis=-1)
        med = np.median(xw[..., :: max(1, xw.shape[-1] // MEDIAN_SAMPLES)], axis=-1)
        ptp.append(wmax - wmin)
        dev.append(np.maximum(wmax - med, med - wmin))
        g = np.abs(np.diff(xw, axis=-1))
        gmax.append(g.max(axis=-1) if g.shape[-1] else np.zeros(xw.shape[:2]))
        gmean.append(g.mean(axis=-1) if g.shape[-1] else np.zeros(xw.shape[:2]))
    for key, vals in (("ptp", ptp), ("dev", dev), ("gmax", gmax), ("gmean", gmean)):
        wstats[key][sl] = np.concatenate(vals, axis=1) if vals else np.zeros((x.shape[0], 0))
    # spectrum
    if n >= acc.nperseg:
        p = _welch(x, acc)
        acc.psd[sl] += p * n
        for line in acc.cands:
            r = _line_ratio(p, acc.freqs, line)
            hit = (r > LINE_EVENT_RATIO)[:, None]
            first = acc.line_first[line][sl]
            _first(first, hit, np.array([s0 / fs]))
            acc.line_first[line][sl] = first
    # implant spike band
    if acc.sos is not None:
        rows = np.flatnonzero(acc.implant[sl])
        if rows.size:
            idx = np.arange(sl.start, sl.stop)[rows]
            xi = x[rows]
            zi = acc.zi[:, idx, :]
            if s0 == 0:
                zi = acc.zi0[:, None, :] * xi[None, :, 0, None]
            bp, zi = sosfilt(acc.sos, xi, axis=-1, zi=zi)
            acc.zi[:, idx, :] = zi
            for bw, _ in _windows(bp, w, last):
                sub = bw[..., :: max(1, bw.shape[-1] // MEDIAN_SAMPLES)]
                sigma = np.median(np.abs(sub), axis=-1) / _MAD          # rows × windows
                acc.noise_sum[idx] += sigma.sum(axis=1)
                acc.noise_n[idx] += sigma.shape[1]
                thr = (CROSSING_MULT * sigma)[..., None]
                acc.cross[idx] += ((bw[..., 1:] < thr) & (bw[..., :-1] >= thr)).sum(axis=(1, 2))
                acc.peak_sum[idx] += (-bw.min(axis=-1)).sum(axis=1)


def _window_decisions(acc: _RawAcc, wstats: dict[str, np.ndarray], t_starts: np.ndarray) -> None:
    ptp = wstats["ptp"]
    if ptp.shape[1] == 0:
        return
    thr = np.full(ptp.shape, FLAT_PTP_UV)
    if acc.implant.any():
        ref = np.median(ptp[acc.implant], axis=0)
        thr[acc.implant] = FLAT_REL_IMPLANT * ref[None, :]
    flat = ptp < thr
    amp_thr = np.where(acc.implant, IMPLANT_AMP_ARTEFACT_UV, AMP_ARTEFACT_UV)[:, None]
    typical = np.median(wstats["gmean"], axis=1, keepdims=True)
    grad = (typical > 0) & (wstats["gmax"] > GRAD_MULT * typical)
    art = (wstats["dev"] > amp_thr) | grad
    acc.flat += flat.sum(axis=1)
    acc.art += art.sum(axis=1)
    acc.n_windows += ptp.shape[1]
    _first(acc.flat_first, flat, t_starts)
    _first(acc.art_first, art, t_starts)


def summarise(rec: Recording, *, line_hz: float | None = None, block_s: float = 10.0) -> RecordingSummary:
    """One streaming pass over ``rec``: per-channel :class:`ChannelStats`, content hash, fingerprint.

    Parameters
    ----------
    rec : Recording
        Read through ``rec.read`` in blocks (raw samples) or ``rec.features.iter_blocks()``
        (implant sessions without raw samples).
    line_hz : float or None
        The mains frequency; ``None`` finds it (50 or 60 Hz, whichever stands out more).
    block_s : float
        Seconds read per block (lowered for many channels so a block stays under
        :data:`MAX_BLOCK_VALUES` values; raised to a Welch segment at least).

    Returns
    -------
    RecordingSummary
        ``stats`` is ``None`` (and the hash too) when the recording has neither samples nor features.
    """
    if not (isinstance(block_s, (int, float)) and math.isfinite(block_s) and block_s > 0):
        raise ConfigError(f"block_s must be a positive number of seconds, got {block_s!r}")
    if line_hz is not None and not (isinstance(line_hz, (int, float)) and math.isfinite(line_hz)
                                    and line_hz > 0):
        raise ConfigError(f"line_hz must be None or a positive frequency in Hz (50 or 60), got {line_hz!r}")
    if rec.reader is not None and rec.fs_hz and rec.n_samples > 0 and rec.n_channels > 0:
        return _summarise_raw(rec, line_hz, float(block_s))
    if rec.features is not None:
        return summarise_features(rec)
    return RecordingSummary(name=rec.name, stats=None, content_hash=None, fingerprint=None,
                            extra={"source": None})


def _summarise_raw(rec: Recording, line_hz: float | None, block_s: float) -> RecordingSummary:
    fs = float(rec.fs_hz)
    c = rec.n_channels
    acc = _RawAcc(rec, fs)
    if line_hz is not None:
        acc.cands = [float(line_hz)] if fs >= 2.5 * line_hz else []
        acc.line_first = {f: np.full(c, np.nan) for f in acc.cands}
    w = max(2, int(round(fs * WINDOW_S)))
    min_win = max(1, math.ceil(acc.nperseg / w))
    n_win = max(min_win, int(block_s * fs) // w, 1)
    n_win = max(min_win, min(n_win, MAX_BLOCK_VALUES // max(1, c * w)))
    step = n_win * w
    g = max(1, MAX_GROUP_VALUES // step)
    hasher = _Hasher((c, rec.n_samples), fs)
    n_read = 0
    nonfinite = np.zeros(c)
    for s0 in range(0, rec.n_samples, step):
        x = np.asarray(rec.read(s0, s0 + step), dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != c or x.shape[1] == 0:
            break
        n_read += x.shape[1]
        for g0 in range(0, c, g):                  # hashed a channel group at a time: small buffers
            hasher.update(x[g0:g0 + g], g0)
        bad = ~np.isfinite(x)
        if bad.any():                       # NaN / inf samples: counted, then read as 0 µV
            nonfinite += bad.sum(axis=1)
            x = np.where(bad, 0.0, x)
        last = s0 + step >= rec.n_samples
        wstats: dict[str, np.ndarray] = {}
        nw = sum(p.shape[1] for p, _ in _windows(x[:1], w, last))
        for key in ("ptp", "dev", "gmax", "gmean"):
            wstats[key] = np.zeros((c, nw))
        for g0 in range(0, c, g):
            sl = slice(g0, min(c, g0 + g))
            _group_pass(acc, x[sl], sl, s0, w, last, wstats)
        acc.n += x.shape[1]
        if x.shape[1] >= acc.nperseg:
            acc.psd_w += x.shape[1]
        starts = np.array([s0 + k * w for k in range(nw)], dtype=float) / fs
        _window_decisions(acc, wstats, starts)
    out = _finish_raw(rec, acc, hasher.hexdigest() if n_read else None, line_hz)
    out.extra["missing_fraction"] = nonfinite / max(1, n_read)
    return out


def _finish_raw(rec: Recording, acc: _RawAcc, digest: str | None, line_hz: float | None) -> RecordingSummary:
    c = rec.n_channels
    nan = np.full(c, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rms = np.sqrt(acc.sumsq / max(1, acc.n))
        ac1 = np.where(acc.sumsq > 0, acc.lag1 / acc.sumsq, 0.0)
    moving = acc.vmax > acc.vmin
    clip = np.where(moving, (acc.cmax + acc.cmin) / max(1, acc.n), 0.0)
    clip_first = np.where(moving, np.fmin(np.where(acc.cmax > 0, acc.fmax, np.nan),
                                          np.where(acc.cmin > 0, acc.fmin, np.nan)), np.nan)
    nwin = max(1, acc.n_windows)
    by_hz: dict[float, np.ndarray] = {}
    line_ratio, found, line_first, line_at = nan.copy(), None, nan.copy(), nan.copy()
    snr = nan.copy()
    if acc.psd_w > 0:
        psd = acc.psd / acc.psd_w
        for f in acc.cands:
            by_hz[f] = _line_ratio(psd, acc.freqs, f)
        if by_hz:
            with np.errstate(divide="ignore", invalid="ignore"):
                score = {f: float(np.nanmean(np.log(np.clip(r, 1e-12, 1e12)))) if np.isfinite(r).any()
                         else -np.inf for f, r in by_hz.items()}
            best = float(line_hz) if line_hz is not None else max(score, key=lambda k: score[k])
            # per channel: the candidate standing out most (a 50 Hz hum in a 60 Hz recording counts)
            cands = sorted(by_hz)
            stack = np.stack([np.where(np.isnan(by_hz[f]), -np.inf, by_hz[f]) for f in cands])
            pick = np.argmax(stack, axis=0)
            mx = stack.max(axis=0)
            line_ratio = np.where(mx == -np.inf, np.nan, mx)
            line_at = np.where(np.isnan(line_ratio), np.nan, np.array(cands, dtype=float)[pick])
            line_first = np.stack([acc.line_first[f] for f in cands])[pick, np.arange(c)]
            if line_hz is not None or np.nanmax(by_hz[best], initial=0.0) >= LINE_FOUND_RATIO:
                found = best
        eeg_like = ~acc.implant
        if eeg_like.any():
            snr[eeg_like] = _snr_eeg(psd[eeg_like], acc.freqs)
    noise = cross = None
    snr_kind = "eeg_band" if (~acc.implant).any() else None
    if acc.sos is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            noise = np.where(acc.noise_n > 0, acc.noise_sum / acc.noise_n, np.nan)
            cross = np.where(acc.noise_n > 0, acc.cross / (max(1, acc.n) / acc.fs), np.nan)
            peak = np.where(acc.noise_n > 0, acc.peak_sum / acc.noise_n, np.nan)
            snr[acc.implant] = 20.0 * np.log10(peak[acc.implant] / noise[acc.implant])
        noise[~acc.implant] = np.nan
        cross[~acc.implant] = np.nan
        snr_kind = "spike_peak" if snr_kind is None else "eeg_band+spike_peak"
    stats = ChannelStats(rms_uv=rms, ptp_uv=np.where(np.isfinite(acc.vmax), acc.vmax - acc.vmin, np.nan),
                         flat_fraction=acc.flat / nwin, clip_fraction=clip, line_ratio=line_ratio,
                         artefact_fraction=acc.art / nwin, snr_db=snr, noise_rms_uv=noise,
                         crossing_rate_hz=cross)
    extra = {"source": "raw", "snr_kind": snr_kind, "n_windows": acc.n_windows,
             "n_samples_read": acc.n, "flat_first_s": acc.flat_first, "clip_first_s": clip_first,
             "artefact_first_s": acc.art_first, "line_first_s": line_first, "max_uv": acc.vmax,
             "min_uv": acc.vmin, "line_ratio_by_hz": by_hz, "line_hz_per_channel": line_at}
    return RecordingSummary(name=rec.name, stats=stats, content_hash=digest,
                            fingerprint=_fingerprint(rec.channel_names, rms, ac1), line_hz=found, extra=extra)
