"""The interlock's audit log: every decision, E-STOP and reset, as JSON lines in the recording.

Each record is one JSON object on its own line, flushed as it is written (so a crash loses at
most the line being written), with a running ``n`` and the wall-clock ``utc``. A decision record
names the plan (source, seq, window), the session time it was judged at, the counts approved /
clamped / refused, refusals by reason, the first refused pulses in full, the policy and the limits'
SHA-256. The log also keeps the last records in memory for the operator UI, and running totals.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import threading
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ValidationError
from cortexlink.core.jsonutil import jsonable

__all__ = ["AuditLog", "read_audit"]

_DETAIL = 20  # refused pulses written in full per decision


class AuditLog:
    """Append-only record of interlock decisions (file optional; memory ring always).

    Parameters
    ----------
    path : path, optional
        JSON-lines file to append to (created with its folder). Without it records stay in memory.
    keep : int
        How many recent records :attr:`recent` keeps.
    """

    def __init__(self, path: str | Path | None = None, *, keep: int = 200) -> None:
        self.path = Path(path) if path is not None else None
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=int(keep))
        self.n = 0
        self.reasons: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append one record (adds ``n`` and ``utc``); returns it."""
        with self._lock:
            rec = {"n": self.n, "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(), **record}
            self.n += 1
            self.recent.append(rec)
            if self._fh is not None:
                self._fh.write(json.dumps(jsonable(rec)) + "\n")
                self._fh.flush()
            return rec

    def decision(self, d: Any, plan: Any, now_s: float, limits: Any) -> dict[str, Any]:
        """Write the record of one interlock decision."""
        reasons = d.reasons
        self.reasons.update(reasons)
        detail = [{name: d.refused[name][i].item() for name in d.refused.dtype.names}
                  for i in range(min(len(d.refused), _DETAIL))]
        return self.write({
            "kind": "decision", "decision": d.seq, "source": plan.source, "plan_seq": plan.seq,
            "now_s": now_s, "t_start_s": plan.t_start_s, "t_end_s": plan.t_end_s,
            "pulses": len(plan.pulses), "approved": d.n_approved, "clamped": d.n_clamped,
            "refused": len(d.refused), "reasons": reasons, "plan_refused": d.plan_refused,
            "refused_pulses": detail, "policy": limits.policy, "limits_sha256": limits.sha256,
        })

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_audit(path: str | Path) -> list[dict[str, Any]]:
    """Read an audit log back.

    Only a torn last line (a crash while writing: the line has no final newline) is skipped. Any
    other line that is not one JSON object means the log was damaged or edited: :class:`~cortexlink.
    core.errors.ValidationError` naming the line number.
    """
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    # the writer ends every record with a newline: a last piece without one is a torn record
    torn = lines.pop()
    out = []
    for i, line in enumerate(lines):
        out.append(_record(path, i + 1, line))
    if torn:
        try:
            out.append(_record(path, len(lines) + 1, torn))
        except ValidationError:
            pass
    return out


def _record(path: str | Path, lineno: int, line: bytes) -> dict[str, Any]:
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        rec = None
    if not isinstance(rec, dict):
        raise ValidationError(f"{os.fspath(path)}: line {lineno} is not an audit record (the log was damaged "
                              "or edited; only a torn last line is tolerated)")
    return rec
