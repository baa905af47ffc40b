"""Building blocks of the NWB file: electrodes (and the probe), trials, blocks (epochs), task
event fields and invalid-time intervals from the recorded events.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from cortexlink.io.nwb._common import _DEVICE_SIM, _OUTCOMES


def _add_electrodes(nwbfile: Any, manifest: dict, cm: Any, simulated: bool) -> tuple[Any, dict]:
    """Device, electrode group and electrodes table; a probeinterface Probe when the geometry fits."""
    dev = manifest.get("device")
    if isinstance(dev, str):
        dev = {"name": dev}
    cfg = manifest.get("config") or {}
    imp = cfg.get("implant") if isinstance(cfg, dict) else None
    if isinstance(dev, dict) and dev.get("name"):
        model = nwbfile.create_device_model(name=str(dev.get("model", dev["name"])) + " model",
                                            manufacturer=str(dev.get("manufacturer", "unknown")),
                                            description=str(dev.get("description", "recording device")))
        device = nwbfile.create_device(name=str(dev["name"]), model=model,
                                       description=str(dev.get("description", "recording device")))
        location = str(dev.get("location", manifest.get("location", "unknown")))
    else:
        desc = ("cortexlink's seeded synthetic intracortical implant (cortexlink.sim.SimulatedImplant)"
                if simulated else "recording device (not named in the session manifest)")
        if isinstance(imp, dict):
            desc += f"; implant config {json.dumps(imp, sort_keys=True, default=str)}"
        model = nwbfile.create_device_model(name="cortexlink SimulatedImplant" if simulated else "unknown model",
                                            manufacturer="cortexlink (simulation)" if simulated else "unknown",
                                            description=desc)
        device = nwbfile.create_device(name=_DEVICE_SIM if simulated else "unknown device", description=desc,
                                       model=model)
        location = "none (simulated data)" if simulated else str(manifest.get("location", "unknown"))
    pos = np.asarray(cm.positions_um, dtype=np.float64)
    probe_info: dict = {"used": False}
    if len(np.unique(pos, axis=0)) == cm.n_channels:
        probe_info = _probe_from_positions(cm)
    group_desc = (f"{cm.n_channels}-electrode planar array; rel_x/rel_y are contact positions in micrometres "
                  "on the array (not brain coordinates)")
    if probe_info.get("used"):
        group_desc += f"; geometry checked with probeinterface ({probe_info['summary']})"
    group = nwbfile.create_electrode_group(name="array0", description=group_desc, location=location, device=device)
    nwbfile.add_electrode_column(name="channel_id", description="cortexlink channel id (column name of the raw stream)")
    nwbfile.add_electrode_column(name="bad", description="marked unusable in the session's channel map")
    nwbfile.add_electrode_column(name="gain_uv", description="microvolts per raw integer count")
    nwbfile.add_electrode_column(name="offset_uv", description="microvolts added after scaling")
    gain, off, bad = cm.gain_uv, cm.offset_uv, cm.bad
    for i, cid in enumerate(cm.channel_ids):
        nwbfile.add_electrode(group=group, location=location, rel_x=float(pos[i, 0]), rel_y=float(pos[i, 1]),
                              channel_id=str(cid), bad=bool(bad[i]), gain_uv=float(gain[i]),
                              offset_uv=float(off[i]))
    return group, probe_info


def _probe_from_positions(cm: Any) -> dict:
    """A probeinterface Probe from the channel map's positions (2-D, µm); its JSON goes to scratch."""
    try:
        from probeinterface import Probe
    except ImportError:                       # pragma: no cover - probeinterface is a dependency
        return {"used": False}
    pos = np.asarray(cm.positions_um, dtype=np.float64)
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)) if cm.n_channels <= 4096 else None
    if d is not None and cm.n_channels > 1:
        np.fill_diagonal(d, np.inf)
        pitch = float(d.min())
    else:
        pitch = 20.0
    radius = max(1.0, round(0.3 * pitch, 2)) if np.isfinite(pitch) else 6.0
    probe = Probe(ndim=2, si_units="um", name="cortexlink array", manufacturer="")
    probe.set_contacts(positions=pos, shapes="circle", shape_params={"radius": radius})
    probe.set_contact_ids([str(c) for c in cm.channel_ids])
    probe.set_device_channel_indices(np.arange(cm.n_channels))
    probe.create_auto_shape(probe_type="rect", margin=max(radius * 2, 10.0))
    lo, hi = pos.min(0), pos.max(0)
    summary = (f"{cm.n_channels} circular contacts, radius {radius:g} um (assumed: 0.3 x the {pitch:g} um minimum "
               f"pitch), span {hi[0] - lo[0]:g} x {hi[1] - lo[1]:g} um")
    return {"used": True, "summary": summary, "json": json.dumps(probe.to_dict(array_as_list=True))}


def _trials(events: list[dict]) -> list[dict]:
    """Trials from task events: a trial runs from a ``target_on`` to the next (or its block's end)."""
    blocks: dict[str, dict] = {}
    for e in events:
        if e.get("kind") == "block_start":
            blocks[e.get("name")] = {"task": e.get("task", ""), "end": None}
        elif e.get("kind") == "block_end" and e.get("name") in blocks:
            blocks[e["name"]]["end"] = int(e["sample"])
    last = max((int(e.get("sample", -1)) for e in events), default=0)
    trials: list[dict] = []
    open_: dict[str, dict] = {}

    def close(block: str, stop: int) -> None:
        t = open_.pop(block, None)
        if t is None:
            return
        t["stop_sample"] = max(stop, t["start_sample"])
        trials.append(t)

    for e in events:
        if e.get("kind") == "block_end":
            close(e.get("name"), int(e["sample"]))
            continue
        if e.get("kind") != "task":
            continue
        block = e.get("block", "")
        te = e.get("task_event")
        d = e.get("data") or {}
        s = int(e["sample"])
        if te == "target_on":
            close(block, s)
            xy = d.get("xy") or [np.nan, np.nan]
            target = next((d[k] for k in ("target_idx", "cell", "square") if k in d), "")
            if isinstance(target, str) and d.get("stage"):
                target = f"{target} ({d['stage']})"
            open_[block] = {"block": block, "task": blocks.get(block, {}).get("task", ""), "target": str(target),
                            "target_x": float(xy[0]), "target_y": float(xy[1]), "start_sample": s,
                            "outcome": "none", "outcome_sample": -1, "success": False, "n_incorrect": 0}
        elif block in open_:
            t = open_[block]
            if te == "incorrect":
                t["n_incorrect"] += 1
            elif te in _OUTCOMES and t["outcome"] == "none":
                t["outcome"] = te
                t["outcome_sample"] = s
                t["success"] = bool(d.get("success", te != "timeout"))
    for block in list(open_):
        end = blocks.get(block, {}).get("end")
        close(block, end if end is not None else last)
    trials.sort(key=lambda t: (t["start_sample"], t["stop_sample"]))
    return trials


def _blocks(events: list[dict], last_sample: int) -> list[dict]:
    out, ends = [], {}
    for e in events:
        if e.get("kind") == "block_end":
            ends[e.get("name")] = e
    for e in events:
        if e.get("kind") != "block_start":
            continue
        end = ends.get(e.get("name"))
        metrics = (end or {}).get("metrics") or {}
        out.append({"name": str(e.get("name")), "mode": str(e.get("mode") or e.get("block_kind") or ""),
                    "task": str(e.get("task", "")),
                    "start_sample": int(e["sample"]),
                    "stop_sample": int(end["sample"]) if end else int(last_sample),
                    "decoder_file": str(e.get("decoder_file") or ""),
                    "click_decoder_file": str(e.get("click_decoder_file") or ""),
                    "n_bins": int((end or {}).get("n_bins", -1)), "completed": end is not None,
                    "metrics": {k: float(v) for k, v in metrics.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)}})
    return out


def _flat_task_fields(events: list[dict]) -> dict[str, str]:
    """Scalar ``data`` fields of task events, and the type of each (``"f"`` number, ``"s"`` text)."""
    kinds: dict[str, str] = {}
    for e in events:
        for k, v in (e.get("data") or {}).items():
            if k == "xy":
                continue
            if isinstance(v, bool) or isinstance(v, (int, float)):
                kinds.setdefault(k, "f")
            elif isinstance(v, str):
                kinds[k] = "s"
    return kinds


def _event_intervals(events: list[dict], m: dict, feature_bw: int | None) -> list[tuple[int, int, str]]:
    """Invalid intervals named by events: ``gap`` (missing source samples) and ``dropped`` items."""
    spb = int((m.get("loop") or {}).get("samples_per_bin") or 1)
    out = []
    for e in events:
        if e.get("kind") == "gap" and int(e.get("sample", -1)) >= 0:
            s, n = int(e["sample"]), int(e.get("n_missing", 0))
            out.append((s, s + n, f"gap in the source ({e.get('stream', 'features')} input)"))
        elif e.get("kind") == "dropped":
            stream = str(e.get("stream", ""))
            for a, b in e.get("ranges") or []:
                a, b = int(a), int(b)
                if stream == "features" and feature_bw:
                    b = a + (b - a) * feature_bw
                elif stream not in ("raw", "events"):
                    a = a - spb
                out.append((max(a, 0), b, f"{stream} items dropped by the recorder"))
    return out

