"""``cortexlink bench dataset``: a data set of simulated sessions built end to end on Ray, once per
worker count, and its throughput (issue 15 §4).

Sessions are simulated inside their Ray task (:class:`SimulatedSession`, a RecordingSource): the
``probe384`` preset (a 4-column shank, units seen on neighbouring electrodes, bursts, amplitude
jitter) at ``channels`` electrodes, one implant per participant (its seed) recorded on days
0, 1, 2, ... (``ImplantConfig.day``: day-to-day drift and unit turnover), written by
:func:`cortexlink.bench.sort_truth.simulated_pair` into the task's work folder and deleted after
sorting — 20 sessions x 256 channels x 5 min of raw int16 would be 92 GB on disk at once.

Each worker count builds the same sessions into its own folder (``WORK/w<N>``) with a fresh local
Ray instance of N CPUs. Reported per build: wall time, sessions/hour, channel-hours/hour (recorded
channel-hours sorted per hour of wall time), units, tracked units, excluded sessions, the largest
per-worker peak RSS; and the scaling (throughput with the most workers / with one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from cortexlink.core.errors import ConfigError

__all__ = ["SimulatedSession", "simulated_inputs", "run", "print_summary", "ROW_KEYS"]

logger = logging.getLogger(__name__)

ROW_KEYS = ("workers", "sessions", "channels", "seconds", "wall_s", "sessions_per_hour", "channel_hours_per_hour",
            "n_units", "n_tracked_units", "excluded")


@dataclass(frozen=True)
class SimulatedSession:
    """A simulated session made inside the Ray task (picklable): ``materialize(folder)`` writes
    ``seconds`` of the ``preset`` implant (``seed``, ``day``) to ``folder`` and returns it as a
    SpikeInterface recording annotated with its participant."""

    participant: str
    day: int
    seed: int
    channels: int
    seconds: float
    preset: str = "probe384"

    def fingerprint(self) -> str:
        return "sim-" + hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]

    def describe(self) -> str:
        return (f"simulated {self.preset} {self.channels} ch x {self.seconds:g} s, participant {self.participant}, "
                f"day {self.day}, seed {self.seed}")

    def materialize(self, folder: Path) -> Any:
        from cortexlink.bench.sort_truth import simulated_pair
        from cortexlink.sim import SimulatedImplant

        imp = SimulatedImplant.from_preset(self.preset, n_channels=self.channels, seed=self.seed, day=self.day)
        pair = simulated_pair(imp, self.seconds, folder, name=f"{self.participant}_d{self.day}")
        rec = pair.recording
        rec.annotate(cortexlink=json.dumps({"format": "simulated", "path": self.describe(),
                                            "participant_id": self.participant, "species": "Homo sapiens"}))
        return rec


def simulated_inputs(sessions: int, channels: int, seconds: float, *, participants: int = 2, seed: int = 0,
                     preset: str = "probe384") -> list:
    """``sessions`` SessionInputs spread over ``participants`` simulated participants (one implant
    each, seeds ``seed + k``), each recorded on consecutive days."""
    from cortexlink.sorting.dataset import SessionInput

    for name, v, lo in (("sessions", sessions, 1), ("channels", channels, 4), ("participants", participants, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}; got {v!r}")
    if not (isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0):
        raise ConfigError(f"seconds must be a number > 0; got {seconds!r}")
    out = []
    for i in range(sessions):
        k, day = i % participants, i // participants
        src = SimulatedSession(f"sim-{k + 1:04d}", day, seed + k, channels, float(seconds), preset)
        out.append(SessionInput(f"sim-{k + 1:04d}-day{day:03d}", src.participant, float(day), src, src.fingerprint()))
    return out


def _row(card: dict, workers: int, sessions: int, channels: int, seconds: float) -> dict:
    b, c = card["build"], card["counts"]
    return {"workers": workers, "sessions": sessions, "channels": channels, "seconds": seconds,
            "wall_s": b["wall_s"], "sort_wall_s": b.get("sort_wall_s"), "sessions_per_hour": b["sessions_per_hour"],
            "channel_hours_per_hour": b["channel_hours_per_hour"], "n_units": c["units"],
            "n_units_by_label": c["units_by_label"], "n_tracked_units": c["tracked_units"],
            "n_tracked_in_several_sessions": c["tracked_units_in_several_sessions"],
            "excluded": len(card["excluded"]["sessions"]), "excluded_sessions": card["excluded"]["sessions"],
            "session_wall_s_median": b.get("session_wall_s_median"), "peak_rss_mb": b.get("peak_rss_mb_max")}


def run(*, sessions: int = 20, channels: int = 256, seconds: float = 300.0, workers: Sequence[int] = (1, 2),
        sorter: str | None = None, participants: int = 2, seed: int = 0, max_failures: int = 2,
        work_dir: str | Path | None = None, progress: bool = False) -> dict:
    """Build the same simulated data set once per worker count; return ``{"config", "results",
    "scaling"}`` (rows of :data:`ROW_KEYS` and more)."""
    from cortexlink.sorting.dataset import build_dataset
    from cortexlink.sorting.sorters import default_sorter

    workers = list(workers)
    if not workers or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in workers):
        raise ConfigError(f"workers must be integers >= 1; got {workers!r}")
    inputs = simulated_inputs(sessions, channels, seconds, participants=participants, seed=seed)
    sorter = sorter or default_sorter()
    keep = work_dir is not None
    root = Path(work_dir) if keep else Path(tempfile.mkdtemp(prefix="cortexlink-bench-dataset-"))
    root.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for w in workers:
            logger.info("building %d sessions (%d ch x %g s) with %d worker(s), %s", sessions, channels, seconds, w,
                        sorter)
            card = build_dataset(inputs, root / f"w{w}", sorter=sorter, workers=w, max_failures=max_failures,
                                 progress=progress, name=f"bench dataset, {w} worker(s)")
            results.append(_row(card, w, sessions, channels, seconds))
            (root / "partial.json").write_text(json.dumps(results, indent=1, default=str))
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    tp = {r["workers"]: r["sessions_per_hour"] for r in results if r["sessions_per_hour"]}
    scaling = None
    if len(tp) >= 2:
        scaling = {f"{w}_vs_{min(tp)}": round(tp[w] / tp[min(tp)], 3) for w in sorted(tp) if w != min(tp)}
    return {"bench": "dataset", "config": {"sessions": sessions, "channels": channels, "seconds": seconds,
                                           "participants": participants, "sorter": sorter, "seed": seed,
                                           "preset": "probe384", "work_dir": str(root) if keep else None},
            "results": results, "scaling": scaling}


def print_summary(result: dict) -> None:  # pragma: no cover - console formatting, used by cli only
    import sys

    cfg = result["config"]
    w = sys.stdout.write
    w(f"bench dataset: {cfg['sessions']} simulated sessions x {cfg['channels']} ch x {cfg['seconds']:g} s, "
      f"{cfg['participants']} participant(s), sorter {cfg['sorter']}\n")
    w(f"{'workers':>7} {'wall s':>9} {'sess/h':>8} {'ch-h/h':>8} {'units':>6} {'tracked':>7} {'excl':>4} "
      f"{'peak MB':>8}\n")
    for r in result["results"]:
        w(f"{r['workers']:>7} {r['wall_s']:>9.1f} {r['sessions_per_hour'] or 0:>8.2f} "
          f"{r['channel_hours_per_hour'] or 0:>8.3f} {r['n_units']:>6} {r['n_tracked_units']:>7} {r['excluded']:>4} "
          f"{r['peak_rss_mb'] or 0:>8.0f}\n")
    if result.get("scaling"):
        w(f"scaling (throughput vs fewest workers): {result['scaling']}\n")
