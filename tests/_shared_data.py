"""Where the real recordings are (``../shared/data`` beside the repository, or
``$CORTEXLINK_SHARED_DATA``), and what a test does when they are absent: it is skipped with the
reason on a developer's machine (a fresh clone has no ../shared), and fails under ``CI=true``, where
a missing data set must not pass as a skip.

Test modules import this as ``_shared_data`` (tests/ is on ``sys.path`` through tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CORTEXLINK_SHARED_DATA", REPO.parent / "shared" / "data"))


def missing(reason: str) -> NoReturn:
    """Skip the calling test with ``reason``; under ``CI=true`` fail it with the reason instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires the real data in {SHARED_DATA} "
                    "(../shared/data beside the repository, or $CORTEXLINK_SHARED_DATA)", pytrace=False)
    pytest.skip(reason)


def need(path: Path, what: str = "", *, glob: str | None = None) -> Path:
    """``path`` when it exists (with a file matching ``glob`` in it, if given); otherwise
    :func:`missing` (skip, or fail under CI=true) naming ``what``."""
    ok = path.exists() and (glob is None or any(path.glob(glob)))
    if not ok:
        missing(f"{what or 'real data'} not found at {path}" + (f" (no {glob})" if glob else ""))
    return path
