"""What the operator page shows of stimulation: the ``ui_feed`` node's ``stim`` and ``stim_status`` inputs.

:class:`StimView` keeps the delivered pulses of the last seconds (from the stimulator's ``stim``
output) and the interlock's newest status; :meth:`StimView.view` is the page's ``stim`` part:

``now_s``
    Session time of the newest message (the raster's right edge).
``pulses``
    ``{"n0", "n", "t", "e", "a"}``: the newest pulses (at most :data:`SEND_PULSES`), numbered
    from ``n0`` in delivery order (the page appends those it has not seen: a snapshot it missed
    costs nothing unless more pulses than that arrived meanwhile), onset times (s), electrodes
    and first-phase amplitudes (µA).
``n_delivered``, ``electrodes``
    Pulses delivered since the feed started; the electrodes that stimulated (sorted).
``status``
    The interlock's (None before its first message): policy, ``estop`` (the reason while
    engaged, else None), ``estop_since_s`` (session time of the first status that showed it
    engaged), the limits' SHA-256, the totals (plans, pulses, approved, refused,
    clamped), refusals by reason, the last refused pulses.

Nothing here is on the real-time path: the feed's inputs drop their oldest messages when it lags.
"""

from __future__ import annotations

import collections
import math

import numpy as np

__all__ = ["StimView", "SEND_PULSES"]

#: Pulses per snapshot (the newest)
SEND_PULSES = 256
_KEEP = 4096


class StimView:
    """Delivered pulses and the interlock's status for the operator page (see the module docstring)."""

    def __init__(self) -> None:
        self.pulses: collections.deque = collections.deque(maxlen=_KEEP)     # (n, t, e, a)
        self.n_delivered = 0
        self.now_s = 0.0
        self.status: dict | None = None
        self.electrodes: set[int] = set()
        self.estop_since_s: float | None = None

    def delivered(self, payload: dict) -> None:
        """One ``stim_pulses`` message (the pulses the stimulator delivered in a chunk)."""
        t = np.asarray(payload.get("time_s", ()), np.float64).ravel()
        e = np.asarray(payload.get("electrode", ()), np.int64).ravel()
        a = np.asarray(payload.get("amplitude_ua", ()), np.float64).ravel()
        n = min(t.size, e.size, a.size)
        for i in range(n):
            self.pulses.append((self.n_delivered, float(t[i]), int(e[i]), float(a[i])))
            self.n_delivered += 1
        self.electrodes.update(int(x) for x in np.unique(e[:n]))
        now = payload.get("now_s")
        if isinstance(now, (int, float)) and math.isfinite(now):
            self.now_s = max(self.now_s, float(now))
        if n:
            self.now_s = max(self.now_s, float(t[:n].max()))

    def interlock(self, payload: dict) -> None:
        """One ``stim_status`` message."""
        if not isinstance(payload, dict):
            return
        self.status = payload
        now = payload.get("now_s")
        if isinstance(now, (int, float)) and math.isfinite(now):
            self.now_s = max(self.now_s, float(now))
        if payload.get("estop") is None:
            self.estop_since_s = None
        elif self.estop_since_s is None:
            self.estop_since_s = self.now_s

    def view(self) -> dict:
        """The page's ``stim`` part (JSON-able, no NaN)."""
        rows = list(self.pulses)[-SEND_PULSES:]
        s = self.status
        st = None
        if s is not None:
            st = {"policy": s.get("policy"), "estop": s.get("estop"), "limits_sha256": s.get("limits_sha256"),
                  "estop_since_s": None if self.estop_since_s is None else round(self.estop_since_s, 4),
                  **{k: int(s.get(k) or 0) for k in ("n_plans", "n_pulses", "n_approved", "n_refused", "n_clamped")},
                  "reasons": {str(k): int(v) for k, v in (s.get("reasons") or {}).items()},
                  "last_refused": [{"electrode": int(r.get("electrode", -1)), "time_s": round(float(r.get("time_s", 0.0)), 4),
                                    "reason": str(r.get("reason", ""))} for r in (s.get("last_refused") or [])[-10:]
                                   if isinstance(r, dict)]}
        return {"now_s": round(self.now_s, 4), "n_delivered": self.n_delivered, "electrodes": sorted(self.electrodes),
                "pulses": {"n0": rows[0][0] if rows else self.n_delivered, "n": len(rows),
                           "t": [round(r[1], 5) for r in rows], "e": [r[2] for r in rows],
                           "a": [round(r[3], 2) for r in rows]},
                "status": st}
