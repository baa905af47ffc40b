"""Sorted units in the real-time path: per-unit template matching fitted from a sorting.

A decoder fed threshold crossings sees, on each electrode, the sum of every neuron near it;
a spike sorter separates them offline. This module carries a sorting into the real-time
chain: :func:`fit_unit_templates` learns, from a recording and the spike times of its
sorted units (from ``cortexlink sort``'s ``units.nwb`` via
:func:`cortexlink.sorting.realtime.spikes_from_units_nwb`,
from any sorter, or from the simulator's ground truth), one template per unit on its main
channel and its nearest neighbours, in the extractor's own filtered, referenced signal.
:class:`UnitFeatureExtractor` wraps a :class:`~cortexlink.dsp.FeatureExtractor`: every
chunk goes through the extractor as before, and through a compiled matcher
(:mod:`cortexlink.dsp._unit_kernel`) that detects crossings on the units' main channels
exactly as the extractor counts them, compares each snippet with the templates of the
units on that channel, and counts a spike of the nearest unit when it lies within the
unit's acceptance distance. The bins gain one column per unit, ``"<unit_id>/su"`` (spike
count), so a decoder can take sorted units instead of (or beside) crossings.

Distances are mean squared differences in units of each channel's noise variance (a
snippet of pure noise scores ~1 against a zero template); a unit's acceptance distance is
the ``accept_quantile`` of its own training spikes' distances.

A spike is counted in the bin of the sample at which its snippet completes, ``post - 1``
samples after the trough (``post_ms``, default 0.8 ms; or when the trough window closes, if
that is later): at most ~1.3 ms after the
crossing. The unit columns of a bin are valid where the main channel's features are valid
and thresholds were in force for the whole bin; the output does not depend on the
chunking. Only ``reference="car"`` or ``"none"`` (LRR's weights would have to be applied
to every channel the units use; refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.types import BinnedFeatures, Chunk
from cortexlink.dsp._state import _CAL_LEFT
from cortexlink.dsp._unit_base import UnitTemplates, _Matcher
from cortexlink.dsp._unit_fit import fit_unit_templates
from cortexlink.dsp.features import FeatureExtractor

__all__ = ["UnitTemplates", "UnitFeatureExtractor", "fit_unit_templates", "spikes_from_ground_truth"]


class UnitFeatureExtractor:
    """A :class:`~cortexlink.dsp.FeatureExtractor` whose bins also count each sorted unit's spikes.

    Parameters
    ----------
    extractor : FeatureExtractor
        The chain (its calibration, thresholds, reference and bin grid are the matcher's).
    templates : UnitTemplates or path
        From :func:`fit_unit_templates` (or :meth:`UnitTemplates.load`), for this chain.

    :meth:`step` and :meth:`apply` return the extractor's bins with one more column per unit,
    ``"<unit_id>/su"``: the unit's spikes in the bin (see the module docstring for the rule).
    Every other attribute (calibration, counters, ``recalibrate`` ...) is the extractor's.
    ``n_spikes_`` counts each unit's spikes since :meth:`reset`; with ``keep_unit_events=True``,
    :attr:`unit_events_` holds every spike as ``(unit index, sample)`` arrays (the sample at which
    it was counted: its trough plus ``post - 1``, or the end of the trough window if later).
    """

    def __init__(self, extractor: FeatureExtractor, templates: "UnitTemplates | str | Path", *,
                 keep_unit_events: bool = False) -> None:
        if not isinstance(extractor, FeatureExtractor):
            raise ConfigError(f"extractor must be a cortexlink.dsp.FeatureExtractor; got {type(extractor).__name__}")
        if not isinstance(templates, UnitTemplates):
            templates = UnitTemplates.load(templates)
        templates.check()
        templates.check_chain(extractor)
        if templates.n_units == 0:
            raise ConfigError("unit templates hold no unit")
        self.fx = extractor
        self.templates = templates
        self.keep_unit_events = bool(keep_unit_events)
        prims = np.unique(templates.primary)
        groups = np.stack([templates.group[np.flatnonzero(templates.primary == p)[0]] for p in prims])
        self._m = _Matcher(extractor, templates, prims, groups, templates.pre, templates.post)
        self._unit_names = tuple(f"{u}/su" for u in templates.unit_ids)
        names = extractor.feature_names
        self._names = names + self._unit_names
        ids = extractor.channel_map.channel_ids
        col = {}
        for i, nm in enumerate(names):
            col.setdefault(nm.split("/", 1)[0], i)
        self._prim_col = np.asarray([col[ids[p]] for p in templates.primary], np.intp)
        self.reset()

    def __getattr__(self, name: str) -> Any:
        if name in ("fx", "_m"):
            raise AttributeError(name)
        return getattr(self.fx, name)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def unit_ids(self) -> tuple[str, ...]:
        return self.templates.unit_ids

    def reset(self, *, calibration: bool = False) -> None:
        """Reset the extractor (see :meth:`FeatureExtractor.reset`) and the matcher."""
        self.fx.reset(calibration=calibration)
        self._m.reset()
        self._m.active_from = None
        self._m.sync_calibration(0, force=True)
        self._empty: BinnedFeatures | None = None
        self._ev_u: list[np.ndarray] = []
        self._ev_t: list[np.ndarray] = []
        self.n_spikes_ = np.zeros(self.templates.n_units, np.int64)
        self._kept: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def unit_events_(self) -> tuple[np.ndarray, np.ndarray]:
        """Every spike counted since :meth:`reset` (``keep_unit_events=True``): (unit index, sample)."""
        if not self._kept:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate([k[0] for k in self._kept]), np.concatenate([k[1] for k in self._kept])

    def step(self, chunk: Chunk) -> BinnedFeatures:
        """Process one chunk (see :meth:`FeatureExtractor.step`); the bins gain the unit columns."""
        fx, m = self.fx, self._m
        if not isinstance(chunk, Chunk):
            return fx.step(chunk)                               # raises its ValidationError
        if fx._calib is not m.cal_obj:                          # set_calibration/calibrate since the last step
            m.sync_calibration(int(chunk.start_sample))
        left = int(fx._st.ist[_CAL_LEFT])
        bf = fx.step(chunk)                                      # validates the chunk
        data = chunk.data
        start, n = chunk.start_sample, data.shape[0]
        if n:
            if not data.flags.c_contiguous:
                data = np.ascontiguousarray(data)
            if fx._calib is not m.cal_obj and 0 < left < n:      # calibration completed inside the chunk
                self._collect(m.run(data[:left], start))
                m.sync_calibration(start + left)
                self._collect(m.run(data[left:], start + left))
            else:
                self._collect(m.run(data, start))
                m.sync_calibration(start + n)
        return self._attach(bf)

    def _collect(self, ev: tuple) -> None:
        if ev[0].size:
            self._ev_u.append(ev[0])
            self._ev_t.append(ev[1])
            np.add.at(self.n_spikes_, ev[0], 1)
            if self.keep_unit_events:
                self._kept.append((ev[0], ev[1]))

    def _attach(self, bf: BinnedFeatures) -> BinnedFeatures:
        U, k = self.templates.n_units, bf.n_bins
        if k == 0 and not bf.gaps:                               # most chunks: no bin completed
            if self._empty is None:
                self._empty = BinnedFeatures._trusted(
                    np.zeros((0, len(self.feature_names)), np.float32), np.zeros(0, np.int64),
                    bf.bin_width_samples, bf.fs_hz, self.feature_names, np.zeros((0, len(self.feature_names)), bool))
            return self._empty
        counts = np.zeros((k, U), np.float32)
        uvalid = np.zeros((k, U), bool)
        valid = bf.valid if bf.valid is not None else np.ones(bf.data.shape, bool)
        if self._ev_u:
            eu = np.concatenate(self._ev_u)
            et = np.concatenate(self._ev_t)
        else:
            eu = et = np.zeros(0, np.int64)
        if k:
            W = bf.bin_width_samples
            starts = bf.bin_start_samples
            b = np.searchsorted(starts, et, side="right") - 1
            inside = (b >= 0) & (et < starts[np.maximum(b, 0)] + W)
            keep = et >= starts[-1] + W                           # for bins not yet complete
            if bf.gaps:
                # a bin that began before a gap holds no spike after it: with on_gap="reset" the
                # partly filled bin is flushed and a new grid starts at the gap's end
                g_end = max(a + m for a, m in bf.gaps)
                after = et >= g_end
                inside &= ~(after & (starts[np.maximum(b, 0)] < g_end))
                keep |= after & ~inside
            np.add.at(counts, (b[inside], eu[inside]), 1.0)
            eu, et = eu[keep], et[keep]
            uvalid = valid[:, self._prim_col].copy()
            cal = self.fx._calib
            bad = cal.bad[self.templates.primary] if cal is not None else self.fx.channel_map.bad[self.templates.primary]
            af = self._m.active_from
            ok_bins = starts >= af if af is not None else np.zeros(k, bool)
            uvalid &= ok_bins[:, None] & ~bad[None, :]
            counts[~uvalid] = np.nan
        self._ev_u = [eu] if eu.size else []
        self._ev_t = [et] if et.size else []
        data = np.hstack([bf.data, counts]) if k else np.zeros((0, bf.data.shape[1] + U), np.float32)
        if bf.gaps:
            return BinnedFeatures(data.astype(np.float32, copy=False), bf.bin_start_samples, bf.bin_width_samples,
                                  bf.fs_hz, self.feature_names, np.hstack([valid, uvalid]), bf.gaps)
        return BinnedFeatures._trusted(data.astype(np.float32, copy=False), np.array(bf.bin_start_samples),
                                       bf.bin_width_samples, bf.fs_hz, self.feature_names, np.hstack([valid, uvalid]))

    def apply(self, data: Any, *, chunk_size: int | None = None) -> BinnedFeatures:
        """Reset and run ``data`` through :meth:`step` (see :meth:`FeatureExtractor.apply`)."""
        self.reset()
        parts = [self.step(c) for c in self.fx._as_chunks(data, chunk_size)]
        if not parts:
            return self._attach(self.fx._assemble([], []))
        return BinnedFeatures.concat(parts)


def spikes_from_ground_truth(ground_truth: Any, *, until_sample: int | None = None
                             ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Spike samples and channels of every simulated unit (a perfect sorting), ids ``u0000``..."""
    gt = ground_truth
    spikes, chans = {}, {}
    for u in range(gt.n_units):
        s = np.asarray(gt.unit_spike_samples(u), np.int64)
        if until_sample is not None:
            s = s[s < until_sample]
        spikes[f"u{u:04d}"] = s
        chans[f"u{u:04d}"] = int(gt.unit_channel[u])
    return spikes, chans
