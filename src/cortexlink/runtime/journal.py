"""A node's journal: what a node in a child process must not lose when that process dies.

The main process restarts a child process that died (under its nodes' restart policy), but what
its nodes held in memory died with it: the decoder's calibration bins, the block in progress, the
fitted models. A node that keeps such state appends it to its :class:`Journal` as it goes; after a
restart its ``setup`` reads the journal back and carries on from there, and an input whose port
says ``replay`` (:class:`~cortexlink.runtime.node.PortSpec`) delivers again the messages it
missed while its process was down (the node skips, with ``Subscription.resume_after``, those it
had applied).

On the Redis bus a journal is a stream of the run (``cl:<run>:journal:<node>``, deleted with the
run's keys); appends are sent without waiting for Redis (in order, on the bus's write link).
Nodes of the main process get no journal (``NodeContext.journal`` is None): a node restarted
there by its supervisor keeps its memory, and if the main process dies the run is over.
"""

from __future__ import annotations

import json
from typing import Any

from cortexlink.core.jsonutil import json_default

__all__ = ["Journal"]

_KIND = b"journal.kind"
_VALUES = b"journal.values"


class Journal:
    """Append-only records of one node on the run's Redis server.

    Each record has a ``kind``, JSON-able ``values`` and raw byte fields (arrays, saved models,
    encoded messages) under keys of the caller's choosing (bytes not starting with ``journal.``).
    """

    def __init__(self, bus: Any, node: str) -> None:
        self._bus = bus
        self.node = node
        self.key = f"{bus.prefix}journal:{node}"
        self.n_appended = 0

    def append(self, kind: str, fields: dict[bytes, Any] | None = None, **values: Any) -> None:
        """Add one record (sent without waiting; a broken bus drops it, as it drops everything)."""
        f: dict[bytes, Any] = dict(fields or {})
        f[_KIND] = kind
        if values:
            f[_VALUES] = json.dumps(values, default=json_default)
        self._bus.journal_append(self.key, f)
        self.n_appended += 1

    def read(self) -> list[tuple[str, dict[str, Any], dict[bytes, bytes]]]:
        """Every record so far, oldest first: ``(kind, values, fields)``."""
        out = []
        for f in self._bus.journal_read(self.key):
            kind = f.pop(_KIND, b"").decode()
            values = json.loads(f.pop(_VALUES)) if _VALUES in f else {}
            out.append((kind, values, f))
        return out
