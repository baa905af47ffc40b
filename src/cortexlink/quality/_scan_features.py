"""The implant-features half of the signal scan, and what both halves share (hash, fingerprint).

:func:`cortexlink.quality.scan.summarise` calls :func:`summarise_features` for a session without
raw samples; the meaning of every statistic is documented there.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.quality.model import ChannelStats, Recording, RecordingSummary

#: Length of the windows the flat / artefact fractions count (s).
WINDOW_S = 1.0
#: Quantum of the content hash (µV).
HASH_QUANTUM_UV = 0.01


def _first(first: np.ndarray, hit: np.ndarray, t_starts: np.ndarray) -> None:
    """Set ``first[i]`` to the time of row i's first hit where it is still NaN (hit: rows × windows)."""
    rows = np.isnan(first) & hit.any(axis=1)
    if rows.any():
        first[rows] = t_starts[np.argmax(hit[rows], axis=1)]


class _Hasher:
    """SHA-256 per channel over its quantised samples, combined with the shape and rate at the end
    (independent of how the samples were split into blocks, and no transposed copy is needed)."""

    def __init__(self, shape: tuple[int, int], rate: float) -> None:
        self.header = f"{shape[0]}x{shape[1]}@{float(rate):.6f}".encode()
        self.rows = [hashlib.sha256() for _ in range(shape[0])]
        self._q: np.ndarray | None = None
        self._qi = np.empty((0, 0), dtype="<i4")

    def update(self, block: np.ndarray, first_row: int = 0) -> None:
        """Add a rows × samples block (µV) of the channels from ``first_row`` on."""
        if self._q is None or self._q.shape != block.shape:     # buffers reused block after block
            self._q = np.empty(block.shape, dtype=np.float64)
            self._qi = np.empty(block.shape, dtype="<i4")
        q, qi = self._q, self._qi
        np.multiply(block, 1.0 / HASH_QUANTUM_UV, out=q)
        np.rint(q, out=q)
        if q.size and not (-2.0 ** 31 <= q.min() and q.max() <= 2.0 ** 31 - 1):   # NaN fails too
            q[~np.isfinite(q)] = -2.0 ** 31
            np.clip(q, -2.0 ** 31, 2.0 ** 31 - 1, out=q)
        np.copyto(qi, q, casting="unsafe")
        for h, row in zip(self.rows[first_row: first_row + qi.shape[0]], qi):
            h.update(row.data)

    def hexdigest(self) -> str:
        return hashlib.sha256(self.header + b"".join(h.digest() for h in self.rows)).hexdigest()


def _fingerprint(names: list[str], level: np.ndarray, ac1: np.ndarray) -> np.ndarray:
    order = np.argsort(np.asarray(names, dtype=object).astype(str), kind="stable")
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log(np.maximum(level, 1e-12))
    return np.concatenate([lg[order], ac1[order]]).astype(float)


def _feature_columns(rec: Recording) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Channel names and, per channel, the column of its ``/tx`` and ``/sbp`` feature (-1: none)."""
    fa = rec.features
    assert fa is not None     # called only for recordings with features  # nosec B101
    tx: dict[str, int] = {}
    sbp: dict[str, int] = {}
    order: list[str] = []
    for i, name in enumerate(fa.names):
        ch, _, kind = str(name).rpartition("/")
        if kind not in ("tx", "sbp") or not ch:
            continue
        if ch not in tx and ch not in sbp:
            order.append(ch)
        (tx if kind == "tx" else sbp)[ch] = i
    names = list(rec.channel_names) if rec.channel_names else order
    return (names, np.array([tx.get(n, -1) for n in names], dtype=int),
            np.array([sbp.get(n, -1) for n in names], dtype=int))


def summarise_features(rec: Recording) -> RecordingSummary:
    """Statistics of an implant session from its binned features (see :mod:`cortexlink.quality.scan`)."""
    fa = rec.features
    assert fa is not None     # called only for recordings with features  # nosec B101
    if not (fa.bin_s and fa.bin_s > 0):
        raise ConfigError(f"{rec.name}: features bin_s must be positive, got {fa.bin_s!r}")
    names, tx_col, sbp_col = _feature_columns(rec)
    c = len(names)
    per_win = max(1, int(round(WINDOW_S / fa.bin_s)))
    z = [np.zeros(c) for _ in range(9)]
    tx_sum, tx_n, sbp_sum, sbp_sq, sbp_n, lag_sum, lag_n, flat, win_n = z
    flat_first = np.full(c, np.nan)
    n_bins = 0
    prev = None          # last sbp row of the previous block (lag-1 across blocks)
    carry = None         # bins not yet forming a whole window (2 × bins × channels)
    hasher = _Hasher((len(fa.names), fa.n_bins), 1.0 / fa.bin_s)
    has_tx, has_sbp = tx_col >= 0, sbp_col >= 0

    def cols(block: np.ndarray, col: np.ndarray) -> np.ndarray:
        out = np.zeros((block.shape[0], c))
        ok = col >= 0
        out[:, ok] = block[:, col[ok]]
        return out

    def judge(tx: np.ndarray, sbp: np.ndarray, starts_bin: np.ndarray) -> None:
        """Windows (k × bins × channels): quiet = no crossing and a constant sbp (NaN bins ignored)."""
        fin_t, fin_s = np.isfinite(tx), np.isfinite(sbp)
        valid = (fin_t | fin_s).any(axis=1)
        n_tx = np.where(fin_t, tx, 0.0).sum(axis=1)
        smax = np.where(fin_s, sbp, -np.inf).max(axis=1)
        smin = np.where(fin_s, sbp, np.inf).min(axis=1)
        quiet = valid & (n_tx == 0) & ((smax == smin) | ~fin_s.any(axis=1))
        flat[:] += quiet.sum(axis=0)
        win_n[:] += valid.sum(axis=0)
        _first(flat_first, quiet.T, starts_bin * fa.bin_s)

    def flush(rest: np.ndarray | None, start_bin: int) -> None:
        """A partial window (at least half a window) left at a gap or at the end."""
        if rest is not None and rest.shape[1] * 2 >= per_win:
            judge(rest[0][None], rest[1][None], np.array([start_bin]))

    def add(acc_sum: np.ndarray, acc_n: np.ndarray, v: np.ndarray) -> None:
        fin = np.isfinite(v)
        acc_sum += np.where(fin, v, 0.0).sum(axis=0)
        acc_n += fin.sum(axis=0)

    expect, carry_bin = None, 0
    for first_idx, block in fa.iter_blocks():
        block = np.asarray(block, dtype=np.float64)
        if block.ndim != 2 or block.shape[0] == 0:
            continue
        first_idx = int(first_idx)
        if expect is not None and first_idx != expect:          # a gap: windows and lags restart
            flush(carry, carry_bin)
            carry, prev = None, None
        hasher.update(block.T)
        t, s = cols(block, tx_col), cols(block, sbp_col)
        add(tx_sum, tx_n, t)
        add(sbp_sum, sbp_n, s)
        add(sbp_sq, np.zeros(c), s * s)
        add(lag_sum, lag_n, s[1:] * s[:-1])
        if prev is not None:
            add(lag_sum, lag_n, (prev * s[0])[None])
        prev = s[-1]
        n_bins += block.shape[0]
        expect = first_idx + block.shape[0]
        start_bin = first_idx if carry is None else carry_bin
        both = np.stack([t, s], axis=0)
        if carry is not None:
            both = np.concatenate([carry, both], axis=1)
        k = both.shape[1] // per_win
        if k:
            win = both[:, : k * per_win].reshape(2, k, per_win, c)
            judge(win[0], win[1], start_bin + per_win * np.arange(k))
        carry = both[:, k * per_win:] if both.shape[1] > k * per_win else None
        carry_bin = start_bin + k * per_win
    nan = np.full(c, np.nan)
    if n_bins == 0:
        return RecordingSummary(name=rec.name, stats=None, content_hash=None, fingerprint=None,
                                extra={"source": "features"})
    flush(carry, carry_bin)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_sbp = sbp_sum / sbp_n
        var = sbp_sq / sbp_n - mean_sbp ** 2
        ac1 = np.where(var > 0, (lag_sum / lag_n - mean_sbp ** 2) / var, 0.0)
        level = np.where(has_sbp & (sbp_n > 0), mean_sbp * math.sqrt(math.pi / 2.0), np.nan)
        rate = np.where(has_tx & (tx_n > 0), tx_sum / (tx_n * fa.bin_s), np.nan)
        flat_fraction = np.where(win_n > 0, flat / win_n, np.nan)
    missing = 1.0 - np.maximum(np.where(has_tx, tx_n, 0), np.where(has_sbp, sbp_n, 0)) / n_bins
    stats = ChannelStats(rms_uv=level, ptp_uv=nan.copy(), flat_fraction=flat_fraction,
                         clip_fraction=nan.copy(), line_ratio=nan.copy(), artefact_fraction=nan.copy(),
                         snr_db=nan.copy(), noise_rms_uv=level.copy(), crossing_rate_hz=rate)
    extra = {"source": "features", "snr_kind": None, "n_windows": int(win_n.max(initial=0)), "n_bins": n_bins,
             "channel_names": names, "flat_first_s": flat_first, "clip_first_s": nan.copy(),
             "artefact_first_s": nan.copy(), "line_first_s": nan.copy(), "line_ratio_by_hz": {},
             "level_source": "sbp", "missing_fraction": missing}
    fp = _fingerprint(names, np.where(np.isfinite(level), level, 0.0), ac1)
    return RecordingSummary(name=rec.name, stats=stats, content_hash=hasher.hexdigest(),
                            fingerprint=fp, line_hz=None, extra=extra)
