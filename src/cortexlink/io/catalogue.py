"""An embedded SQLite catalogue of participants, sessions, files and checksums.

Participants are known only by pseudonymous codes (the same rule as
:func:`cortexlink.io._common.check_participant_id`); the catalogue stores no names, dates
of birth or other identifying data. Sessions are registered from their manifest (done
automatically when a recorder closes or a folder is recovered and a catalogue is configured),
with every file's size and SHA-256; :meth:`Catalogue.verify` re-checks them on disk (and the
folder itself, with :func:`cortexlink.io.session_log.verify_session`).

A session is known by its id. Registering a folder whose session is already catalogued at another
folder that still holds it (a copy) is refused — ``registration(..., as_copy=True)`` (``sessions
register --copy``) catalogues it as a distinct copy ``<id>~copy<N>`` instead; a session whose
catalogued folder no longer holds it is moved to the new folder, and the registration says so.

The default database is ``$CORTEXLINK_CATALOGUE`` or ``~/.cortexlink/catalogue.sqlite``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ValidationError
from cortexlink.io._common import check_participant_id, sha256_file

__all__ = ["Catalogue", "default_catalogue_path"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS participants (
    participant_id TEXT PRIMARY KEY,
    created_utc    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id     TEXT PRIMARY KEY,
    participant_id TEXT NOT NULL REFERENCES participants(participant_id),
    path           TEXT NOT NULL,
    state          TEXT NOT NULL,
    started_utc    TEXT,
    closed_utc     TEXT,
    n_channels     INTEGER,
    fs_hz          REAL,
    seconds        REAL,
    bytes          INTEGER,
    cortexlink_version TEXT,
    git_hash       TEXT,
    registered_utc TEXT NOT NULL,
    last_verified_utc TEXT,
    last_verify_ok INTEGER,
    copy_of        TEXT
);
CREATE TABLE IF NOT EXISTS files (
    session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
    relpath    TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    PRIMARY KEY (session_id, relpath)
);
"""


def default_catalogue_path() -> Path:
    env = os.environ.get("CORTEXLINK_CATALOGUE")
    return Path(env) if env else Path.home() / ".cortexlink" / "catalogue.sqlite"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _folder_problems(base: Path, already: list[str]) -> list[str]:
    """What :func:`verify_session` finds in the folder beyond the files the catalogue check named."""
    from cortexlink.io.session_log.verify import verify_session

    named = {p.split(": ", 1)[0] for p in already}
    return [p for p in verify_session(base)["problems"]
            if not (p.split(": ", 1)[0] in named and ("SHA-256" in p or "size" in p or p.endswith("missing")))]


def _holds(folder: Path, session_id: str) -> bool:
    """Whether ``folder`` still holds session ``session_id`` (its manifest names it)."""
    try:
        m = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and m.get("session_id") == session_id


class Catalogue:
    """The session catalogue in one SQLite file (created on first use)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else default_catalogue_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=10.0)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.executescript(SCHEMA)
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(sessions)")}
            if "copy_of" not in cols:          # a catalogue made before copies were told apart
                self._db.execute("ALTER TABLE sessions ADD COLUMN copy_of TEXT")
        except sqlite3.DatabaseError as exc:
            raise ValidationError(f"{self.path}: not a cortexlink catalogue (SQLite says: {exc})") from None
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Catalogue":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def register(self, session_dir: str | os.PathLike) -> str:
        """Add or update a session from its folder's manifest; returns its session id (see
        :meth:`registration`)."""
        return self.registration(session_dir)["session_id"]

    def registration(self, session_dir: str | os.PathLike, *, as_copy: bool = False) -> dict:
        """Add or update a session from its folder's manifest.

        Returns ``{"session_id", "action", "path", "previous_path", "message"}``; ``action`` is
        ``"new"``, ``"updated"`` (the same folder again), ``"moved"`` (the catalogued folder no
        longer holds the session: the entry now points here) or ``"copy"`` (with ``as_copy``: a
        distinct entry ``<id>~copy<N>``). A copy of a catalogued session registered without
        ``as_copy`` is a :class:`ValidationError`: the original's entry is never repointed silently.
        """
        from cortexlink.io.session_log.manifest import read_manifest

        d = Path(session_dir).resolve()
        try:
            m = read_manifest(d)
        except ValidationError as exc:
            raise ValidationError(f"cannot register {d}: manifest unreadable - {exc}") from None
        pid = check_participant_id(m.get("participant_id", ""))
        sid = m["session_id"]
        prev = self._db.execute("SELECT path, copy_of FROM sessions WHERE session_id = ?", (sid,)).fetchone()
        action, previous, copy_of = ("new", None, None) if prev is None else ("updated", prev["path"], None)
        mine = self._db.execute("SELECT session_id FROM sessions WHERE path = ? AND copy_of = ?",
                                (str(d), sid)).fetchone()
        if mine is not None:                     # this folder is already catalogued as a copy
            sid, action, copy_of = mine["session_id"], "copy", m["session_id"]
        elif prev is not None and prev["path"] != str(d):
            if _holds(Path(prev["path"]), sid):
                if not as_copy:
                    raise ValidationError(
                        f"{d} holds session {sid}, which the catalogue {self.path} already has at {prev['path']} "
                        "(that folder still holds it), so one is a copy of the other; nothing was changed. Register "
                        "it with `cortexlink sessions register --copy` to catalogue it as a distinct copy")
                n = 1
                while self._db.execute("SELECT 1 FROM sessions WHERE session_id = ?", (f"{sid}~copy{n}",)).fetchone():
                    n += 1
                sid, action, copy_of = f"{sid}~copy{n}", "copy", m["session_id"]
            else:
                action = "moved"
        self._store(sid, pid, d, m, copy_of)
        msg = {"new": f"registered {sid} ({d})", "updated": f"updated {sid} ({d})",
               "moved": f"moved {sid}: its folder {previous} no longer holds it; the entry now points to {d}",
               "copy": f"registered {d} as {sid}, a distinct copy of session {copy_of}"}[action]
        return {"session_id": sid, "action": action, "path": str(d), "previous_path": previous, "message": msg}

    def _store(self, sid: str, pid: str, d: Path, m: dict, copy_of: str | None) -> None:
        files = m.get("files") or {}
        raw = (m.get("streams") or {}).get("raw") or {}
        fs = m.get("fs_hz")
        seconds = raw.get("rows", 0) / fs if fs and raw.get("rows") else None
        cm = m.get("channel_map") or {}
        prov = m.get("provenance") or {}
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO participants VALUES (?, ?)", (pid, _now()))
            self._db.execute(
                "INSERT OR REPLACE INTO sessions (session_id, participant_id, path, state, started_utc, closed_utc, "
                "n_channels, fs_hz, seconds, bytes, cortexlink_version, git_hash, registered_utc, copy_of) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (sid, pid, str(d), m.get("state", "unknown"), m.get("started_utc"), m.get("closed_utc"),
                 len(cm.get("channel_ids", [])) or None, fs, seconds, sum(f["bytes"] for f in files.values()),
                 prov.get("cortexlink_version"), prov.get("git_hash"), _now(), copy_of))
            self._db.execute("DELETE FROM files WHERE session_id = ?", (sid,))
            self._db.executemany("INSERT INTO files VALUES (?,?,?,?)",
                                 [(sid, rel, f["bytes"], f["sha256"]) for rel, f in files.items()])

    def sessions(self, participant_id: str | None = None) -> list[dict]:
        q = "SELECT * FROM sessions"
        args: tuple = ()
        if participant_id is not None:
            q += " WHERE participant_id = ?"
            args = (participant_id,)
        return [dict(r) for r in self._db.execute(q + " ORDER BY started_utc, session_id", args)]

    def participants(self) -> list[dict]:
        return [dict(r) for r in self._db.execute(
            "SELECT p.participant_id, p.created_utc, COUNT(s.session_id) AS n_sessions FROM participants p "
            "LEFT JOIN sessions s USING (participant_id) GROUP BY p.participant_id ORDER BY p.participant_id")]

    def _find(self, key: str) -> dict:
        rows = [dict(r) for r in self._db.execute(
            "SELECT * FROM sessions WHERE session_id = ? OR path = ? OR session_id LIKE ?",
            (key, str(Path(key).resolve()) if key else key, f"{key}%"))]
        if not rows:
            raise ValidationError(f"no session {key!r} in the catalogue {self.path}")
        if len(rows) > 1:
            exact = [r for r in rows if r["session_id"] == key]
            if len(exact) == 1:
                return exact[0]
            raise ValidationError(f"{key!r} matches {len(rows)} sessions: {[r['session_id'] for r in rows]}")
        return rows[0]

    def show(self, key: str) -> dict:
        """A session (by id, id prefix or folder) with its files."""
        s = self._find(key)
        s["files"] = [dict(r) for r in self._db.execute(
            "SELECT relpath, bytes, sha256 FROM files WHERE session_id = ? ORDER BY relpath", (s["session_id"],))]
        return s

    def verify(self, key: str | None = None, progress: bool = False) -> list[dict]:
        """Re-check every catalogued file's SHA-256 on disk (one session or all); returns one
        result per session ``{"session_id", "ok", "problems"}`` and stores the outcome."""
        from tqdm.auto import tqdm

        targets = [self._find(key)] if key is not None else self.sessions()
        results = []
        for s in tqdm(targets, desc="verify", unit="session", disable=not progress):
            problems = []
            base = Path(s["path"])
            for f in self._db.execute("SELECT relpath, bytes, sha256 FROM files WHERE session_id = ?",
                                      (s["session_id"],)).fetchall():
                p = base / f["relpath"]
                if not p.is_file():
                    problems.append(f"{p}: missing")
                elif p.stat().st_size != f["bytes"]:
                    problems.append(f"{p}: size {p.stat().st_size} bytes, catalogue says {f['bytes']}")
                elif sha256_file(p) != f["sha256"]:
                    problems.append(f"{p}: SHA-256 does not match the catalogue")
            if not base.is_dir():
                problems.insert(0, f"{base}: session folder missing")
            else:
                problems += _folder_problems(base, problems)
            ok = not problems
            with self._db:
                self._db.execute("UPDATE sessions SET last_verified_utc = ?, last_verify_ok = ? WHERE session_id = ?",
                                 (_now(), int(ok), s["session_id"]))
            results.append({"session_id": s["session_id"], "path": s["path"], "ok": ok, "problems": problems})
        return results
