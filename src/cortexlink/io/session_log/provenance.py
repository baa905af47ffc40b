"""What the recording process was: package version, git hash, Python, platform, host (for the
manifest's ``provenance``)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np


def _git_hash() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        # whichever git is on PATH, fixed arguments, best effort (no git: no hash)
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,  # nosec B607
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    h = out.stdout.strip()
    return h if out.returncode == 0 and len(h) == 40 else None


def provenance() -> dict[str, Any]:
    """Package version, git hash, Python, platform and host of the recording process."""
    from cortexlink import __version__
    return {"cortexlink_version": __version__, "git_hash": _git_hash(), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform(), "host": platform.node(),
            "pid": os.getpid()}
