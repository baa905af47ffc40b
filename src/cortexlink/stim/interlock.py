"""The safety interlock: every stimulation plan passes through it before any driver sees it.

:class:`SafetyInterlock` reviews a :class:`~cortexlink.stim.model.StimPlan` against a
participant's :class:`~cortexlink.stim.limits.SafetyLimits` and the pulses it has already
approved, and returns a :class:`Decision`: the approved pulses as an :class:`ApprovedPlan`
(signed with a key only this interlock holds — drivers deliver nothing else), the refused pulses
with the reason for each, and how many were clamped. Every decision, and every E-STOP and reset,
is written to the :class:`~cortexlink.stim.audit.AuditLog`.

What is checked, per pulse: every field finite; the electrode known and enabled; the pulse inside
the plan's window and not before ``now + min_lead_s``; interphase gap, phase widths and amplitudes
in range for both phases; charge per phase, charge density and Shannon's k for the electrode's
area; charge balance. Across pulses (with history): the electrode's frequency (and no overlap);
the summed current of pulses active at once across electrodes; pulses per electrode in the
trailing hour; |net charge| per electrode over a window. Plan-wide: an E-STOP refuses everything;
a window that is not finite, inverted or too long, or too many pulses, refuses the whole plan.

Policies: ``refuse`` (default) drops every violating pulse. ``clamp`` replaces a pulse whose only
faults are its amplitude, widths, gap, charge or balance with the nearest safe symmetric pulse (the
audit keeps the original); every other fault is refused under either policy. Nothing is ever
passed silently.

The cross-pulse limits are enforced conservatively (hour and net-charge windows counted in
buckets that can only over-count), so :func:`cortexlink.stim.verify.find_unsafe`, an independent
exact checker, finds nothing unsafe in what is approved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
from typing import Any

import numpy as np

from cortexlink.core.errors import ValidationError
from cortexlink.core.pulses import PULSE_DTYPE, PULSE_FIELDS, empty_pulses, pulse_end_s
from cortexlink.stim.audit import AuditLog
from cortexlink.stim.limits import SafetyLimits
from cortexlink.stim.model import StimPlan
from cortexlink.stim.verify import stateless_reasons

__all__ = ["SafetyInterlock", "ApprovedPlan", "Decision", "REFUSED_DTYPE", "CLAMPABLE"]

#: Faults the ``clamp`` policy may repair; all others are refused whatever the policy.
CLAMPABLE = frozenset({"gap", "width", "amplitude", "charge_per_phase", "charge_density", "shannon",
                       "charge_balance"})
REFUSED_DTYPE = np.dtype(PULSE_DTYPE.descr + [("reason", "U24")])
_HOUR_BUCKET_S = 60.0
_NET_BUCKETS = 8
#: Timing below the command format's resolution (ns) is not a frequency violation.
TIME_TOL_S = 1e-9


@dataclasses.dataclass(frozen=True)
class ApprovedPlan:
    """Pulses the interlock approved for one plan; only the interlock that signed it can vouch for it."""

    pulses: np.ndarray
    t_start_s: float
    t_end_s: float
    source: str
    plan_seq: int
    decision_seq: int
    limits_sha256: str
    signature: bytes = dataclasses.field(repr=False)

    def __len__(self) -> int:
        return int(self.pulses.shape[0])

    def payload(self) -> bytes:
        """The bytes the signature covers."""
        head = (f"{self.t_start_s!r}|{self.t_end_s!r}|{self.source}|{self.plan_seq}|{self.decision_seq}|"
                f"{self.limits_sha256}|").encode()
        return head + np.ascontiguousarray(self.pulses).tobytes()


@dataclasses.dataclass
class Decision:
    """The interlock's answer to one plan."""

    seq: int
    approved: ApprovedPlan
    refused: np.ndarray          # REFUSED_DTYPE: the original pulse and why
    n_clamped: int
    plan_refused: str | None     # a reason when the whole plan was refused

    @property
    def n_approved(self) -> int:
        return len(self.approved)

    @property
    def reasons(self) -> dict[str, int]:
        """Refusal counts by reason."""
        r, c = np.unique(self.refused["reason"], return_counts=True)
        return {str(k): int(v) for k, v in zip(r, c)}


class SafetyInterlock:
    """Review stimulation plans against :class:`SafetyLimits`; see the module docstring.

    Parameters
    ----------
    limits : SafetyLimits
    audit : AuditLog, optional
        Where decisions are written (default: an in-memory log).

    Examples
    --------
    >>> from cortexlink.stim import biphasic, StimPlan
    >>> lock = SafetyInterlock(SafetyLimits.default(8))
    >>> d = lock.review(StimPlan(biphasic([0, 9], 0.01, 50.0, 200.0), 0.0, 0.02), now_s=0.0)
    >>> d.n_approved, d.reasons
    (1, {'unknown_electrode': 1})
    """

    def __init__(self, limits: SafetyLimits, *, audit: AuditLog | None = None) -> None:
        if not isinstance(limits, SafetyLimits):
            raise ValidationError(f"limits must be a SafetyLimits; got {type(limits).__name__}")
        self.limits = limits
        self.audit = audit if audit is not None else AuditLog()
        self._key = os.urandom(32)
        self._seq = 0
        self._estop: str | None = None
        n = limits.n_ids
        self._hour: dict[int, np.ndarray] = {}       # minute bucket -> approved pulses per electrode
        self._hour_total = np.zeros(n, np.int64)     # over the buckets kept
        self._net_bucket_s = limits.net_charge_window_s / _NET_BUCKETS
        self._net: dict[int, np.ndarray] = {}        # bucket -> |net charge| (nC) per electrode
        self._net_total = np.zeros(n)
        # Approved pulses that may still conflict with new ones, sorted by start.
        self._h_start = np.empty(0)
        self._h_end = np.empty(0)
        self._h_e = np.empty(0, np.int64)
        self._h_cur = np.empty(0)
        pe = limits.per_electrode
        known = limits.known
        # How far from a pulse another one can still conflict with it (frequency or overlap).
        self._look_s = (1.0 / float(np.min(pe["max_frequency_hz"][known]))
                        + (2 * float(np.max(pe["max_width_us"][known])) + float(np.max(pe["max_gap_us"][known]))) * 1e-6
                        + 1e-3)
        self.totals = {"plans": 0, "pulses": 0, "approved": 0, "refused": 0, "clamped": 0}
        self._n = n
        self.audit.write({"kind": "interlock_start", "limits": limits.summary()})

    # ------------------------------------------------------------------ E-STOP
    @property
    def stopped(self) -> str | None:
        """The E-STOP reason while stimulation is stopped, else None."""
        return self._estop

    def estop(self, reason: str = "operator", *, now_s: float | None = None) -> None:
        """Refuse every plan from now on until :meth:`reset` (idempotent); audited."""
        if self._estop is None:
            self._estop = str(reason) or "estop"
            self.audit.write({"kind": "estop", "reason": self._estop, "now_s": now_s})

    def reset(self, who: str = "operator", *, now_s: float | None = None) -> None:
        """Release an E-STOP (an explicit action, named in the audit); audited."""
        if self._estop is not None:
            self.audit.write({"kind": "estop_reset", "was": self._estop, "by": str(who), "now_s": now_s})
        self._estop = None

    # ------------------------------------------------------------------ signatures
    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def vouches_for(self, approved: Any) -> bool:
        """True only for an unaltered :class:`ApprovedPlan` this interlock signed."""
        if not isinstance(approved, ApprovedPlan):
            return False
        if approved.pulses.dtype != PULSE_DTYPE or approved.limits_sha256 != self.limits.sha256:
            return False
        return hmac.compare_digest(self._sign(approved.payload()), approved.signature)

    # ------------------------------------------------------------------ review
    def review(self, plan: StimPlan, now_s: float) -> Decision:
        """Judge ``plan`` at session time ``now_s``; return the :class:`Decision` (and audit it).

        Raises
        ------
        ValidationError
            If ``plan`` is not a StimPlan or ``now_s`` is not a finite number.
        """
        if not isinstance(plan, StimPlan):
            raise ValidationError(f"plan must be a StimPlan; got {type(plan).__name__}")
        try:
            now = float(now_s)
        except (TypeError, ValueError):
            raise ValidationError(f"now_s must be a number; got {now_s!r}") from None
        if not np.isfinite(now):
            raise ValidationError(f"now_s must be finite; got {now_s!r}")
        self._seq += 1
        pulses = plan.pulses
        L = self.limits
        plan_reason = None
        if self._estop is not None:
            plan_reason = "estop"
        elif not (np.isfinite(plan.t_start_s) and np.isfinite(plan.t_end_s)) or plan.t_end_s < plan.t_start_s:
            plan_reason = "plan_window"
        elif plan.t_end_s - plan.t_start_s > L.max_plan_s:
            plan_reason = "plan_too_long"
        elif len(pulses) > L.max_pulses_per_plan:
            plan_reason = "plan_too_many_pulses"
        if plan_reason is not None:
            reasons = np.full(len(pulses), plan_reason, "U24")
            return self._finish(plan, now, empty_pulses(), pulses, reasons, 0, plan_reason)

        reasons = stateless_reasons(pulses, L, plan.t_start_s, plan.t_end_s, now)
        work = pulses.copy()
        clamped = np.zeros(len(pulses), bool)
        if L.policy == "clamp":
            fix = np.isin(reasons, list(CLAMPABLE))
            if fix.any():
                work[fix] = self._clamp(pulses[fix])
                again = stateless_reasons(work[fix], L, plan.t_start_s, plan.t_end_s, now)
                reasons[np.flatnonzero(fix)] = again   # a clamp that still fails stays refused
                clamped[np.flatnonzero(fix)[again == ""]] = True
        ok = reasons == ""
        accepted = self._stateful(work, ok, reasons, now)
        clamped &= accepted
        refused_mask = ~accepted
        return self._finish(plan, now, work[accepted], pulses[refused_mask], reasons[refused_mask],
                            int(clamped.sum()), None)

    def _clamp(self, p: np.ndarray) -> np.ndarray:
        """Nearest safe symmetric, balanced pulse: widths and gap into range, charge under every limit."""
        L = self.limits
        pe = L.per_electrode
        e = p["electrode"]
        out = p.copy()
        w = np.clip(p["width_us"], pe["min_width_us"][e], pe["max_width_us"][e])
        w = np.maximum(w, 1e-3)
        gap = np.clip(p["gap_us"], 0.0, pe["max_gap_us"][e])
        a_max = np.fmin(pe["max_amplitude_ua"][e], L.max_phase_charge_nc[e] * 1e3 / w)
        a = np.fmin(np.fmax(p["amplitude_ua"], p["amplitude2_ua"]), a_max) * (1 - 1e-9)
        out["width_us"] = out["width2_us"] = w
        out["gap_us"] = gap
        out["amplitude_ua"] = out["amplitude2_ua"] = a
        return out

    def _stateful(self, p: np.ndarray, ok: np.ndarray, reasons: np.ndarray, now: float) -> np.ndarray:
        """Cross-pulse limits: all candidates at once when they all fit, else greedy in time order."""
        self._trim(now)
        accepted = np.zeros(len(p), bool)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return accepted
        c = p[idx]
        start = c["time_s"]
        end = pulse_end_s(c)
        e = c["electrode"].astype(np.int64)
        cur = np.fmax(c["amplitude_ua"], c["amplitude2_ua"])
        net = np.abs(c["amplitude_ua"] * c["width_us"] - c["amplitude2_ua"] * c["width2_us"]) * 1e-3
        hb = np.floor(start / _HOUR_BUCKET_S).astype(np.int64)
        nb = np.floor(start / self._net_bucket_s).astype(np.int64)
        if self._all_fit(start, end, e, cur, net):
            accepted[idx] = True
            self._add(start, end, e, cur, net, hb, nb)
            return accepted
        for k in range(idx.size):
            i = idx[k]
            why = self._one_fits(float(start[k]), float(end[k]), int(e[k]), float(cur[k]), float(net[k]))
            if why:
                reasons[i] = why
                continue
            accepted[i] = True
            self._add(start[k:k + 1], end[k:k + 1], e[k:k + 1], cur[k:k + 1], net[k:k + 1],
                      hb[k:k + 1], nb[k:k + 1])
        return accepted

    def _all_fit(self, start: np.ndarray, end: np.ndarray, e: np.ndarray, cur: np.ndarray, net: np.ndarray) -> bool:
        """Exact joint check of every candidate with the history (the common, all-safe case)."""
        L = self.limits
        pe = L.per_electrode
        hs, he, hel, hc = self._h_start, self._h_end, self._h_e, self._h_cur
        if np.any(self._hour_total[e] + np.bincount(e, minlength=self._n)[e] > pe["max_pulses_per_hour"][e]):
            return False
        if np.any(net > 0):
            tot = self._net_total + np.bincount(e, weights=net, minlength=self._n)
            if np.any(tot[e] > pe["max_net_charge_nc"][e]):
                return False
        ms = np.concatenate([hs, start])
        me = np.concatenate([he, end])
        mel = np.concatenate([hel, e])
        order = np.lexsort((ms, mel))
        ms, me, mel = ms[order], me[order], mel[order]
        same = mel[1:] == mel[:-1]
        if np.any(same & ((ms[1:] - ms[:-1] < 1.0 / pe["max_frequency_hz"][mel[1:]] - TIME_TOL_S) | (ms[1:] < me[:-1]))):
            return False
        # Peak summed current: +current at each start, -current at each end (ends first on ties).
        times = np.concatenate([hs, start, he, end])
        delta = np.concatenate([hc, cur, -hc, -cur])
        kind = np.concatenate([np.ones(hs.size + start.size), np.zeros(he.size + end.size)])
        order = np.lexsort((kind, times))
        return bool(np.max(np.cumsum(delta[order])) <= L.max_simultaneous_current_ua)

    def _one_fits(self, t0: float, t1: float, e: int, a: float, net: float) -> str:
        """Conservative check of one candidate against the history; the reason, or ''."""
        L = self.limits
        pe = L.per_electrode
        hs = self._h_start
        lo = int(np.searchsorted(hs, t0 - self._look_s, "left"))
        hi = int(np.searchsorted(hs, t1 + self._look_s, "right"))
        s, en, ee, aa = hs[lo:hi], self._h_end[lo:hi], self._h_e[lo:hi], self._h_cur[lo:hi]
        overlap = (s < t1) & (t0 < en)
        mine = ee == e
        if np.any(mine & ((np.abs(s - t0) < 1.0 / pe["max_frequency_hz"][e] - TIME_TOL_S) | overlap)):
            return "frequency"
        if a + float(aa[overlap].sum()) > L.max_simultaneous_current_ua:
            return "simultaneous_current"
        if self._hour_total[e] + 1 > pe["max_pulses_per_hour"][e]:
            return "hourly_count"
        if net > 0 and self._net_total[e] + net > pe["max_net_charge_nc"][e]:
            return "net_charge"
        return ""

    def _add(self, start: np.ndarray, end: np.ndarray, e: np.ndarray, cur: np.ndarray, net: np.ndarray,
             hb: np.ndarray, nb: np.ndarray) -> None:
        hs = np.concatenate([self._h_start, start])
        order = np.argsort(hs, kind="stable")
        self._h_start = hs[order]
        self._h_end = np.concatenate([self._h_end, end])[order]
        self._h_e = np.concatenate([self._h_e, e])[order]
        self._h_cur = np.concatenate([self._h_cur, cur])[order]
        np.add.at(self._hour_total, e, 1)
        for b in np.unique(hb):
            np.add.at(self._hour.setdefault(int(b), np.zeros(self._n, np.int64)), e[hb == b], 1)
        if np.any(net > 0):
            np.add.at(self._net_total, e, net)
            for b in np.unique(nb):
                np.add.at(self._net.setdefault(int(b), np.zeros(self._n)), e[nb == b], net[nb == b])

    def _trim(self, now: float) -> None:
        """Forget what can no longer conflict with a pulse at or after ``now``.

        Hour and net-charge totals keep every bucket that a window ending at or after ``now``
        can reach (and later ones), so they can only over-count: conservative.
        """
        cut = int(np.searchsorted(self._h_start, now - self._look_s, "left"))
        if cut:
            self._h_start, self._h_end = self._h_start[cut:], self._h_end[cut:]
            self._h_e, self._h_cur = self._h_e[cut:], self._h_cur[cut:]
        hb = int(np.floor(now / _HOUR_BUCKET_S))
        for b in [b for b in self._hour if b < hb - 61]:
            self._hour_total -= self._hour.pop(b)
        nb = int(np.floor(now / self._net_bucket_s))
        for b in [b for b in self._net if b < nb - _NET_BUCKETS - 1]:
            self._net_total -= self._net.pop(b)
        np.maximum(self._net_total, 0.0, out=self._net_total)

    def _finish(self, plan: StimPlan, now: float, approved: np.ndarray, refused: np.ndarray,
                reasons: np.ndarray, n_clamped: int, plan_reason: str | None) -> Decision:
        approved = np.ascontiguousarray(approved)
        approved.setflags(write=False)
        ap = ApprovedPlan(approved, plan.t_start_s, plan.t_end_s, plan.source, plan.seq, self._seq,
                          self.limits.sha256, b"")
        ap = dataclasses.replace(ap, signature=self._sign(ap.payload()))
        ref = np.empty(len(refused), REFUSED_DTYPE)
        for name in PULSE_FIELDS:
            ref[name] = refused[name]
        ref["reason"] = reasons
        d = Decision(self._seq, ap, ref, n_clamped, plan_reason)
        t = self.totals
        t["plans"] += 1
        t["pulses"] += len(plan.pulses)
        t["approved"] += len(approved)
        t["refused"] += len(ref)
        t["clamped"] += n_clamped
        self.audit.decision(d, plan, now, self.limits)
        return d
