"""One sorter on one recording, in its own process (``cortexlink bench sort``).

Invoked as ``python -m cortexlink.bench._sort_worker SPEC.json``: loads the SpikeInterface
recording saved at ``spec["recording"]``, runs the sorter (cortexlink.sorting.sorters.run_sorter),
saves the sorting to ``spec["sorting_out"]`` and prints one JSON line with the wall time of the
sort and the process's peak RSS. A fresh process per run makes ``peak_rss_mb`` the sorter's own.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _run_sorter(recording: Any, sorter: str, folder: Path, *, motion: bool, n_jobs: int, params: dict | None,
                matching: dict | None = None) -> Any:
    try:
        from cortexlink.sorting.sorters import run_sorter
    except ImportError:  # cortexlink.sorting not built yet: SpikeInterface's own, same preprocessing
        return _si_run_sorter(recording, sorter, folder, motion=motion, n_jobs=n_jobs, params=params)
    return run_sorter(recording, sorter, folder, params=params, preprocess=True, motion=motion, n_jobs=n_jobs,
                      progress=False, matching=matching or {})


def _si_run_sorter(recording: Any, sorter: str, folder: Path, *, motion: bool, n_jobs: int,
                   params: dict | None) -> Any:
    import spikeinterface.preprocessing as spre
    import spikeinterface.sorters as ss

    rec = spre.bandpass_filter(recording, freq_min=300.0, freq_max=6000.0, dtype="float32")
    rec = spre.common_reference(rec, reference="global", operator="median")
    job = {"n_jobs": n_jobs, "chunk_duration": "1s", "progress_bar": False}
    if motion:
        rec = spre.correct_motion(rec, preset="dredge_fast", **job)
    kw = dict(params or {})
    if sorter == "mountainsort5":
        kw.setdefault("filter", False)
    return ss.run_sorter(sorter, rec, folder=str(folder), remove_existing_folder=True, verbose=False, **kw)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out: dict[str, Any] = {"sorter": spec["sorter"]}
    try:
        import spikeinterface.core as si

        rec = si.load(spec["recording"])
        t0 = time.perf_counter()
        sorting = _run_sorter(rec, spec["sorter"], Path(spec["work_folder"]), motion=bool(spec.get("motion")),
                              n_jobs=int(spec.get("n_jobs", 1)), params=spec.get("params"),
                              matching=spec.get("matching"))
        out["wall_s"] = time.perf_counter() - t0
        sorting.save(folder=spec["sorting_out"], overwrite=True)
        out["n_units"] = int(len(sorting.unit_ids))
    except Exception as exc:  # reported to the parent as the run's error, never silently
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()[-2000:]
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    out["peak_rss_mb"] = own
    out["peak_rss_children_mb"] = kids
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
