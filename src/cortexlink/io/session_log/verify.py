"""Verify a session folder: the manifest's fields, every file's SHA-256 against the manifest, every
stream header's checksum (format 2) and every record's CRC, the decoders' checksums recorded
when they went live, and whether a live process is still recording it.

:func:`verify_session` reports; :func:`require_verified` raises — what a command that reads a
session for export calls first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cortexlink.io._common import sha256_file
from cortexlink.io.session_log.format import CorruptSessionError, SessionBusy, inspect_header, scan_stream
from cortexlink.io.session_log.lock import lock_holder
from cortexlink.io.session_log.manifest import read_manifest

__all__ = ["verify_session", "require_verified", "verify"]


def _check_file(p: Path, meta: dict[str, Any], what: str) -> str | None:
    if not p.is_file():
        return f"{p}: missing"
    size = p.stat().st_size
    if size != meta.get("bytes", size):
        return f"{p}: size {size} bytes, {what} says {meta['bytes']}"
    if sha256_file(p) != meta["sha256"]:
        return f"{p}: SHA-256 does not match {what}"
    return None


def verify_session(path: str | os.PathLike[str], *, check_lock: bool = True) -> dict[str, Any]:
    """Re-check a session folder without changing it.

    Checks the manifest (fields of the right types), each file's size and SHA-256 against the
    manifest's ``files``, each decoder's SHA-256 recorded when it went live (``decoders``), each
    stream's header (its checksum, format 2, and the manifest's copy of it) and every record's
    CRC; and (``check_lock``) that no live process holds the folder's lock.

    Returns
    -------
    dict
        ``{"ok": bool, "problems": [str, ...], "files": n, "state": str | None,
        "session_id": str | None, "live": holder or None}``; each problem names its file.
    """
    path = Path(path)
    problems: list[str] = []
    try:
        manifest = read_manifest(path)
    except CorruptSessionError as exc:
        return {"ok": False, "problems": [str(exc)], "files": 0, "state": None, "session_id": None, "live": None}
    live = lock_holder(path) if check_lock else None
    if live is not None:
        problems.append(f"{path}: being recorded by live process {live.get('pid', '?')} ({live.get('purpose')}); "
                        "its checksums are written when it closes")
    files = manifest.get("files")
    if files is None:
        if live is None:
            problems.append(f"{path / 'manifest.json'}: no checksums (state {manifest.get('state')!r}); the session "
                            f"was not closed - run `cortexlink recover {path}`")
        files = {}
    mstreams = manifest.get("streams") or {}
    for rel, meta in files.items():
        pr = _check_file(path / rel, meta, "the manifest")
        why = (mstreams.get(Path(rel).stem) or {}).get("file_missing") if Path(rel).parent.name == "streams" else None
        if pr and isinstance(why, str) and pr.endswith(": missing"):
            pr += f" ({why})"
        if pr:
            problems.append(pr)
    for name, st in mstreams.items():
        rel = f"streams/{name}.clog"
        if st.get("file_missing") and rel not in files and not (path / rel).exists():
            why = st["file_missing"] if isinstance(st["file_missing"], str) else "its file is gone"
            problems.append(f"{path / rel}: missing ({why})")
    for rel, meta in (manifest.get("decoders") or {}).items():
        f = meta.get("file", rel)
        if (files.get(f) or {}).get("sha256") == meta["sha256"]:
            continue                      # the same checksum was checked above
        pr = _check_file(path / f, meta, "the checksum recorded when the decoder went live")
        if pr:
            problems.append(pr)
    for p in sorted((path / "streams").glob("*.clog")):
        rel = str(p.relative_to(path))
        if files and rel not in files:
            problems.append(f"{p}: not listed in the manifest")
        h = inspect_header(p)
        if h.problem is not None:
            problems.append(f"{p}: {h.problem}")
            continue
        copy = (mstreams.get(p.stem) or {}).get("header")
        if copy is not None and h.version and h.version >= 2 and copy != h.info:
            problems.append(f"{p}: the stream header differs from the manifest's copy of it")
        try:
            for kind, item in scan_stream(p, salvage=True, decode=False):     # CRCs and the frames' chain
                if kind == "damage":
                    problems.append(f"{p}: damaged at byte {item['offset']} ({item['reason']})")
        except CorruptSessionError as exc:
            problems.append(str(exc))
    return {"ok": not problems, "problems": problems, "files": len(files), "state": manifest.get("state"),
            "session_id": manifest.get("session_id"), "live": live}


#: the former name of :func:`verify_session`
verify = verify_session


def require_verified(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Verify a session folder (:func:`verify_session`) and return its report, or raise: a
    :class:`SessionBusy` while it is being recorded, else a :class:`CorruptSessionError` naming
    the first problem and what to do."""
    rep = verify_session(path)
    if rep["ok"]:
        return rep
    if rep["live"] is not None:
        raise SessionBusy(rep["problems"][0] + "; wait until it is closed")
    more = f" (and {len(rep['problems']) - 1} more)" if len(rep["problems"]) > 1 else ""
    raise CorruptSessionError(f"{path}: the session does not verify: {rep['problems'][0]}{more}; run `cortexlink "
                              f"sessions verify {path}` for the list and `cortexlink recover {path}` to salvage "
                              "every intact record")
