"""Coverage figures from coverage.py's JSON report (``pytest --cov --cov-branch --cov-report=json``).

Percentages count statements and branches together, as ``coverage report`` does with branch
coverage on: ``100 * (covered lines + covered branches) / (statements + branches)``. The safety
figure is over the risk file's safety-critical files only, each also reported on its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ValidationError

__all__ = ["read_coverage"]


def _pct(covered: int, total: int) -> float | None:
    return None if total == 0 else round(100.0 * covered / total, 2)


def _counts(summary: dict[str, Any]) -> tuple[int, int]:
    covered = int(summary.get("covered_lines", 0)) + int(summary.get("covered_branches", 0))
    total = int(summary.get("num_statements", 0)) + int(summary.get("num_branches", 0))
    return covered, total


def read_coverage(path: str | Path, safety_paths: list[str]) -> dict[str, Any]:
    """``{total_pct, safety_pct, branch: bool, files: [{path, pct, missing_lines, missing_branches}]}``.

    ``safety_paths`` are repository-relative (``src/cortexlink/runtime/watchdog.py``); a file
    coverage did not see (never imported) counts as 0 % with its size unknown, and is listed.

    Raises
    ------
    ValidationError
        The report is missing or not coverage.py JSON.
    """
    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"no coverage report at {p}: run the tests with --cov-report=json first")
    try:
        doc = json.loads(p.read_text())
        files: dict[str, Any] = doc["files"]
        totals: dict[str, Any] = doc["totals"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError(f"{p} is not a coverage.py JSON report: {exc}") from None
    branch = bool(doc.get("meta", {}).get("branch_coverage", False))
    by_suffix = {k.replace("\\", "/"): v for k, v in files.items()}
    out_files: list[dict[str, Any]] = []
    cov_sum = tot_sum = 0
    for sp in safety_paths:
        entry = next((v for k, v in by_suffix.items() if k == sp or k.endswith("/" + sp)
                      or sp.endswith("/" + k)), None)
        if entry is None:
            out_files.append({"path": sp, "pct": 0.0, "measured": False, "missing_lines": [], "missing_branches": []})
            continue
        c, t = _counts(entry["summary"])
        cov_sum += c
        tot_sum += t
        out_files.append({"path": sp, "pct": _pct(c, t), "measured": True,
                          "missing_lines": list(entry.get("missing_lines", [])),
                          "missing_branches": [list(b) for b in entry.get("missing_branches", [])]})
    c, t = _counts(totals)
    unmeasured = any(not f["measured"] for f in out_files)
    return {"total_pct": _pct(c, t), "safety_pct": None if unmeasured else _pct(cov_sum, tot_sum),
            "branch": branch, "files": out_files}
