"""Units across sessions and days: which sorted unit of one session is which of another.

:func:`load_session_units` reads what tracking compares from a ``cortexlink sort`` output folder
(mean templates and unit locations from its SortingAnalyzer, firing rates and curation labels
from ``metrics.csv``); :func:`track_units` gives every unit of every session a stable id and a
confidence; :func:`write_tracking` writes the table and the figures a researcher looks at.

Method (drift-aware; :mod:`cortexlink.sorting._tracking_match` has the details):

1. Sessions of one participant are put in order (``order_key``: the recording's start, or a day;
   the given order when any is missing). Different participants are tracked separately and never
   matched (sessions whose participant is unknown, None, are taken as one participant).
2. For each session and the one before it, the rigid shift of the probe along its long axis is
   estimated first: the shift within ±``max_shift_um`` that best aligns the units' peak-to-peak
   footprints over the electrodes (position and amplitude together), from the units labelled
   ``good`` when both sessions have three or more (a sorter's small extra units sit still on the
   probe and pull the estimate towards 0), else from all.
3. At that shift every pair of units whose footprints overlap is compared by waveform shape
   (template correlation on the channels where either is seen), amplitude (log ratio of the
   template norms), position (distance after the shift) and firing rate (log ratio); a calibrated
   logistic turns these into the probability that the two are one neuron (the confidence).
4. Units are paired one to one (``scipy.optimize.linear_sum_assignment``) to maximise the sum
   of ``log(confidence / min_confidence)`` over the matches: a pair below ``min_confidence`` is
   never a match, and leaving a unit unmatched costs nothing. The shift is then refined as the median
   vertical offset of the confident pairs' positions when there are three or more.
5. A unit still unmatched may continue an id last seen up to ``max_gap_sessions`` sessions back
   (compared the same way with that session). Everything left gets a new id: turnover comes out
   as new ids, not forced matches.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["SessionUnits", "load_session_units", "session_units_from_analyzer", "track_units", "write_tracking",
           "TABLE_COLUMNS"]

#: Columns of the table :func:`track_units` returns (one row per session and unit).
TABLE_COLUMNS = ("session", "participant", "unit_id", "tracked_id", "confidence", "matched_session",
                 "matched_unit", "shift_um")
_LABELS = ("good", "mua", "noise")
_MIN_GOOD_FOR_SHIFT = 3


@dataclass
class SessionUnits:
    """The units of one sorted session: what tracking compares.

    Attributes
    ----------
    session : str
        Session id (the sort output's folder name, or given).
    participant : str or None
        Participant id; sessions of different participants are never matched.
    order_key : float or None
        Day or start time used to order sessions (None: the given order).
    unit_ids : list of str
    templates_uv : ndarray (U, T, C)
        Mean waveforms (µV) on every channel (zeros outside a sparse unit's channels).
    channel_positions_um : ndarray (C, 2)
    unit_positions_um : ndarray (U, 2)
    firing_rate_hz : ndarray (U,)
    labels : list of str
        Curation label per unit (``good`` / ``mua`` / ``noise``).
    """

    session: str
    participant: str | None
    order_key: float | None
    unit_ids: list[str]
    templates_uv: np.ndarray
    channel_positions_um: np.ndarray
    unit_positions_um: np.ndarray
    firing_rate_hz: np.ndarray
    labels: list[str]

    def __post_init__(self) -> None:
        U = len(self.unit_ids)
        self.unit_ids = [str(u) for u in self.unit_ids]
        self.templates_uv = np.asarray(self.templates_uv, np.float32)
        self.channel_positions_um = np.asarray(self.channel_positions_um, float)[:, :2]
        self.unit_positions_um = np.asarray(self.unit_positions_um, float).reshape(-1, 2)
        self.firing_rate_hz = np.asarray(self.firing_rate_hz, float).reshape(-1)
        C = len(self.channel_positions_um)
        if self.templates_uv.ndim != 3 or self.templates_uv.shape[0] != U or self.templates_uv.shape[2] != C:
            raise ConfigError(f"session {self.session!r}: templates_uv must be (n_units={U}, n_samples, "
                              f"n_channels={C}); got shape {self.templates_uv.shape}")
        for name in ("unit_positions_um", "firing_rate_hz", "labels"):
            if len(getattr(self, name)) != U:
                raise ConfigError(f"session {self.session!r}: {name} must have one entry per unit ({U}); "
                                  f"got {len(getattr(self, name))}")

    @property
    def n_units(self) -> int:
        return len(self.unit_ids)

    def subset(self, keep: np.ndarray) -> "SessionUnits":
        """The same session with only the units where ``keep`` is True."""
        keep = np.asarray(keep, bool)
        return SessionUnits(self.session, self.participant, self.order_key,
                            [u for u, k in zip(self.unit_ids, keep) if k], self.templates_uv[keep],
                            self.channel_positions_um, self.unit_positions_um[keep], self.firing_rate_hz[keep],
                            [lab for lab, k in zip(self.labels, keep) if k])


def session_units_from_analyzer(analyzer: Any, *, session: str, participant: str | None = None,
                                order_key: float | None = None, firing_rate_hz: Any = None,
                                labels: Sequence[str] | None = None) -> SessionUnits:
    """A :class:`SessionUnits` from a SpikeInterface SortingAnalyzer with the ``templates`` and
    ``unit_locations`` extensions (firing rates from the sorting when not given; every unit
    labelled ``good`` when no labels are given)."""
    ids = [str(u) for u in analyzer.unit_ids]
    C = analyzer.get_num_channels()
    if not ids:
        tmpl, loc = np.zeros((0, 1, C), np.float32), np.zeros((0, 2))
    else:
        for ext in ("templates", "unit_locations"):
            if not analyzer.has_extension(ext):
                raise ConfigError(f"session {session!r}: the analyzer has no {ext!r} extension (tracking needs "
                                  f"templates and unit locations)")
        tmpl = analyzer.get_extension("templates").get_data(operator="average")
        loc = np.asarray(analyzer.get_extension("unit_locations").get_data())[:, :2]
    if firing_rate_hz is None:
        dur = analyzer.get_total_duration()
        counts = analyzer.sorting.count_num_spikes_per_unit(outputs="array") if ids else np.zeros(0)
        firing_rate_hz = np.asarray(counts, float) / max(dur, 1e-9)
    return SessionUnits(session, participant, order_key, ids, tmpl, analyzer.get_channel_locations(), loc,
                        firing_rate_hz, list(labels) if labels is not None else ["good"] * len(ids))


def _order_key(summary: dict) -> float | None:
    """The recording's start (POSIX seconds) from a sorted session's manifest, when there is one."""
    import datetime as dt

    src = (summary.get("recording") or {}).get("source") or {}
    if src.get("format") != "cortexlink-session" or not src.get("path"):
        return None
    try:
        manifest = json.loads((Path(src["path"]) / "manifest.json").read_text())
        t0 = dt.datetime.strptime(manifest["started_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return t0.timestamp() + float(src.get("first_sample", 0)) / float(src.get("fs_hz") or 1.0)


def load_session_units(sort_dir: str | Path, *, labels: Sequence[str] = ("good", "mua")) -> SessionUnits:
    """Read the units of a ``cortexlink sort`` output folder (``summary.json``, ``metrics.csv``,
    ``analyzer/``) whose curation label is in ``labels``.

    Raises
    ------
    ConfigError
        If ``sort_dir`` is not such a folder, or ``labels`` names an unknown label.
    """
    import pandas as pd

    from cortexlink.sorting.pipeline import SUMMARY_FORMAT

    d = Path(sort_dir)
    bad = [lab for lab in labels if lab not in _LABELS]
    if bad or not labels:
        raise ConfigError(f"labels must be among {_LABELS}; got {list(labels)!r}")
    try:
        summary = json.loads((d / "summary.json").read_text())
        ok = isinstance(summary, dict) and summary.get("format") == SUMMARY_FORMAT
    except (OSError, ValueError):
        ok = False
    if not ok or not (d / "metrics.csv").is_file() or not (d / "analyzer").is_dir():
        raise ConfigError(f"{d} is not a folder `cortexlink sort` wrote (it needs summary.json of format "
                          f"{SUMMARY_FORMAT!r}, metrics.csv and analyzer/)")
    import spikeinterface.core as si

    try:
        an = si.load_sorting_analyzer(d / "analyzer", load_extensions=True)
    except Exception as exc:  # noqa: BLE001 - SpikeInterface raises many kinds; name the folder
        raise ConfigError(f"{d / 'analyzer'}: cannot be read as a SortingAnalyzer ({exc})") from None
    table = pd.read_csv(d / "metrics.csv", index_col="unit_id")
    table.index = table.index.map(str)
    src = (summary.get("recording") or {}).get("source") or {}
    su = session_units_from_analyzer(an, session=d.resolve().name, participant=src.get("participant_id"),
                                     order_key=_order_key(summary))
    rate = table["firing_rate"] if "firing_rate" in table else pd.Series(dtype=float)
    su.firing_rate_hz = np.array([rate.get(u, r) for u, r in zip(su.unit_ids, su.firing_rate_hz)], float)
    lab = table["label"] if "label" in table else pd.Series(dtype=str)
    su.labels = [str(lab.get(u, "good")) for u in su.unit_ids]
    return su.subset(np.array([lab in labels for lab in su.labels], bool))


def _ordered(group: list[tuple[int, SessionUnits]]) -> list[tuple[int, SessionUnits]]:
    if all(s.order_key is not None for _, s in group):
        return sorted(group, key=lambda p: (p[1].order_key, p[0]))
    return group


def track_units(sessions: Sequence[SessionUnits], *, max_shift_um: float = 100.0, min_confidence: float = 0.5,
                max_gap_sessions: int = 2, progress: bool = False) -> Any:
    """Give every unit of every session a stable id (the module docstring has the method).

    Parameters
    ----------
    sessions : sequence of SessionUnits
        Of one or more participants; session names must be distinct.
    max_shift_um : float
        Largest rigid shift of the probe between two sessions searched for (0 to 1000 µm).
    min_confidence : float
        A pair below this confidence (0..1) is not a match.
    max_gap_sessions : int
        A unit may continue an id last seen this many sessions back at most (>= 1; 1 = the
        previous session only).
    progress : bool
        A progress bar over the sessions.

    Returns
    -------
    pandas.DataFrame
        One row per (session, unit), columns :data:`TABLE_COLUMNS`: ``tracked_id`` ("U0001"...),
        ``confidence`` of the match that gave the id (NaN for a unit seen first),
        ``matched_session`` / ``matched_unit`` (None when new), ``shift_um`` (the estimated shift
        of the session against the one it was matched to; NaN when new). ``table.attrs["shifts"]``
        lists every session pair compared and its shift, ``table.attrs["sessions"]`` every session
        (those without units too) in the order tracked.
    """
    import pandas as pd

    from cortexlink.sorting._tracking_report import bar

    sessions = list(sessions)
    if not all(isinstance(s, SessionUnits) for s in sessions):
        raise ConfigError("sessions must be SessionUnits (see load_session_units)")
    names = [s.session for s in sessions]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"session names must be distinct; got {dup} more than once")
    if not (isinstance(max_shift_um, (int, float)) and 0 <= max_shift_um <= 1000):
        raise ConfigError(f"max_shift_um must be a number in [0, 1000]; got {max_shift_um!r}")
    if not (isinstance(min_confidence, (int, float)) and 0 < min_confidence < 1):
        raise ConfigError(f"min_confidence must be a number in (0, 1); got {min_confidence!r}")
    if isinstance(max_gap_sessions, bool) or not isinstance(max_gap_sessions, int) or max_gap_sessions < 1:
        raise ConfigError(f"max_gap_sessions must be an integer >= 1; got {max_gap_sessions!r}")
    groups: dict[Any, list[tuple[int, SessionUnits]]] = {}
    for i, s in enumerate(sessions):
        groups.setdefault(s.participant, []).append((i, s))
    rows: list[dict] = []
    shifts: list[dict] = []
    counter = [0]
    order: list[dict] = []
    with bar(len(sessions), "tracking units", progress) as pb:
        for part, group in groups.items():
            ordered = [s for _, s in _ordered(group)]
            order += [dict(participant=part, session=s.session) for s in ordered]
            _track_group(ordered, part, rows, shifts, counter, float(max_shift_um), float(min_confidence),
                         max_gap_sessions, pb)
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table["confidence"] = table["confidence"].astype(float)
    table["shift_um"] = table["shift_um"].astype(float)
    table.attrs["shifts"] = shifts
    table.attrs["sessions"] = order
    table.attrs["params"] = dict(max_shift_um=float(max_shift_um), min_confidence=float(min_confidence),
                                 max_gap_sessions=max_gap_sessions)
    return table


def _arrays(s: SessionUnits) -> dict:
    return dict(templates_uv=s.templates_uv, unit_positions_um=s.unit_positions_um, firing_rate_hz=s.firing_rate_hz)


def _compare(a: SessionUnits, b: SessionUnits, ia_keep: np.ndarray, ib_keep: np.ndarray, max_shift_um: float,
             min_confidence: float) -> tuple[list[tuple[int, int, float]], float]:
    """Match units ``ia_keep`` of ``a`` one to one with units ``ib_keep`` of ``b``; returns the
    accepted ``(ia, ib, confidence)`` and the estimated shift of ``b`` against ``a``."""
    from scipy.optimize import linear_sum_assignment

    from cortexlink.sorting import _tracking_match as T

    if a.channel_positions_um.shape != b.channel_positions_um.shape or \
            not np.allclose(a.channel_positions_um, b.channel_positions_um):
        raise ConfigError(f"sessions {a.session!r} and {b.session!r} have different electrode positions; tracking "
                          f"compares sessions recorded on the same probe")
    pos = a.channel_positions_um
    fa, fb = T.footprints(a.templates_uv), T.footprints(b.templates_uv)
    # the shift from the units curated good when both sessions have a few: a sorter's small extra
    # units (electrode noise, multi-unit hash) sit still on the probe and pull the estimate to 0
    ga, gb = (np.array([lab == "good" for lab in s.labels], bool) for s in (a, b))
    if ga.sum() >= _MIN_GOOD_FOR_SHIFT and gb.sum() >= _MIN_GOOD_FOR_SHIFT:
        fa, fb = fa[ga], fb[gb]
    shift, _, _, _ = T.estimate_shift(fa, fb, pos, max_shift_um)
    aa = {k: v[ia_keep] for k, v in _arrays(a).items()}
    bb = {k: v[ib_keep] for k, v in _arrays(b).items()}
    ia, ib, X = T.pair_features(aa, bb, pos, shift)
    if len(ia) == 0:
        return [], shift
    conf = T.confidence(X)
    # each match gains log(confidence / min_confidence); a pair that would lose (and every pair
    # that is not a candidate) costs 0, the same as leaving both units unmatched, so the
    # assignment never pays for one good match with forced bad ones elsewhere
    cost = np.zeros((len(ia_keep), len(ib_keep)))
    cost[ia, ib] = np.minimum(0.0, math.log(min_confidence) - np.log(np.maximum(conf, 1e-300)))
    r, c = linear_sum_assignment(cost)
    cmat = np.zeros(cost.shape)
    cmat[ia, ib] = conf
    pairs = [(int(ia_keep[i]), int(ib_keep[j]), float(cmat[i, j])) for i, j in zip(r, c)
             if cost[i, j] < 0.0 and cmat[i, j] >= min_confidence]
    if len(pairs) >= 3:       # refine: the median vertical offset of the confident pairs' positions
        dy = [b.unit_positions_um[j, 1] - a.unit_positions_um[i, 1] for i, j, _ in pairs]
        refined = float(np.median(dy))
        if abs(refined - shift) <= max(5.0, 0.25 * abs(shift)):
            shift = refined
    return pairs, shift


def _track_group(group: list[SessionUnits], participant: Any, rows: list, shifts: list, counter: list,
                 max_shift_um: float, min_confidence: float, max_gap: int, pb: Any) -> None:
    ids: list[list[str | None]] = []          # tracked id of each unit, per session in order
    last_seen: dict[str, int] = {}            # tracked id -> index (in group) of its last session
    for k, s in enumerate(group):
        tid: list[str | None] = [None] * s.n_units
        info: list[tuple] = [(math.nan, None, None, math.nan)] * s.n_units
        free_b = np.arange(s.n_units)
        for g in range(1, max_gap + 1):
            j = k - g
            if j < 0 or len(free_b) == 0:
                break
            prev = group[j]
            # units of session j whose id was not seen after it (for g == 1: all of them)
            open_a = np.array([i for i, t in enumerate(ids[j]) if t is not None and last_seen.get(t) == j], int)
            if len(open_a) == 0:
                continue
            pairs, shift = _compare(prev, s, open_a, free_b, max_shift_um, min_confidence)
            shifts.append(dict(participant=participant, session_a=prev.session, session_b=s.session,
                               shift_um=round(shift, 2), n_matched=len(pairs), gap=g))
            for i, jb, c in pairs:
                tid[jb] = ids[j][i]
                info[jb] = (c, prev.session, prev.unit_ids[i], shift)
            free_b = np.array([u for u in free_b if tid[u] is None], int)
        for u in range(s.n_units):
            if tid[u] is None:
                counter[0] += 1
                tid[u] = f"U{counter[0]:04d}"
            last_seen[tid[u]] = k
            c, ms, mu, sh = info[u]
            rows.append(dict(session=s.session, participant=participant, unit_id=s.unit_ids[u], tracked_id=tid[u],
                             confidence=c, matched_session=ms, matched_unit=mu, shift_um=sh))
        ids.append(tid)
        pb.update(1)


def write_tracking(out_dir: str | Path, table: Any, sessions: Sequence[SessionUnits]) -> dict:
    """Write ``tracking.csv``, ``tracking.json`` (the table, the shift of every session against
    the previous one, counts) and ``tracking.png`` / ``tracking.html`` (units present per session
    by tracked id, the confidence histogram, the shifts) into ``out_dir`` (created); returns what
    ``tracking.json`` holds, without the table."""
    from cortexlink.sorting._tracking_report import write_outputs

    return write_outputs(Path(out_dir), table, list(sessions))
