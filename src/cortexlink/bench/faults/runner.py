"""Run the fault campaign: every registered case in a child process of its own (a new process
group, killed whole when the case runs past its time), one fresh folder per case.

``python -m cortexlink.bench.faults.runner --one NAME DIR`` is the child's entry point: it runs
one case and prints its :class:`~cortexlink.bench.faults.base.Outcome` as JSON on its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from cortexlink.bench.faults.base import CASES, Case, Outcome, as_dict

__all__ = ["load_cases", "run", "format_table"]

#: The modules that register cases (one per area).
CASE_MODULES = ("storage", "runtime_cases", "inputs")
_MARK = "@@fault-outcome@@ "


def load_cases() -> dict[str, Case]:
    """Import every case module; return the registry."""
    for m in CASE_MODULES:
        importlib.import_module(f"cortexlink.bench.faults.{m}")
    return CASES


def _select(only: list[str] | None) -> list[Case]:
    cases = list(load_cases().values())
    if not only:
        return cases
    picked = [c for c in cases if any(fnmatch.fnmatch(c.name, p) or c.area == p for p in only)]
    if not picked:
        from cortexlink.core.errors import ConfigError

        raise ConfigError(f"no fault case matches {only}; `cortexlink bench faults --list` lists them")
    return picked


def _run_one(c: Case, root: Path, timeout_scale: float) -> dict:
    missing = [n for n in c.needs if shutil.which(n) is None]
    if missing:
        return {"case": c.name, "area": c.area, "description": c.doc, "skipped": f"needs {', '.join(missing)}"}
    work = root / c.name
    work.mkdir(parents=True, exist_ok=True)
    limit = c.timeout_s * timeout_scale
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cortexlink.bench.faults.runner", "--one", c.name, str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        o = Outcome(False, message_ok=False, detail=f"the case did not finish within {limit:g} s")
        return as_dict(c, o, time.perf_counter() - t0)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)          # whatever the case left running
        except (ProcessLookupError, PermissionError):
            pass
    line = next((ln for ln in reversed(out.decode("utf-8", "replace").splitlines()) if ln.startswith(_MARK)), None)
    if line is None:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        o = Outcome(False, message_ok=False, detail=f"the case itself failed (exit {proc.returncode}): {tail[0][:300]}")
    else:
        o = Outcome(**json.loads(line[len(_MARK):]))
    return as_dict(c, o, time.perf_counter() - t0)


def run(only: list[str] | None = None, *, workdir: Path | None = None, timeout_scale: float = 1.0,
        progress: bool = False, on_case: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run the cases (all, or those whose name or area matches a pattern of ``only``) and return
    ``{"cases": [...], "summary": {...}}``; each case's folder is kept under ``workdir`` when
    given (else a temporary folder, removed)."""
    cases = _select(only)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cortexlink-faults-")
        root = Path(tmp.name)
    else:
        root = Path(workdir)
        root.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cases), unit="case", desc="fault campaign", file=sys.stderr)
    results = []
    try:
        for c in cases:
            if bar is not None:
                bar.set_postfix_str(c.name)
            r = _run_one(c, root, timeout_scale)
            results.append(r)
            if on_case is not None:
                on_case(r)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if tmp is not None:
            tmp.cleanup()
    ran = [r for r in results if "skipped" not in r]
    summary = {"n_cases": len(results), "n_ran": len(ran), "n_skipped": len(results) - len(ran),
               "n_survived": sum(bool(r["survived"]) for r in ran),
               "n_data_lost": sum(r.get("data_lost") is True for r in ran),
               "n_message_ok": sum(bool(r["message_ok"]) for r in ran),
               "failed": [r["case"] for r in ran if not r["survived"]]}
    return {"cases": results, "summary": summary}


def format_table(res: dict) -> str:
    """The campaign as a Markdown table (the README's)."""
    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, bool):
            return "yes" if v else "**no**" if v is False else str(v)
        return str(v)

    rows = ["| case | area | survived | data lost | halted within bins | exit | message ok |",
            "|---|---|---|---|---|---|---|"]
    for r in res.get("cases", ()):
        if "skipped" in r:
            rows.append(f"| {r['case']} | {r['area']} | skipped ({r['skipped']}) | | | | |")
            continue
        lost = r.get("data_lost")
        rows.append(f"| {r['case']} | {r['area']} | {cell(r.get('survived'))} | "
                    f"{'–' if lost is None else ('**yes**' if lost else 'no')} | "
                    f"{cell(r.get('cursor_halted_within_bins'))} | {cell(r.get('exit_code'))} | "
                    f"{cell(r.get('message_ok'))} |")
    return "\n".join(rows)


def _child(name: str, work: Path) -> int:
    c = load_cases()[name]
    o = c.fn(work)
    if not isinstance(o, Outcome):
        raise TypeError(f"fault case {name} returned {type(o).__name__}, not an Outcome")
    print(_MARK + json.dumps(dataclasses.asdict(o), default=str), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - the child process of a case
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", required=True)
    ap.add_argument("dir", type=Path)
    a = ap.parse_args()
    sys.exit(_child(a.one, a.dir))
