"""One way to stop a long-running command on SIGINT, SIGTERM or SIGHUP.

``cortexlink run``, ``session run``, ``demo``, ``record``, ``serve`` and ``replay`` run inside
:func:`stop_on_signals` (the command line's ``main`` wraps them), and so does a graph's worker
process. Whichever of the three signals comes first:

* while a :class:`~cortexlink.runtime.runner.GraphRunner` runs in the main thread, it is asked to
  stop (:meth:`~cortexlink.runtime.runner.GraphRunner.request_stop`): its loop ends after the
  current pass and the run finishes as usual — nodes torn down, recorders closed, child processes
  stopped, the private redis-server stopped and its temporary folder removed, the summary
  returned (``cortexlink run`` writes ``summary.json``);
* otherwise (setting up, writing reports, a web server's wait) it raises
  :class:`KeyboardInterrupt` in the main thread, so the command unwinds through its ``finally``
  blocks exactly as after Ctrl+C.

Further signals while that stop runs are counted and ignored, so a burst (a supervisor sending
TERM again, a user pressing Ctrl+C repeatedly) cannot interrupt the clean-up half way; only a
signal :data:`ESCALATE_AFTER_S` or more after the first one, when the stop seems stuck, raises
:class:`KeyboardInterrupt` once more. The command then exits with ``128 + signal number``
(130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP); ``serve``, a server whose normal end is a
signal, exits 0 after a clean stop.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Callable

logger = logging.getLogger(__name__)

__all__ = ["StopSignals", "stop_on_signals", "stopper", "STOP_SIGNALS", "ESCALATE_AFTER_S"]

#: The signals that stop a command (SIGHUP where the platform has it).
STOP_SIGNALS: tuple[int, ...] = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
#: A signal this long after the first one raises KeyboardInterrupt again (a stuck stop).
ESCALATE_AFTER_S = 10.0

_active: "StopSignals | None" = None


class StopSignals:
    """The state of :func:`stop_on_signals`: which signal came first (``signum``, ``name``) and how
    many came in all (``n_received``)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.n_received = 0
        self._t_first = 0.0
        self._escalated = False
        self._stoppers: list[Callable[[str], None]] = []
        self._old: dict[int, object] = {}

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int | None:
        """``128 + signum`` once a signal came, else None."""
        return None if self.signum is None else 128 + int(self.signum)

    def _handle(self, signum: int, frame: object) -> None:
        self.n_received += 1
        if self.signum is None:
            self.signum = signum
            self._t_first = time.monotonic()
            what = signal.Signals(signum).name
            if self._stoppers:
                logger.warning("%s received: stopping the graph (the summary is written and everything is "
                               "closed first; further signals are ignored)", what)
                for stop in list(self._stoppers):
                    stop(f"{what} received")
                return
            logger.warning("%s received: stopping", what)
            raise KeyboardInterrupt(what)
        if not self._escalated and time.monotonic() - self._t_first >= ESCALATE_AFTER_S:
            self._escalated = True
            logger.warning("%s received again while stopping: interrupting the stop",
                           signal.Signals(signum).name)
            raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopSignals]:
    """Handle ``signals`` as the module docstring says while the block runs (in the main thread;
    elsewhere, or nested, it changes nothing). Yields the :class:`StopSignals` state."""
    global _active
    state = StopSignals()
    if threading.current_thread() is not threading.main_thread() or _active is not None:
        yield _active or state
        return
    for s in signals:
        state._old[s] = signal.signal(s, state._handle)
    _active = state
    try:
        yield state
    finally:
        _active = None
        for s, old in state._old.items():
            signal.signal(s, old)          # type: ignore[arg-type]


@contextlib.contextmanager
def stopper(stop: Callable[[str], None]) -> Iterator[None]:
    """While the block runs (in the main thread, inside :func:`stop_on_signals`), a stop signal
    calls ``stop(reason)`` instead of raising; a signal that came before the block calls it at once."""
    state = _active
    if state is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    if state.signum is not None:
        stop(f"{state.name} received")
    state._stoppers.append(stop)
    try:
        yield
    finally:
        state._stoppers.remove(stop)


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``sig`` when the thread that
    started it ends, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``; None elsewhere). Used for the
    private redis-server, which runs in a process group of its own (a Ctrl+C in the terminal must
    not stop it before the run's own clean-up) and so would otherwise outlive a killed owner."""
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    signum = int(sig)

    def preexec() -> None:
        prctl(1, signum, 0, 0, 0)          # PR_SET_PDEATHSIG

    return preexec
