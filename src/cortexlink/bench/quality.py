"""``cortexlink bench quality``: how long the data-set quality report takes, and its peak memory.

Two data sets, each measured by :func:`cortexlink.quality.runner.run_quality` in a fresh
process of its own (so ``peak_rss_mb`` — Linux ``VmHWM`` — is that run's alone, imports
included):

* the EEG Motor Movement/Imagery folder in ``../shared/data/eeg_motor_imagery`` (skipped with a
  note when absent);
* a simulated 1024-channel, 10-minute implant session recorded without raw samples
  (``cortexlink record --sim --channels 1024 --seconds 600 --no-raw``; ~3 minutes to record on
  the 2-core development machine, so it is kept in the work folder and reused by the next run).

Reported per data set: files, channels, duration, ``wall_s`` of the whole ``run_quality`` call
(open, scan, checks, baseline, figures, HTML), peak RSS, number of findings, the scores, and
whether it met the goal (under a minute). Run a worker by hand with
``python -m cortexlink.bench.quality SPEC.json``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cortexlink.io.nwb._common import _peak_rss_mb

__all__ = ["run", "print_summary", "default_eeg_folder", "implant_session", "GOAL_S"]

#: The issue's goal for each data set (seconds of wall-clock time).
GOAL_S = 60.0


def default_eeg_folder() -> Path | None:
    """``$CORTEXLINK_SHARED_DATA/eeg_motor_imagery`` or ``../shared/data/eeg_motor_imagery`` if present."""
    candidates = []
    env = os.environ.get("CORTEXLINK_SHARED_DATA")
    if env:
        candidates.append(Path(env) / "eeg_motor_imagery")
    repo = Path(__file__).resolve().parents[3]
    candidates += [repo.parent / "shared" / "data" / "eeg_motor_imagery",
                   Path.cwd().parent / "shared" / "data" / "eeg_motor_imagery"]
    return next((c for c in candidates if c.is_dir() and any(c.glob("*.edf"))), None)


def _session_closed(folder: Path) -> bool:
    try:
        m = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and m.get("state") == "closed"


def implant_session(work: Path, *, channels: int = 1024, seconds: float = 600.0, seed: int = 0,
                    progress: bool = False) -> tuple[Path, float | None]:
    """The simulated session (no raw samples) in ``work``, recorded now unless a closed one is there.

    Returns ``(folder, record_s)``: ``record_s`` is ``None`` when the cached session was reused.
    """
    from cortexlink.core.errors import ConfigError

    folder = Path(work) / f"sim-{int(channels)}ch-{seconds:g}s-seed{int(seed)}"
    if _session_closed(folder):
        return folder, None
    if folder.exists():
        shutil.rmtree(folder)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".partial-", dir=work))
    target = tmp / "session"
    cmd = [sys.executable, "-m", "cortexlink.cli.main", "record", "--sim", "--channels", str(int(channels)),
           "--seconds", f"{seconds:g}", "--no-raw", "--seed", str(int(seed)), "--out", str(target),
           "--status-interval", "10" if progress else "0", "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE,
                          text=True, check=False)
    record_s = time.perf_counter() - t0
    if proc.returncode != 0 or not _session_closed(target):
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConfigError(f"recording the simulated session failed (exit {proc.returncode}): "
                          f"{(proc.stderr or '').strip()[-400:]}")
    target.rename(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    return folder, record_s


def _worker(spec_path: str) -> None:
    """Run the report in this (fresh) process; write the figures to ``spec["result"]``."""
    spec = json.loads(Path(spec_path).read_text())
    from cortexlink.quality.runner import run_quality

    rss0 = _peak_rss_mb()
    t0 = time.perf_counter()
    report = run_quality(spec["path"], spec["out"], intended_use=spec.get("intended_use"),
                         baseline=spec["baseline"], n_permutations=spec["n_permutations"])
    wall_s = time.perf_counter() - t0
    recs = report.recordings
    d = report.to_dict()
    result = {"files": len(recs), "channels": max((r["channels"] for r in recs), default=0),
              "duration_s": round(sum(r["duration_s"] or 0.0 for r in recs), 1), "wall_s": round(wall_s, 2),
              "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_before_mb": round(rss0, 1),
              "n_findings": len(d["findings"]),
              "findings_by_severity": {s: sum(1 for f in d["findings"] if f["severity"] == s)
                                       for s in ("info", "warning", "error", "critical")},
              "scores": d["scores"], "timings_s": report.options.get("timings_s", {}),
              "report": str(Path(spec["out"]) / "report.html")}
    from cortexlink.core.jsonutil import jsonable

    Path(spec["result"]).write_text(json.dumps(jsonable(result, finite=True)))


def _measure(name: str, path: Path, work: Path, *, intended_use: Path | None, baseline: bool,
             n_permutations: int) -> dict[str, Any]:
    out = work / f"report-{name}"
    spec = {"path": str(path), "out": str(out), "intended_use": None if intended_use is None else str(intended_use),
            "baseline": baseline, "n_permutations": n_permutations, "result": str(work / f"result-{name}.json")}
    spec_path = work / f"spec-{name}.json"
    spec_path.write_text(json.dumps(spec))
    Path(spec["result"]).unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "cortexlink.bench.quality", str(spec_path)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not Path(spec["result"]).is_file():
        return {"dataset": name, "path": str(path), "error": f"exit {proc.returncode}: "
                f"{(proc.stderr or '').strip()[-800:]}"}
    r = json.loads(Path(spec["result"]).read_text())
    return {"dataset": name, "path": str(path), "intended_use": spec["intended_use"], **r, "goal_s": GOAL_S,
            "met_goal": r["wall_s"] < GOAL_S}


def run(*, eeg: str | os.PathLike | None = None, use_default_eeg: bool = True, implant: bool = True,
        channels: int = 1024, seconds: float = 600.0, seed: int = 0, work: str | os.PathLike | None = None,
        baseline: bool = True, n_permutations: int = 100, intended_use: str | os.PathLike | None = None,
        progress: bool = False) -> dict[str, Any]:
    """Measure ``run_quality`` on the EEG folder and on the simulated implant session.

    Parameters
    ----------
    eeg : path, optional
        The EEG folder (default: :func:`default_eeg_folder` when ``use_default_eeg``).
    implant : bool
        Also measure the simulated session (``channels`` × ``seconds``, recorded once into
        ``work`` and reused).
    work : path, optional
        Folder for the cached session and the reports (default: ``<tmp>/cortexlink-bench-quality``).
    intended_use : path, optional
        Intended-use YAML for the EEG folder (default: ``examples/quality/eegmmidb_intended_use.yaml``
        of the repository when present).
    """
    from cortexlink.core.errors import ConfigError

    if channels < 1 or seconds <= 0:
        raise ConfigError(f"channels must be >= 1 and seconds > 0; got {channels} and {seconds}")
    if isinstance(n_permutations, bool) or n_permutations < 0:
        raise ConfigError(f"permutations must be an integer >= 0; got {n_permutations!r}")
    base = Path(work) if work is not None else Path(tempfile.gettempdir()) / "cortexlink-bench-quality"
    base.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"benchmark": "quality", "goal_s": GOAL_S, "baseline": baseline,
                              "n_permutations": n_permutations, "work": str(base),
                              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                                          "python": platform.python_version()},
                              "results": [], "notes": []}
    eeg_path = Path(eeg) if eeg is not None else (default_eeg_folder() if use_default_eeg else None)
    if eeg is not None and not eeg_path.exists():
        raise ConfigError(f"--eeg {eeg_path} does not exist; give the EEG folder")
    if eeg_path is None:
        if use_default_eeg:
            result["notes"].append("EEG folder not found (../shared/data/eeg_motor_imagery): EEG case skipped")
    else:
        use = Path(intended_use) if intended_use is not None else None
        if use is None:
            cand = Path(__file__).resolve().parents[3] / "examples" / "quality" / "eegmmidb_intended_use.yaml"
            use = cand if cand.is_file() else None
        if progress:
            print(f"bench quality: {eeg_path} ...", file=sys.stderr, flush=True)
        result["results"].append(_measure("eeg_motor_imagery", eeg_path, base, intended_use=use,
                                          baseline=baseline, n_permutations=n_permutations))
    if implant:
        if progress:
            print(f"bench quality: simulated {channels}-channel {seconds:g} s session (recorded once, then "
                  f"reused from {base}) ...", file=sys.stderr, flush=True)
        folder, record_s = implant_session(base, channels=channels, seconds=seconds, seed=seed, progress=progress)
        r = _measure(f"sim_implant_{channels}ch_{seconds:g}s", folder, base, intended_use=None, baseline=baseline,
                     n_permutations=n_permutations)
        r["record_s"] = None if record_s is None else round(record_s, 1)
        r["cached_session"] = record_s is None
        result["results"].append(r)
    return result


def print_summary(result: dict[str, Any]) -> None:
    """A table of the results (the ``cortexlink bench quality`` summary)."""
    print(f"{'dataset':34s} {'files':>5s} {'ch':>5s} {'dur s':>8s} {'wall s':>7s} {'RSS MB':>7s} "
          f"{'findings':>8s} {'<60 s':>5s}")
    for r in result["results"]:
        if "error" in r:
            print(f"{r['dataset']:34s} error: {r['error']}")
            continue
        print(f"{r['dataset']:34s} {r['files']:5d} {r['channels']:5d} {r['duration_s']:8.1f} {r['wall_s']:7.2f} "
              f"{r['peak_rss_mb']:7.0f} {r['n_findings']:8d} {'yes' if r['met_goal'] else 'NO':>5s}")
        print("    scores: " + ", ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in r["scores"].items()))
    for n in result.get("notes", []):
        print(f"note: {n}")


if __name__ == "__main__":  # pragma: no cover
    _worker(sys.argv[1])
