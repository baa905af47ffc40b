"""``cortexlink bench ui``: does the operator UI slow the real-time loop?

An :class:`~cortexlink.web.controller.OperatorController` runs the operator graph of the demo
session (1024 channels by default) in this process, the UI a client of its bus; it is
calibrated, fitted, then runs closed-loop Webgrid paced to the wall clock while the conditions
take turns: no browser connected, one headless Chromium window on the operator
page, three windows; each with the worker thread at normal and at real-time (SCHED_FIFO)
priority. Conditions are interleaved in ``rounds`` slices so that a change in the
machine's load during the run affects them alike; every condition gets ``seconds`` in total. The
browser stays running throughout (an unconnected window shows ``about:blank``), so the
conditions differ only in connected pages.

Reported per condition: the loop latency (the cursor node's: the bin's last chunk entered the
graph → cursor updated) p50/p99/max, deadline misses (updates later than the graph's deadline),
and the snapshot rate each connected page received.
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import time
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["run", "summary_lines"]


def _stats(a: np.ndarray) -> dict | None:
    a = a[np.isfinite(a)]
    if a.size == 0:
        return None
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max()),
            "mean": float(a.mean())}


def run(seconds: float = 30.0, channels: int = 1024, clients: tuple[int, ...] = (1, 3), rounds: int = 3,
        calibration_s: float = 30.0, seed: int = 0, priorities: tuple[str, ...] = ("normal", "realtime"),
        progress: Any = None) -> dict:
    """Run the benchmark; return JSON-able figures (see the module docstring).

    Parameters
    ----------
    seconds : float
        Measured seconds per condition (split over ``rounds`` slices).
    channels : int
        Electrodes of the simulated implant.
    clients : tuple of int
        Numbers of connected browser windows to compare with none.
    rounds : int
        Interleaved slices per condition.
    calibration_s : float
        Open-loop calibration before the fit.
    priorities : tuple of {"normal", "high", "realtime"}
        Scheduling of the graph's thread; every browser condition is measured under each (a
        priority that cannot be applied is reported and measured as it is).
    progress : callable, optional
        Called with a line of text at each step.
    """
    from cortexlink.core.validation import check_positive
    from cortexlink.runtime.session import DEFAULT_SESSION
    from cortexlink.web.browser import find_browser
    from cortexlink.web.controller import OperatorController
    from cortexlink.web.server import OperatorServer

    seconds = check_positive("seconds", seconds)
    rounds = check_positive("rounds", rounds, integer=True)
    clients = tuple(int(check_positive("clients", c, integer=True)) for c in clients)
    from cortexlink.core.validation import check_choice
    from cortexlink.web.commands import PRIORITIES

    priorities = tuple(dict.fromkeys(check_choice("priorities", p, PRIORITIES) for p in priorities))
    conditions = [0, *sorted(set(clients))]
    settle_s = 2.0
    slice_s = seconds / rounds
    block_s = min(600.0, len(priorities) * len(conditions) * rounds * (slice_s + settle_s + 3.0) + 30.0)
    cfg = copy.deepcopy(DEFAULT_SESSION)
    cfg["name"] = "bench-ui"
    cfg["seed"] = int(seed)
    cfg["implant"]["n_channels"] = int(check_positive("channels", channels, integer=True))

    def say(msg: str) -> None:
        logger.info(msg)
        if progress is not None:
            progress(msg)

    chrome, driver, reason = find_browser()
    result: dict[str, Any] = {
        "benchmark": "ui", "channels": int(channels), "seconds_per_condition": seconds, "rounds": rounds,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_avg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "browser": None if reason else {"chromium": chrome, "chromedriver": driver},
        "browser_skipped": reason, "conditions": {}, "priorities": {},
    }
    if reason is not None:
        conditions = [0]
    ctl = OperatorController(session=cfg)
    ctl.start()
    server = None
    browser = None
    try:
        say(f"calibrating {calibration_s:g} s and fitting at {channels} channels")
        ctl.command("calibrate", {"seconds": calibration_s})
        ctl.wait_for(lambda s: s.slow.data["counts"]["calibration_blocks"] >= 1, calibration_s + 60)
        ctl.command("fit")
        snap = ctl.wait_for(lambda s: s.slow.data["decoder"]["fitted"] or s.slow.data["last_job"] is not None, 300)
        job = snap.slow.data["last_job"]
        if not snap.slow.data["decoder"]["fitted"]:
            raise RuntimeError(f"fit failed: {job}")
        result["fit"] = job
        lat = ctl.loop_latency_ns()
        cursor = ctl._runner.by_name[ctl.nodes["cursor"]].node
        server = OperatorServer(ctl, "127.0.0.1", 0).start()
        result["url"] = server.url
        handles: list = []
        if len(conditions) > 1:
            from cortexlink.web.browser import launch

            browser = launch()
            drv = browser.driver
            handles = [drv.current_window_handle]
            for _ in range(max(conditions) - 1):
                drv.switch_to.new_window("window")
                handles.append(drv.current_window_handle)
            for h in handles:
                drv.switch_to.window(h)
                drv.get("about:blank")

        def start_block() -> None:
            ctl.command("start", {"task": "webgrid", "seconds": block_s})
            ctl.wait_for(lambda s: s.fast["state"] == "closed_loop", 10)

        start_block()
        cases = [(p, c) for p in priorities for c in conditions]
        acc: dict[tuple, dict] = {k: {"loop_us": [], "missed": 0, "rx": [], "bins": 0, "load": []} for k in cases}
        for r in range(rounds):
            for prio, c in cases:
                if ctl.state != "closed_loop":
                    start_block()
                result["priorities"][prio] = ctl.set_priority(prio)
                drv = browser.driver if browser is not None else None
                for h in handles[:c]:
                    drv.switch_to.window(h)
                    drv.get(server.url)
                time.sleep(settle_s)
                n0 = [_js(drv, h, "return window.cl ? window.cl.nFast : 0") for h in handles[:c]]
                b0, l0, m0 = cursor.n_updates, lat.n, cursor.n_missed
                t0 = time.monotonic()
                time.sleep(slice_s)
                b1, l1, m1 = cursor.n_updates, lat.n, cursor.n_missed
                dt = time.monotonic() - t0
                n1 = [_js(drv, h, "return window.cl ? window.cl.nFast : 0") for h in handles[:c]]
                a = acc[(prio, c)]
                if hasattr(os, "getloadavg"):
                    a["load"].append(os.getloadavg()[0])
                for h in handles[:c]:
                    drv.switch_to.window(h)
                    drv.get("about:blank")
                vals = lat.values_ns()
                a["loop_us"].append(vals[len(vals) - min(l1 - l0, len(vals)):] / 1e3)
                a["missed"] += m1 - m0
                a["bins"] += b1 - b0
                a["rx"].extend((b - x) / dt for x, b in zip(n0, n1))
                say(f"round {r + 1}/{rounds}, priority {prio}, {c} browser window(s): {b1 - b0} bins, "
                    f"{m1 - m0} missed, rx {[round((b - x) / dt, 1) for x, b in zip(n0, n1)]}/s")
        ctl.set_priority("normal")
        for prio, c in cases:
            a = acc[(prio, c)]
            name = f"{prio}/" + ("no_browser" if c == 0 else f"{c}_browser{'s' if c > 1 else ''}")
            result["conditions"][name] = {
                "priority": prio, "priority_applied": result["priorities"][prio].get("applied") == prio,
                "browser_windows": c, "n_bins": int(a["bins"]),
                "loop_latency_us": _stats(np.concatenate(a["loop_us"])) if a["loop_us"] else None,
                "deadline_misses": int(a["missed"]),
                "deadline_miss_fraction": a["missed"] / a["bins"] if a["bins"] else None,
                "snapshots_per_s_per_window": ({"mean": float(np.mean(a["rx"])), "min": float(np.min(a["rx"]))}
                                               if a["rx"] else None),
                "load_avg_1min": float(np.mean(a["load"])) if a["load"] else None,
            }
        result["stream_hz"] = server.stream_hz
        result["dt_s"] = ctl.dt_s
        result["graph"] = "operator graph of the demo session, in-process (UI: a client of its bus)"
    finally:
        if browser is not None:
            browser.quit()
        if server is not None:
            server.stop()
        ctl.stop()
    return result


def _js(drv: Any, handle: str, script: str) -> Any:
    drv.switch_to.window(handle)
    return drv.execute_script(script)


def summary_lines(result: dict) -> list[str]:
    """A table of the conditions as text lines (``cortexlink bench ui`` prints them)."""
    out = [f"cortexlink bench ui — {result['channels']} channels, {result['seconds_per_condition']:g} s per condition "
           f"in {result['rounds']} interleaved slices, {result['machine']['cpus']} CPUs"]
    if result.get("browser_skipped"):
        out.append(f"  browser conditions skipped: {result['browser_skipped']}")
    for prio, info in result.get("priorities", {}).items():
        if info.get("error"):
            out.append(f"  priority {prio} not applied: {info['error']}")
    out.append(f"  {'condition':<22} {'loop p50':>9} {'p99':>8} {'max':>8}  {'misses':>10}  {'updates/s':>9}")
    nan = float("nan")
    for name, c in result["conditions"].items():
        lat = c["loop_latency_us"] or {}
        rx = c["snapshots_per_s_per_window"]
        out.append(f"  {name:<22} {lat.get('p50', nan):>7.0f}µs {lat.get('p99', nan):>6.0f}µs "
                   f"{lat.get('max', nan):>6.0f}µs  "
                   f"{c['deadline_misses']:>4}/{c['n_bins']:<5}  {'-' if rx is None else format(rx['mean'], '.1f'):>9}")
    return out
