"""The supervisor: restart a failed node per policy, stop one that keeps failing, carry on.

When a node's :meth:`~cortexlink.runtime.node.Node.step` (or setup) raises, its process's
:class:`Supervisor` marks it ``failed``, reports a ``node_failed`` fault, tears it down, and
either schedules a restart (``setup`` again after ``backoff_ms``; ``node_restarted`` event) or,
when it has failed more than ``max_restarts`` times within ``window_s``, stops it for the rest
of the run (state ``stopped``, ``node_stopped`` fault). While a node is down the other nodes
keep running: the recorder keeps recording and the watchdog keeps the cursor halted. A *critical*
node given up on ends the run (``on_give_up``: the runner halts the cursor, then stops, and the
run's result names the node and its error); a non-critical one is left stopped and the run goes on.

A node in its own process is supervised inside that process; if the process itself dies, the
parent restarts the process under the same policy (``process_exited`` fault).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import traceback
from typing import Any, Callable

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_keys
from cortexlink.runtime.node import NodeState

logger = logging.getLogger(__name__)

__all__ = ["RestartPolicy", "Supervisor"]


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """How often a failing node is restarted (the graph's ``restart:``, per node or default).

    Parameters
    ----------
    max_restarts : int
        Restarts allowed within ``window_s``; one more failure stops the node (0: never restart).
    window_s : float
        Sliding window over which failures are counted.
    backoff_ms : float
        Wait between a failure and the restart.
    """

    max_restarts: int = 3
    window_s: float = 60.0
    backoff_ms: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, path: str = "restart") -> "RestartPolicy":
        d = dict(d or {})
        check_keys(path, d, (f.name for f in dataclasses.fields(cls)))
        mr = d.get("max_restarts", cls.max_restarts)
        if isinstance(mr, bool) or not isinstance(mr, int) or mr < 0:
            raise ConfigError(f"{path}.max_restarts must be an integer >= 0; got {mr!r}")
        for k in ("window_s", "backoff_ms"):
            v = d.get(k, getattr(cls, k))
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != v:
                raise ConfigError(f"{path}.{k} must be a number >= 0; got {v!r}")
        return cls(int(mr), float(d.get("window_s", cls.window_s)), float(d.get("backoff_ms", cls.backoff_ms)))


class Supervisor:
    """Failure handling of the nodes of one process.

    Parameters
    ----------
    emit : callable
        ``emit(kind, severity=..., node=..., message=..., sample=..., **fields)`` (fault events).
    now_ns : callable
        The scheduler's clock.
    on_give_up : callable, optional
        ``on_give_up(node)`` once a node is stopped for good.
    """

    def __init__(self, emit: Callable[..., None], now_ns: Callable[[], int],
                 on_give_up: Callable[[Any], None] | None = None) -> None:
        self._emit = emit
        self._now = now_ns
        self._on_give_up = on_give_up
        self._failures: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._pending: dict[str, int] = {}     # node -> time its restart is due

    def failed(self, node: Any, policy: RestartPolicy, exc: BaseException, sample: int = -1) -> None:
        """Handle an exception raised by ``node``: report, tear down, schedule a restart or stop."""
        now = self._now()
        node.state = NodeState.FAILED
        node.n_failures += 1
        node.error = f"{type(exc).__name__}: {exc}"
        # the innermost frames (where it raised), not the outermost: the runner's own frames come first
        tb = "".join(traceback.format_exception(exc, limit=-6))
        logger.error("node %s failed: %s", node.name, node.error)
        logger.debug("node %s failed:\n%s", node.name, tb)     # -vv; also in the fault event (summary.json)
        self._emit("node_failed", node=node.name, severity="halt" if node.critical else "warning",
                   message=f"node {node.name} failed: {node.error}", sample=sample, error=node.error,
                   n_failures=node.n_failures, traceback=tb)
        try:
            node.teardown()
        except Exception as texc:  # teardown of a broken node may fail too; that is logged, not fatal
            logger.warning("teardown of failed node %s raised %s: %s", node.name, type(texc).__name__, texc)
        hist = self._failures[node.name]
        hist.append(now)
        window = int(policy.window_s * 1e9)
        while hist and now - hist[0] > window:
            hist.popleft()
        if len(hist) > policy.max_restarts:
            node.state = NodeState.STOPPED
            node.gave_up = True
            self._pending.pop(node.name, None)
            self._emit("node_stopped", node=node.name, severity="halt" if node.critical else "warning",
                       message=(f"node {node.name} stopped: {len(hist)} failures within {policy.window_s:g} s "
                                f"(max_restarts {policy.max_restarts}); last error: {node.error}"), sample=sample,
                       n_failures=node.n_failures, error=node.error)
            if self._on_give_up is not None:
                self._on_give_up(node)
        else:
            self._pending[node.name] = now + int(policy.backoff_ms * 1e6)

    def due(self) -> list[str]:
        """Names of failed nodes whose restart is due now."""
        now = self._now()
        return [n for n, t in self._pending.items() if now >= t]

    def restart(self, node: Any, sample: int = -1) -> bool:
        """Run ``node.setup()`` again; True if it is running again (a failing setup counts as a
        failure and is handled by :meth:`failed` by the caller)."""
        self._pending.pop(node.name, None)
        node.state = NodeState.STARTING
        node.setup()
        node.state = NodeState.RUNNING
        node.n_restarts += 1
        node.error = None
        self._emit("node_restarted", node=node.name, severity="info",
                   message=f"node {node.name} restarted ({node.n_restarts} restart(s))", sample=sample,
                   n_restarts=node.n_restarts)
        return True
