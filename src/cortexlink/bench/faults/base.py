"""The fault campaign's building blocks: a registry of cases, their outcome, and helpers to run
the command line as a user would.

A case is a function ``fn(workdir: Path) -> Outcome`` registered with :func:`case`; it sets up
what it breaks in ``workdir`` (a fresh folder of its own), breaks it, and reports what a user
would see. :mod:`cortexlink.bench.faults.runner` runs each case in a child process of its own,
bounded in time, so that a case which hangs or crashes is itself a finding, not the end of the
campaign.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

__all__ = ["Outcome", "Case", "case", "CASES", "run_cli", "clean_message", "describe"]


@dataclasses.dataclass
class Outcome:
    """What one case found.

    Attributes
    ----------
    survived : bool
        The software did the right thing: refused the bad input with a clear error, or went on /
        stopped cleanly after the fault, as the case expects.
    data_lost : bool or None
        Recorded data that was intact before the fault is gone or silently wrong afterwards
        (None: the case records nothing).
    cursor_halted_within_bins : int or None
        For faults in a live loop: bins from the fault to the cursor being halted (None: no loop,
        or the cursor was never halted).
    exit_code : int or None
        Exit status of the command the case ran (None: it ran no command).
    message_ok : bool
        What the user was told names the problem, without a Python traceback.
    detail : str
        One line on what happened (the message, the counts).
    """

    survived: bool
    data_lost: bool | None = None
    cursor_halted_within_bins: int | None = None
    exit_code: int | None = None
    message_ok: bool = True
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    area: str
    doc: str
    fn: Callable[[Path], Outcome]
    timeout_s: float
    needs: tuple[str, ...]


#: name -> Case, in registration order.
CASES: dict[str, Case] = {}


def case(area: str, *, name: str | None = None, timeout_s: float = 60.0,
         needs: tuple[str, ...] = ()) -> Callable[[Callable[[Path], Outcome]], Callable[[Path], Outcome]]:
    """Register a fault case. ``area``: storage, runtime, inputs, ui, ...; ``name`` defaults to the
    function's name; ``needs``: system programs it needs (``redis-server``, ``chromium``) — the
    campaign reports the case as skipped where one is missing; the first line of the docstring is
    the case's description."""

    def deco(fn: Callable[[Path], Outcome]) -> Callable[[Path], Outcome]:
        n = name or fn.__name__
        if n in CASES:
            raise ValueError(f"fault case {n!r} registered twice")
        CASES[n] = Case(n, area, (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else n, fn,
                        float(timeout_s), tuple(needs))
        return fn

    return deco


def run_cli(args: list[str], *, cwd: Path | None = None, timeout_s: float = 60.0, env: dict | None = None,
            input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run ``cortexlink ARGS`` in a child process (this interpreter) and return what it did; a run
    past ``timeout_s`` is killed and returned with ``returncode`` None and ``stderr`` saying so."""
    full = [sys.executable, "-m", "cortexlink.cli.main", *map(str, args)]
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    try:
        return subprocess.run(full, cwd=cwd, capture_output=True, timeout=timeout_s, env=e, input=input)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(full, None, exc.stdout or b"",  # type: ignore[arg-type]
                                           (exc.stderr or b"") + f"\n[timed out after {timeout_s:g} s]".encode())


def clean_message(proc: subprocess.CompletedProcess, *needles: str) -> bool:
    """The command's output has no Python traceback and names each of ``needles`` (case-insensitive)."""
    text = (proc.stdout or b"").decode("utf-8", "replace") + (proc.stderr or b"").decode("utf-8", "replace")
    if "Traceback (most recent call last)" in text:
        return False
    low = text.lower()
    return all(n.lower() in low for n in needles)


def describe(proc: subprocess.CompletedProcess, limit: int = 200) -> str:
    """The last line of a command's error output (for ``Outcome.detail``)."""
    text = (proc.stderr or b"").decode("utf-8", "replace").strip() or (proc.stdout or b"").decode("utf-8", "replace").strip()
    last = text.splitlines()[-1] if text else ""
    return f"exit {proc.returncode}: {last[:limit]}"


def as_dict(c: Case, o: Any, seconds: float) -> dict:
    return {"case": c.name, "area": c.area, "description": c.doc, **dataclasses.asdict(o), "seconds": round(seconds, 2)}
