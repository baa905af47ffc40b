"""Static analysis, each tool with its configuration in pyproject.toml: ruff on src and tests,
mypy in strict mode on core and the safety-critical packages (the files it lists), bandit on src.

Each runs as a subprocess of this interpreter (the tools are in the ``test`` extra) and must exit 0;
a failure shows what the tool reported. ``make lint`` runs the same three commands.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(*args: str, timeout_s: float) -> None:
    p = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    assert p.returncode == 0, f"`{' '.join(args)}` exited {p.returncode}:\n{p.stdout}\n{p.stderr}"


def test_ruff_finds_nothing():
    _tool("ruff", "check", "--no-cache", "src", "tests", timeout_s=300)


def test_mypy_strict_finds_nothing():
    # the cache (.mypy_cache, git-ignored) only makes a second run faster; a cold run takes ~30 s
    _tool("mypy", timeout_s=600)


def test_bandit_finds_nothing():
    _tool("bandit", "-c", "pyproject.toml", "-r", "src", "-q", timeout_s=300)
