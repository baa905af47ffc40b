"""What the session log and the catalogue share: the pseudonymous participant-id rule and file
checksums. Kept apart from both: the session log imports the catalogue (inside a function, to
register a session) and the catalogue only the session log's leaf modules (``manifest``,
``verify``), which never import the catalogue."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cortexlink.core.errors import ValidationError

_PSEUDONYM_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def check_participant_id(pid: str) -> str:
    """A pseudonymous participant id: 1–32 letters, digits, '-' or '_' (no names, no spaces)."""
    if not isinstance(pid, str) or not 1 <= len(pid) <= 32 or not set(pid) <= _PSEUDONYM_CHARS:
        raise ValidationError("participant_id must be a pseudonymous code of 1-32 letters, digits, '-' or '_' "
                              f"(never a name); got {pid!r}")
    return pid


def sha256_file(path: Path, bufsize: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
