"""The session folder's lock: a live writer holds it, ``recover`` takes it (and refuses while a
live process holds it).

The lock is ``fcntl.flock`` on the file ``.lock`` in the session folder. The kernel releases it
when its holder exits, however it exits (``SIGKILL`` included), so a folder whose writer crashed
is never left locked; the file itself may stay behind and means nothing on its own. It holds
one JSON line naming the holder (pid, host, purpose, since) for the error message. Where
``fcntl`` is missing (Windows) no lock is taken.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

from cortexlink.io.session_log.format import SessionBusy

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
logger = logging.getLogger("cortexlink.io.session_log")


def _describe(info: dict[str, Any]) -> str:
    who = f"process {info.get('pid', '?')}"
    if info.get("host"):
        who += f" on {info['host']}"
    if info.get("since"):
        who += f" since {info['since']}"
    return who


def _read_info(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        info = json.loads(data.decode("utf-8") or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


class SessionLock:
    """An exclusive lock on a session folder, held from :meth:`acquire` to :meth:`release`.

    Parameters
    ----------
    folder : path
        The session folder (must exist).
    purpose : str
        What the holder does ("recording", "recover"), named in other processes' errors.
    """

    def __init__(self, folder: str | os.PathLike[str], purpose: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "SessionLock":
        """Take the lock; raise :class:`SessionBusy` naming the holder when another holds it."""
        if fcntl is None or self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for attempt in range(5):     # a moment's grace: lock_holder() probes hold it for microseconds
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == 4:
                        raise
                    time.sleep(0.05)
        except BlockingIOError:
            info = _read_info(fd)
            os.close(fd)
            what = info.get("purpose")
            verb = {"recording": "being recorded", "recover": "being recovered"}.get(str(what), "in use")
            hint = ("stop that recording first; `cortexlink recover` is for a folder whose writer has stopped or "
                    "crashed" if what == "recording" else "wait for it to finish")
            raise SessionBusy(f"{self.folder}: {verb} by live {_describe(info)} (it holds {self.path}); "
                              f"{hint}") from None
        except OSError as exc:       # a file system without flock (some network mounts): go on unlocked
            os.close(fd)
            logger.warning(
                "%s: cannot lock (%s); recover will not know whether a writer is live", self.path, exc)
            return self
        except BaseException:
            os.close(fd)
            raise
        body = json.dumps({"pid": os.getpid(), "host": platform.node(), "purpose": self.purpose,
                           "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode("utf-8")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, body + b"\n", 0)
        except OSError:      # e.g. a full disk: the lock holds all the same, only its label is missing
            pass
        self._fd = fd
        return self

    def release(self, *, remove: bool = True) -> None:
        """Release the lock (and, with ``remove``, delete the lock file first)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if remove:
            try:
                self.path.unlink()
            except OSError:
                pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "SessionLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds the folder's lock (``{"pid", "host", "purpose", "since"}``), or None when no live
    process does. Never creates the lock file."""
    path = Path(folder) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_info(fd) or {"purpose": "in use"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
