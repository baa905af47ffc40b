"""The unit templates and the compiled matcher's state (:mod:`cortexlink.dsp.units` re-exports them)."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.dsp.features import FeatureExtractor

_FORMAT = 1
_RING = 64            # ring buffer length (samples); must exceed the snippet
_NEVER = np.float32(-3.0e38)   # threshold of a channel that may not cross: below any finite sample


@dataclass(frozen=True)
class UnitTemplates:
    """Templates of sorted units, fitted by :func:`fit_unit_templates`; saved as one ``.npz``.

    Attributes
    ----------
    unit_ids : tuple of str
    primary : ndarray (n_units,), int
        Channel index of each unit's main channel (detection runs there).
    group : ndarray (n_units, G), int
        The channels of the unit's snippet, main channel first (-1: padding).
    template : ndarray (n_units, G, pre + post), float32
        Mean snippet in µV of the filtered, referenced signal, trough at index ``pre``.
    weight : ndarray (n_units, G), float32
        1 / (noise variance x number of terms) for the channels used in the distance, else 0.
    max_distance : ndarray (n_units,), float32
        Acceptance distance of each unit.
    pre, post : int
        Samples before and from the trough.
    fs_hz, n_channels, band_hz, filter_order, reference, trough_window_ms :
        The chain the templates belong to (checked against the extractor's: they decide the
        filtered signal and where a snippet is aligned).
    info : dict
        Per unit: ``n_train`` (labelled training spikes), ``offset_samples`` (median trough
        minus given spike time), ``channels_used``, ``train_recall`` (own training spikes
        accepted and assigned to the unit), ``train_false_accept`` (unlabelled detections on
        its channel assigned to it, fraction); ``skipped``: units left out and why.
    """

    unit_ids: tuple[str, ...]
    primary: np.ndarray
    group: np.ndarray
    template: np.ndarray
    weight: np.ndarray
    max_distance: np.ndarray
    pre: int
    post: int
    fs_hz: float
    n_channels: int
    band_hz: tuple[float, float]
    filter_order: int
    reference: str
    trough_window_ms: float = 0.5
    info: dict = field(default_factory=dict)

    @property
    def n_units(self) -> int:
        return len(self.unit_ids)

    def save(self, path: str | Path) -> Path:
        """Write the templates to ``path`` (``.npz``; arrays plus a JSON header)."""
        path = Path(path)
        meta = {"format": _FORMAT, "unit_ids": list(self.unit_ids), "pre": self.pre, "post": self.post,
                "fs_hz": self.fs_hz, "n_channels": self.n_channels, "band_hz": list(self.band_hz),
                "filter_order": self.filter_order, "reference": self.reference,
                "trough_window_ms": self.trough_window_ms, "info": self.info}
        with open(path, "wb") as f:
            np.savez(f, primary=self.primary, group=self.group, template=self.template, weight=self.weight,
                     max_distance=self.max_distance, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "UnitTemplates":
        """Read templates written by :meth:`save`; a damaged or foreign file is refused."""
        path = Path(path)
        if not path.is_file():
            raise ValidationError(f"unit templates file {path} does not exist")
        try:
            with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                arrays = {k: np.array(z[k]) for k in ("primary", "group", "template", "weight", "max_distance")}
        except (OSError, ValueError, KeyError, json.JSONDecodeError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise ValidationError(f"{path} is not a cortexlink unit templates file: {exc}") from None
        if meta.get("format") != _FORMAT:
            raise ValidationError(f"{path}: unit templates format {meta.get('format')!r} is not supported "
                                  f"(this cortexlink reads {_FORMAT})")
        t = cls(unit_ids=tuple(meta["unit_ids"]), pre=int(meta["pre"]), post=int(meta["post"]),
                fs_hz=float(meta["fs_hz"]), n_channels=int(meta["n_channels"]),
                band_hz=(float(meta["band_hz"][0]), float(meta["band_hz"][1])),
                filter_order=int(meta["filter_order"]), reference=str(meta["reference"]),
                trough_window_ms=float(meta["trough_window_ms"]), info=meta.get("info", {}), **arrays)
        t.check()
        return t

    def check(self) -> None:
        """Refuse inconsistent arrays (shapes, channel indices, non-finite values)."""
        U, L = self.n_units, self.pre + self.post
        G = self.group.shape[1] if self.group.ndim == 2 else -1
        ok = (self.primary.shape == (U,) and self.group.shape == (U, G) and G >= 1
              and self.template.shape == (U, G, L) and self.weight.shape == (U, G)
              and self.max_distance.shape == (U,) and self.pre >= 1 and self.post >= 2 and L < _RING)
        if not ok:
            raise ValidationError(f"unit templates are inconsistent: {U} units, group {self.group.shape}, "
                                  f"template {self.template.shape}, weight {self.weight.shape}, "
                                  f"pre {self.pre}, post {self.post}")
        if U and (self.primary.min() < 0 or self.primary.max() >= self.n_channels
                  or self.group.max() >= self.n_channels or np.any(self.group[:, 0] != self.primary)):
            raise ValidationError(f"unit templates name channels outside 0..{self.n_channels - 1} or a group "
                                  "that does not start with the unit's main channel")
        for p in np.unique(self.primary):
            g = self.group[self.primary == p]
            if np.any(g != g[0]):
                raise ValidationError(f"unit templates: the units on channel {int(p)} have different channel groups")
        if np.any((self.group < 0) & (self.weight != 0)):
            raise ValidationError("unit templates: a weight on a padding slot of a channel group")
        if not (np.all(np.isfinite(self.template)) and np.all(np.isfinite(self.weight))
                and np.all(np.isfinite(self.max_distance)) and np.all(self.weight >= 0)):
            raise ValidationError("unit templates hold non-finite templates, weights or distances")

    def check_chain(self, fx: FeatureExtractor) -> None:
        """Refuse an extractor whose chain differs from the one the templates were fitted with."""
        mine = (self.n_channels, round(self.fs_hz, 6), tuple(round(b, 6) for b in self.band_hz),
                self.filter_order, self.reference, round(self.trough_window_ms, 6))
        theirs = (fx.n_channels, round(fx.fs_hz, 6), tuple(round(float(b), 6) for b in fx.band_hz),
                  fx.filter_order, fx.reference, round(float(fx.trough_window_ms), 6))
        if mine != theirs:
            raise ConfigError(f"unit templates were fitted for (channels, fs_hz, band_hz, filter_order, "
                              f"reference, trough_window_ms) = {mine}; the extractor has {theirs}")


class _Matcher:
    """The compiled matcher's layout and stream state (one per extractor)."""

    def __init__(self, fx: FeatureExtractor, t: UnitTemplates | None, primaries: np.ndarray,
                 groups: np.ndarray, pre: int, post: int) -> None:
        if fx.reference not in ("car", "none"):
            raise ConfigError(f"unit matching supports reference 'car' or 'none'; the extractor has "
                              f"{fx.reference!r}")
        self.fx = fx
        self.pre, self.post = pre, post
        self.dead_n = max(1, int(round(fx.dead_time_ms * fx.fs_hz / 1000.0)))
        self.trough_n = max(1, int(round(fx.trough_window_ms * fx.fs_hz / 1000.0)))
        if self.dead_n < self.trough_n + post:
            raise ConfigError(f"unit matching needs dead_time_ms >= trough_window_ms + post_ms "
                              f"({self.dead_n} < {self.trough_n} + {post} samples)")
        if pre + max(post, self.trough_n) >= _RING:       # the oldest sample a snippet needs must still be held
            raise ConfigError(f"unit matching needs pre_ms + max(post_ms, trough_window_ms) under {_RING} samples; "
                              f"got {pre} + max({post}, {self.trough_n})")
        self.prim_ch = np.asarray(primaries, np.int64)
        self.grp_rows = np.ascontiguousarray(groups, np.int64)
        P = self.prim_ch.size
        if t is None:
            G, L = groups.shape[1], pre + post
            self.u_first = np.zeros(P, np.int64)
            self.u_count = np.zeros(P, np.int64)
            self.tmpl = np.zeros((1, G, L), np.float32)
            self.wts = np.zeros((1, G), np.float32)
            self.maxd = np.zeros(1, np.float32)
            self.order = np.zeros(0, np.int64)
            self.u_prim = np.zeros(0, np.int64)
        else:
            # units sorted by primary so that each primary's units are contiguous
            pidx = np.searchsorted(self.prim_ch, t.primary)
            self.order = np.argsort(pidx, kind="stable")
            self.u_count = np.bincount(pidx, minlength=P).astype(np.int64)
            self.u_first = (np.cumsum(self.u_count) - self.u_count).astype(np.int64)
            self.tmpl = np.ascontiguousarray(t.template[self.order], np.float32)
            self.wts = np.ascontiguousarray(t.weight[self.order], np.float32)
            self.u_prim = np.sort(pidx)                          # each (ordered) unit's primary index
            self.maxd = np.ascontiguousarray(t.max_distance[self.order], np.float32)
        self.wts0 = self.wts.copy()                         # as fitted; wts leaves out channels bad now
        # the extractor's own band-pass (float32 sections) and scaling to µV, per input dtype
        self.coef, self.zi, self.gain, self.offset = fx._coef, fx._zi, fx._gain, fx._offset
        self._ev = (np.empty(0, np.int64), np.empty(0, np.int64))
        self._no_snip = np.empty((0, self.grp_rows.shape[1], pre + post), np.float32)
        self._none = np.zeros(0, np.int64)
        self.thr = np.full(P, _NEVER, np.float32)
        self.ref_good = np.zeros(fx.n_channels, np.float32)
        self.cal_obj: Any = None
        self.active_from: int | None = None
        self.sync_calibration(0)
        self.reset()

    def reset(self) -> None:
        C, P, S = self.fx.n_channels, self.prim_ch.size, self.coef.shape[0]
        self.z0 = np.zeros((S, C), np.float32)
        self.z1 = np.zeros((S, C), np.float32)
        self.started = np.zeros(C + 1, np.bool_)        # [C]: every channel started (the fast path)
        self.ring = np.zeros((_RING, C), np.float32)
        self.xbuf = np.zeros(C, np.float32)
        self.prev_above = np.zeros(P, np.bool_)
        self.last_cross = np.full(P, -(2 ** 40), np.int64)
        self.search_end = np.full(P, -1, np.int64)
        self.trough_t = np.zeros(P, np.int64)
        self.trough_v = np.zeros(P, np.float32)
        self.pend_t = np.full(P, -1, np.int64)
        self.act = np.zeros(P + 1, np.int64)             # primaries with an open window or snippet; [P]: how many
        self.next: int | None = None

    def _reweight(self, bad: np.ndarray) -> None:
        """Leave channels that are bad now out of each unit's distance (the others' weights scaled
        so that the distance stays a mean over the terms used)."""
        if self.u_prim.size == 0:
            return
        rows = self.grp_rows[self.u_prim]
        used0 = self.wts0 > 0
        keep = used0 & (rows >= 0) & ~bad[np.maximum(rows, 0)]
        n0, n1 = used0.sum(1), keep.sum(1)
        scale = np.where(n1 > 0, n0 / np.maximum(n1, 1), 0.0)
        self.wts = np.ascontiguousarray(np.where(keep, self.wts0 * scale[:, None], 0.0), np.float32)

    def sync_calibration(self, sample: int, *, force: bool = False) -> None:
        """Take the extractor's thresholds and reference channels (from ``sample`` on) when its
        calibration changed since the last call (or ``force``)."""
        fx = self.fx
        cal = fx._calib
        if cal is self.cal_obj and not force:
            return
        self.cal_obj = cal
        bad = fx.channel_map.bad if cal is None else cal.bad
        self.ref_good = np.ascontiguousarray((~bad if fx.reference == "car" else np.zeros_like(bad)), np.float32)
        self._reweight(bad)
        if cal is None:
            self.thr = np.full(self.prim_ch.size, _NEVER, np.float32)
            return
        thr = np.where(bad[self.prim_ch] | ~np.isfinite(cal.thresholds_uv[self.prim_ch]), _NEVER,
                       cal.thresholds_uv[self.prim_ch]).astype(np.float32)
        self.thr = np.ascontiguousarray(thr)
        if self.active_from is None:
            self.active_from = sample

    def run(self, data: np.ndarray, start: int, *, collect: bool = False,
            snip_cap: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Run one block; (unit index, or primary index when collecting; sample; snippets or None)."""
        from cortexlink.dsp._unit_kernel import match_chunk

        if self.next is not None and start != self.next:      # a gap: restart the filters and detectors
            self.reset()
        n = data.shape[0]
        self.next = start + n
        cap = self.prim_ch.size * (n // self.dead_n + 2)
        if cap > self._ev[0].size:                            # event buffers, reused while big enough
            self._ev = (np.empty(cap, np.int64), np.empty(cap, np.int64))
        ev_a, ev_t = self._ev
        snip = (np.empty((min(snip_cap, cap), self.grp_rows.shape[1], self.pre + self.post), np.float32)
                if collect else self._no_snip)
        ne = match_chunk(data, self.gain[data.dtype], self.offset[data.dtype], self.ref_good, self.z0, self.z1,
                         self.coef, self.zi, self.started, self.ring, start, self.prim_ch, self.thr,
                         self.prev_above, self.last_cross, self.search_end, self.trough_t, self.trough_v,
                         self.pend_t, self.act, self.dead_n, self.trough_n, self.pre, self.post, self.grp_rows,
                         self.u_first, self.u_count, self.tmpl, self.wts, self.maxd, collect, ev_a, ev_t,
                         snip, self.xbuf)
        ne = min(int(ne), ev_t.size)
        if ne == 0:
            return self._none, self._none, (snip[:0] if collect else None)
        a = ev_a[:ne].copy() if collect else self.order[ev_a[:ne]]
        return a, ev_t[:ne].copy(), (snip[:min(ne, snip.shape[0])] if collect else None)
