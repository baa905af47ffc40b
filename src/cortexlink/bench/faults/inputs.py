"""Fault cases: inputs (see :mod:`cortexlink.bench.faults`)."""

from __future__ import annotations

from pathlib import Path  # noqa: F401

from cortexlink.bench.faults.base import Outcome, case, clean_message, describe, run_cli  # noqa: F401
