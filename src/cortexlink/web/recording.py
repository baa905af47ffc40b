"""Recording for the operator UI: a thin adapter over :mod:`cortexlink.io.session_log`.

The controller only needs "start recording into this folder" (a :class:`~cortexlink.tasks.loop.LoopTap`
to append to the loop), "status" and "close"; everything else is the session log's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["Recording"]


class Recording:
    """One recording of a running closed loop into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        The session folder to create (it must not hold a session yet).
    loop : ClosedLoop
        Only its implant's channel map and sampling rate are read (immutable objects).
    config : dict
        The resolved session configuration (written to the manifest).
    participant_id : str
        Pseudonymous participant code.

    Attributes
    ----------
    tap : LoopTap
        Append it to ``loop.taps`` (in the loop's thread) to record; remove it to stop.
    """

    def __init__(self, out_dir: str | Path, loop: Any, config: dict, participant_id: str = "sim-0001") -> None:
        from cortexlink.io.session_log import RecorderTap, SessionRecorder

        imp = getattr(loop, "implant", None)
        self.path = Path(out_dir)
        self.recorder = SessionRecorder(
            self.path, channel_map=None if imp is None else imp.channel_map,
            fs_hz=None if imp is None else float(imp.fs_hz), config=config,
            seeds={"seed": config.get("seed")}, participant_id=participant_id)
        self.tap = RecorderTap(self.recorder)
        self.started_monotonic = time.monotonic()
        self.closed = False

    def status(self) -> dict:
        """JSON-able status: folder, seconds so far, bytes written, dropped items, stop reason."""
        st = self.recorder.stats()
        streams = st.get("streams", {})
        return {"active": not self.closed, "dir": str(self.path),
                "seconds": time.monotonic() - self.started_monotonic,
                "bytes": int(sum(s.get("bytes", 0) for s in streams.values())),
                "dropped": int(st.get("dropped_total", 0)), "queue_bytes": int(st.get("queue_bytes", 0)),
                "stopped_reason": st.get("stopped_reason")}

    def close(self) -> dict:
        """Drain and close the recorder (call after the tap was removed); returns a summary."""
        manifest = self.recorder.close()
        self.closed = True
        logger.info("recording closed: %s (%s)", self.path, manifest.get("state"))
        return {"dir": str(self.path), "state": manifest.get("state"),
                "streams": sorted(manifest.get("streams", {}))}
