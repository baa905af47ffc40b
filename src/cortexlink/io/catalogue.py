"""An embedded SQLite catalogue of participants, sessions, files and checksums.

Participants are known only by pseudonymous codes (the same rule as
:func:`cortexlink.io._common.check_participant_id`); the catalogue stores no names, dates
of birth or other identifying data. Sessions are registered from their manifest (done
automatically when a recorder closes or a folder is recovered and a catalogue is configured),
with every file's size and SHA-256; :meth:`Catalogue.verify` re-checks them on disk.

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
    last_verify_ok INTEGER
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


class Catalogue:
    """The session catalogue in one SQLite file (created on first use)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else default_catalogue_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=10.0)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.executescript(SCHEMA)
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
        """Add or update a session from its folder's manifest; returns its session id."""
        d = Path(session_dir).resolve()
        mpath = d / "manifest.json"
        try:
            m = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValidationError(f"{mpath}: cannot register, manifest unreadable ({exc})") from None
        if m.get("format") != "cortexlink-session":
            raise ValidationError(f"{mpath}: not a cortexlink session manifest")
        pid = check_participant_id(m.get("participant_id", ""))
        sid = m["session_id"]
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
                "n_channels, fs_hz, seconds, bytes, cortexlink_version, git_hash, registered_utc) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (sid, pid, str(d), m.get("state", "unknown"), m.get("started_utc"), m.get("closed_utc"),
                 len(cm.get("channel_ids", [])) or None, fs, seconds, sum(f["bytes"] for f in files.values()),
                 prov.get("cortexlink_version"), prov.get("git_hash"), _now()))
            self._db.execute("DELETE FROM files WHERE session_id = ?", (sid,))
            self._db.executemany("INSERT INTO files VALUES (?,?,?,?)",
                                 [(sid, rel, f["bytes"], f["sha256"]) for rel, f in files.items()])
        return sid

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
            ok = not problems
            with self._db:
                self._db.execute("UPDATE sessions SET last_verified_utc = ?, last_verify_ok = ? WHERE session_id = ?",
                                 (_now(), int(ok), s["session_id"]))
            results.append({"session_id": s["session_id"], "path": s["path"], "ok": ok, "problems": problems})
        return results
