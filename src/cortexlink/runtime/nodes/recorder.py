"""``recorder``: streams to a session folder without blocking."""

from __future__ import annotations

import math
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ConfigError
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node

__all__ = ["RecorderNode"]


@register_node
class RecorderNode(Node):
    """Record streams with a :class:`~cortexlink.io.session_log.SessionRecorder` (its own writer
    thread and bounded queue: ``step`` only enqueues, it never waits on disk).

    Parameters (``params``)
    -----------------------
    out_dir : str or None
        Session folder; default ``<run out dir>/<node name>`` (``--out``).
    use : str or None
        Record into an open recorder the caller handed to the runner
        (``GraphRunner(objects={name: recorder})``) instead of creating one; the caller closes it.
    participant_id : str
    raw : bool
        Record raw chunks (when ``raw`` is connected).
    on_full : {"drop", "block", "fail"}
        The recorder queue's policy (drops are counted in its manifest and in the node's summary
        in the run result: ``dropped`` per stream, ``dropped_total``).
    raw_codec : {"none", "rice", "range", "lms", "lms-fast"}
        Store each raw chunk as one frame of the lossless codec (``rice``: fast, ``range``:
        smaller, slower, ``lms``: smallest, slowest) instead of its int16 bytes (``none``, the default); readers, ``recover``,
        replay and NWB export decode it transparently.
    raw_codec_resync_records : int
        With a codec, a resynchronisation point every this many raw chunks (default 30; a
        damaged record costs at most the chunks up to the next one).

    Inputs (all optional): ``raw`` (chunks), ``features`` (the dsp's; with its ``full_rows`` every
    feature of every channel is kept, else the decoder columns), ``intent`` (decoder output, in the
    bins where it drives the cursor), ``bins`` (the cursor's rows: ``cursor`` and the participant's
    ``intent`` streams), ``cursor`` (cursor states, when ``bins`` is not connected), ``events``
    (block start and end, task events), ``phonemes`` (the speech loop's phoneme log-probabilities:
    stream ``phonemes``, one row of 41 class log-probabilities per decoded frame), ``faults`` (``runtime.faults``, connected by default),
    ``stim`` (the pulses the stimulator delivered: stream ``stim_pulses``, one record per pulse at its
    onset sample) and ``stim_status`` (the interlock: stream ``stim_status``, E-STOP and refusal
    events, its audit log copied into ``stim/``; see :mod:`._stim_record`).

    Idle recorder: with the ``operator`` input (``operator.commands``) it records nothing until
    ``record_start {name}`` opens ``<record_dir>/<name>`` (``record_dir`` default:
    ``<run out dir>/recordings``, else ``runs/recordings``); ``record_stop`` closes it. Its status
    is published under ``<name>/status`` (``active``, ``dir``, ``seconds``, ``bytes``,
    ``dropped``, ``last``: the last closed recording, with its ``state`` and ``stopped_reason``).

    A recording whose writer stops by itself (disk full, a write error) raises a
    ``recording_stopped`` fault (severity ``warning``: the loop goes on) with the folder and the
    reason; an owned recording is then closed (in a thread, so that its checksums do not hold up
    the loop) and the status says ``active: false`` with the reason under ``last``.

    Row streams use :data:`~cortexlink.io.session_log.STREAM_COLUMNS`. The manifest gets the
    source (channel map, rate), the extractor's parameters (``dsp``) and the calibration in force
    when the recording began (``dsp_calibration``: the dsp's ``<dsp>/calibration``; each later one
    becomes a ``dsp_calibration`` event) so that ``cortexlink replay`` rebuilds the extractor as it
    was; a closed-loop block's ``block_start`` event names the decoder
    files that were live (the decoder node's ``save_dir``; files outside the folder are copied into
    ``decoders/``) and the decoder's feature columns, so that replay steps them again.
    """

    kind = "recorder"
    CRITICAL = False
    INPUTS = {
        "raw": PortSpec(maxlen=4096, policy="drop_oldest", message="chunk"),
        "features": PortSpec(maxlen=1024, policy="drop_oldest", message="features"),
        "intent": PortSpec(maxlen=1024, policy="drop_oldest", message="decoded_intent"),
        "bins": PortSpec(maxlen=1024, policy="drop_oldest", message="bin_row"),
        "cursor": PortSpec(maxlen=1024, policy="drop_oldest", message="cursor_state"),
        "events": PortSpec(maxlen=1024, policy="drop_oldest", message="events"),
        "phonemes": PortSpec(maxlen=1024, policy="drop_oldest", message="phoneme_frame",
                             doc="the phoneme decoder's log-probabilities (speech loop)"),
        "faults": PortSpec(maxlen=1024, policy="drop_oldest", message="fault"),
        "stim": PortSpec(maxlen=8192, policy="drop_oldest", message="stim_pulses",
                         doc="the pulses the stimulator delivered (stream stim_pulses)"),
        "stim_status": PortSpec(maxlen=1024, policy="drop_oldest", message="stim_status",
                                doc="the interlock's status (stream stim_status, events, its audit log)"),
        "operator": PortSpec(maxlen=256, policy="drop_oldest", message="operator_command",
                             doc="operator commands (record_start/stop)"),
    }
    PARAMS = {
        "out_dir": Param("str", None, nullable=True),
        "use": Param("str", None, nullable=True),
        "participant_id": Param("str", "sim-0001"),
        "raw": Param("bool", True),
        "on_full": Param("str", "drop", choices=("drop", "block", "fail")),
        "raw_codec": Param("str", "none", choices=("none", "rice", "range", "lms", "lms-fast")),
        "raw_codec_resync_records": Param("int", 30, lo=1),
        "record_dir": Param("str", None, nullable=True),
    }

    def setup(self) -> None:
        from cortexlink.core.types import ChannelMap

        p = self.params
        self._cmap, self._fs = None, None
        prod = self.ctx.producer(self.name, "raw")
        self._has_raw = prod is not None
        if prod is not None:
            info = self.ctx.wait_info(f"{prod}/stream")
            self._cmap, self._fs = ChannelMap.from_dict(info["channel_map"]), info["fs_hz"]
        self._dsp = self.ctx.producer(self.name, "features")
        self._dec = self.ctx.producer(self.name, "intent")
        self._sf = None
        if self._cmap is not None and self._dsp is not None:
            self._sf = self.ctx.wait_info(f"{self._dsp}/stream_features")
            self._all_names = list(self._sf["names"])
            self._bin_width = int(self._sf["bin_width_samples"])
        self.n_written = 0
        if not hasattr(self, "dropped"):
            self.dropped: dict[str, dict[str, int]] = {}       # per stream, over this run's recordings
        self._stim = None
        if "stim" in self.subs or "stim_status" in self.subs:
            from cortexlink.runtime.nodes._stim_record import StimRecord

            self._stim = StimRecord(self)
        self.rec = None
        self._stop_reported = False
        self._closer: threading.Thread | None = None
        self.path = None
        self.last: dict | None = None
        self.idle = "operator" in self.subs
        self.owned = p["use"] is None
        if self.idle:
            base = p["record_dir"] or (str(Path(self.ctx.out_dir) / "recordings") if self.ctx.out_dir is not None
                                       else str(Path("runs") / "recordings"))
            self.record_dir = Path(base)
            self._status()
            return
        if not self.owned:
            rec = self.ctx.objects.get(p["use"])
            if rec is None:
                raise ConfigError(f"nodes.{self.name}.params.use names {p['use']!r}, but the run was given no such "
                                  "object (GraphRunner(objects=...), in the main process)")
            self._attach(rec)
            return
        if p["out_dir"]:
            base = Path(p["out_dir"])
        elif self.ctx.out_dir is not None:
            base = Path(self.ctx.out_dir) / self.name
        else:
            raise ConfigError(f"nodes.{self.name}.params.out_dir is required when the run has no output "
                              "folder (give out_dir or --out)")
        out = base if self.n_restarts == 0 and self.n_failures == 0 else base.with_name(
            f"{base.name}-restart{self.n_failures}")
        self._open(out)

    def _open(self, out: Path) -> None:
        from cortexlink.core.outpath import check_output_dir
        from cortexlink.io.session_log import SessionRecorder

        check_output_dir(out, what="recording folder", create=False, new=True)   # see core.outpath
        p = self.params
        graph = {k: v for k, v in self.ctx.graph.items() if not k.startswith("_")}
        rec = SessionRecorder(out, channel_map=self._cmap, fs_hz=self._fs, config={"graph": graph},
                              participant_id=p["participant_id"], raw=p["raw"] and self._has_raw,
                              on_full=p["on_full"], catalogue=False, raw_codec=p["raw_codec"],
                              raw_codec_resync_records=p["raw_codec_resync_records"])
        self._attach(rec)

    def _attach(self, rec: Any) -> None:
        self.rec = rec
        self._stop_reported = False
        self.path = str(rec.path)
        self._cal_version = 0
        self._next_cal_check = 0.0
        if self._sf is not None:
            sf = self._sf
            cal = self.ctx.bus.get_info(f"{self._dsp}/calibration")
            self._cal_version = int(cal["version"]) if cal else 0
            # the calibration in force (thresholds, bad channels): replay uses it instead of calibrating on
            # the recording's first seconds, which a recording started mid-session does not share
            extra = {"stim_artifacts": sf["artifacts"]} if sf.get("artifacts") else {}
            rec.set_source(self._cmap, self._fs, dsp=sf["dsp"], dsp_calibration=cal, loop={
                "dt_s": self.ctx.bin_ms / 1000.0, "feature_kinds": sf.get("kinds"),
                "samples_per_bin": sf["bin_width_samples"]}, **extra)
        self._feature_cols: list[str] | None = None
        self._declared = False
        self._pending_start: dict | None = None
        self._live: dict[int, tuple] = {}
        self._t_open = time.monotonic()
        if self._stim is not None:
            self._stim.attach(rec)

    # -- operator commands (idle recorder) ----------------------------------------------------
    def _status(self) -> None:
        rec = self.rec
        st: dict[str, Any] = {"active": rec is not None, "last": self.last}
        if rec is not None:
            stats = rec.stats()
            streams = stats.get("streams", {})
            st.update({"dir": self.path, "seconds": time.monotonic() - self._t_open,
                       "bytes": int(sum(v.get("bytes", 0) for v in streams.values())),
                       "dropped": int(stats.get("dropped_total", 0)), "queue_bytes": int(stats.get("queue_bytes", 0)),
                       "stopped_reason": stats.get("stopped_reason")})
        self.ctx.bus.set_info(f"{self.name}/status", st)
        self._next_status = time.monotonic() + 0.5

    def _close(self) -> dict:
        rec, self.rec = self.rec, None
        self._finish_stim(rec)
        manifest = rec.close()
        self._count_drops(rec)
        self.last = {"dir": self.path, "state": manifest.get("state"), "streams": sorted(manifest.get("streams", {})),
                     "stopped_reason": manifest.get("stopped_reason")}
        return self.last

    def _check_stopped(self) -> bool:
        """The writer stopped by itself (disk full, a write error): raise a fault once, and close the
        recording (in a thread: its checksums must not hold up the loop); its status says why."""
        rec = self.rec
        reason = getattr(rec, "stopped_reason", None)
        if not reason or self._stop_reported:
            return False
        self._stop_reported = True
        path = self.path
        self.fault("recording_stopped", severity="warning", dir=path, reason=reason,
                   message=f"recording to {path} stopped: {reason}; everything written before it is intact "
                           "(free some space and start a new recording)")
        if not self.owned:
            return False                                # the caller closes it and reports
        self.rec = None
        self.last = {"dir": path, "state": "stopping", "stopped_reason": reason}

        def close() -> None:
            try:
                self._finish_stim(rec)
                m = rec.close()
                self._count_drops(rec)
                self.last = {"dir": path, "state": m.get("state"), "streams": sorted(m.get("streams", {})),
                             "stopped_reason": reason}
            except Exception as exc:  # noqa: BLE001 - reported in the status, the loop goes on
                self.last = {"dir": path, "state": "stopped", "stopped_reason": f"{reason}; close failed: {exc}"}

        self._closer = threading.Thread(target=close, name=f"cortexlink-{self.name}-close", daemon=True)
        self._closer.start()
        if self.idle:
            self._status()
        return True

    def _operator(self, cmd: dict) -> None:
        name = cmd.get("cmd") if isinstance(cmd, dict) else None
        if name not in ("record_start", "record_stop"):
            return
        if name == "record_stop":
            if self.rec is None:
                why = (self.last or {}).get("stopped_reason")
                self.reply(cmd, error="not recording" + (f" (the last recording stopped: {why})" if why else ""),
                           status=409)
            else:
                self.reply(cmd, {"recording": False, **self._close()})
            self._status()
            return
        if self.rec is not None:
            self.reply(cmd, error=f"already recording to {self.path}; stop it first", status=409)
            return
        import datetime as _dt

        from cortexlink.core.outpath import check_name

        try:
            name = check_name(cmd.get("name") or _dt.datetime.now().strftime("rec-%Y%m%d-%H%M%S"),
                              what="recording name")
        except ConfigError as exc:
            self.reply(cmd, error=str(exc), status=409)
            return
        out = self.record_dir / name
        if out.exists():
            self.reply(cmd, error=f"recording folder {out} already exists; choose another name", status=409)
            return
        try:
            self._open(out)
        except (OSError, ValueError) as exc:
            self.reply(cmd, error=f"cannot start recording in {out}: {exc}", status=409)
            return
        self._status()
        self.reply(cmd, {"recording": True, "dir": str(out)})

    # -- helpers ----------------------------------------------------------------------------
    def _finish_stim(self, rec: Any) -> None:
        if self._stim is not None:
            self._stim.finish(rec)

    def _decoder_files(self, version: int) -> tuple:
        """The recording's relative paths of decoder version ``version`` (copied in if needed)."""
        if version in self._live:
            return self._live[version]
        info = (self.ctx.bus.get_info(f"{self._dec}/models") or {}) if self._dec else {}
        v = info.get(str(version)) or {}
        files = []
        for key in ("decoder_file", "click_file"):
            f = v.get(key)
            if not f:
                files.append(None)
                continue
            src = Path(f)
            root = Path(self.rec.path)
            try:
                rel = src.resolve().relative_to(root.resolve())
            except ValueError:
                (root / "decoders").mkdir(exist_ok=True)
                dst = root / "decoders" / src.name
                shutil.copyfile(src, dst)
                rel = dst.relative_to(root)
            files.append(rel.as_posix())
            self.rec.event("decoder", sample=int(v.get("sample", -1)), name=src.stem, file=rel.as_posix(),
                           decoder_class=v.get("classes", {}).get(key), version=version)
        self._live[version] = tuple(files)
        return self._live[version]

    def _output_stage(self, version: int | None) -> dict:
        """What decoder version ``version`` did to its output: ``speed_gain``,
        ``click_freeze_proba`` and ``bias_correction`` (None: nothing), for replay."""
        keys = ("speed_gain", "click_freeze_proba", "bias_correction")
        if version is None or not self._dec:
            return dict.fromkeys(keys)
        v = (self.ctx.bus.get_info(f"{self._dec}/models") or {}).get(str(version)) or {}
        return {k: v.get(k) for k in keys}

    def _write_start(self, e: dict, sample: int, version: int | None) -> None:
        files = (None, None) if version is None else self._decoder_files(version)
        cols = None
        if self._dsp is not None:
            info = self.ctx.bus.get_info(f"{self._dsp}/features") or {}
            cols = info.get("columns")
        self.rec.event("block_start", sample=sample, name=e["name"], mode=e.get("mode"), task=e.get("task"),
                       block_kind=e.get("block_kind"), feature_columns=cols, decoder_file=files[0],
                       click_decoder_file=files[1], **self._output_stage(version),
                       **{k: e[k] for k in ("split", "n_sentences") if k in e})   # a speech block's sentence pool

    # -- step -------------------------------------------------------------------------------
    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        from cortexlink.io.session_log import STREAM_COLUMNS

        for m in inbox.get("operator", ()):
            self._operator(m.payload)
        if self.rec is not None and self._check_stopped():
            return
        if self._closer is not None and not self._closer.is_alive():
            self._closer = None
            if self.idle:
                self._status()                          # the stopped recording's final state
        rec = self.rec
        if self.idle and (rec is None or time.monotonic() >= self._next_status):
            if rec is not None:
                self._status()
        if rec is None:
            return
        if self._sf is not None and time.monotonic() >= self._next_cal_check:
            self._next_cal_check = time.monotonic() + 0.2
            cal = self.ctx.bus.get_info(f"{self._dsp}/calibration")
            if cal and int(cal["version"]) > self._cal_version:      # a (re)calibration completed
                self._cal_version = int(cal["version"])
                a = cal.get("armed_at_sample")
                rec.event("dsp_calibration", sample=-1 if a is None else int(a), **cal)
        for m in inbox.get("raw", ()):
            if self.params["raw"]:
                rec.write_raw(m.payload)
                self.n_written += 1
        for m in inbox.get("features", ()):
            p = m.payload
            row = p.row
            if row is not None:
                if not self._declared:
                    rec.declare("features", kind="array", dtype="float32", columns=self._all_names,
                                rate_hz=rec.fs_hz, bin_width_samples=self._bin_width)
                    self._declared = True
                rec.write_array("features", p.bin_start, row.reshape(1, -1), host_time_ns=m.t_enter_ns)
                self.n_written += 1
                continue
            x = p.x
            if x is None:
                continue
            if self._feature_cols is None:
                info = self.ctx.bus.get_info(f"{self._dsp}/features") if self._dsp else None
                self._feature_cols = list(info["names"]) if info else [f"f{i}" for i in range(len(x))]
            rec.write_array("features", p.bin_start, x, columns=self._feature_cols,
                            host_time_ns=m.t_enter_ns)
            self.n_written += 1
        for m in inbox.get("events", ()):
            e = dict(m.payload)
            kind = str(e.pop("kind", "event"))
            e.pop("sample", None)
            if kind == "block_start":
                if e.get("mode") == "closed":
                    # the decoder files that are live are known at the block's first decoded bin
                    self._pending_start = {"event": m.payload, "sample": m.sample}
                else:
                    self._write_start(m.payload, m.sample, None)
                continue
            ps = self._pending_start
            if kind == "block_end" and ps is not None and ps["event"]["name"] == e.get("name"):
                self._pending_start = None                      # ended before any decoded bin
                self._write_start(ps["event"], ps["sample"], None)
            if kind == "task":
                e = {"block": e.get("block"), "t_s": e.get("t_s"), "task_event": e.get("event"), "data": e.get("data")}
            rec.event(kind, sample=m.sample, **e)
            self.n_written += 1
        for m in inbox.get("intent", ()):
            p = m.payload
            if not p.ready:
                continue
            ps = self._pending_start
            if ps is not None and p.bin >= int(ps["event"].get("bin", 0)):
                self._pending_start = None
                self._write_start(ps["event"], ps["sample"], p.version)
            v = p.velocity
            proba = p.proba
            rec.write_row("decoder", m.sample, (v[0], v[1], math.nan if proba is None else float(proba),
                                                float(bool(p.click))),
                          columns=STREAM_COLUMNS["decoder"], host_time_ns=m.t_enter_ns)
            self.n_written += 1
        for m in inbox.get("bins", ()):
            r = m.payload
            xy, v = r.cursor_xy, r.cursor_velocity
            rec.write_row("cursor", m.sample, (xy[0], xy[1], v[0], v[1], float(r.clicks), float(r.halted)),
                          columns=STREAM_COLUMNS["cursor"], host_time_ns=m.t_enter_ns)
            iv = r.intended_velocity
            rec.write_row("intent", m.sample, (iv[0], iv[1], r.click_intent), columns=STREAM_COLUMNS["intent"],
                          host_time_ns=m.t_enter_ns)
            self.n_written += 2
        for m in inbox.get("cursor", ()):
            s = m.payload
            rec.write_row("cursor", m.sample, (s.xy[0], s.xy[1], s.velocity[0], s.velocity[1],
                                               float(s.clicked), float(s.halted)),
                          columns=STREAM_COLUMNS["cursor"], host_time_ns=m.t_enter_ns)
            self.n_written += 1
        for m in inbox.get("phonemes", ()):
            f = m.payload
            for row in (f.logprobs if f.n_rows else ()):
                rec.write_row("phonemes", m.sample, row, columns=STREAM_COLUMNS["phonemes"], host_time_ns=m.t_enter_ns)
                self.n_written += 1
        if self._stim is not None:
            self.n_written += self._stim.pulses(rec, inbox.get("stim", ()))
            self.n_written += self._stim.status(rec, inbox.get("stim_status", ()))
        for m in inbox.get("faults", ()):
            e = dict(m.payload)
            e.pop("sample", None)
            rec.event("fault", sample=m.sample, **{("fault_kind" if k == "kind" else k): v for k, v in e.items()})
            self.n_written += 1

    def teardown(self) -> None:
        closer = getattr(self, "_closer", None)
        if closer is not None:
            closer.join(60.0)
        rec = getattr(self, "rec", None)
        if rec is not None:
            if self.owned:
                self._close()
            else:
                self._finish_stim(rec)              # the caller closes it
                self._count_drops(rec)
            self.rec = None

    def _count_drops(self, rec: Any) -> None:
        """Add what ``rec``'s writer dropped (queue full) to :attr:`dropped`."""
        for name, st in rec.stats()["streams"].items():
            if st["dropped"]:
                d = self.dropped.setdefault(name, {"items": 0, "rows": 0})
                d["items"] += int(st["dropped"])
                d["rows"] += int(st["dropped_rows"])

    def summary(self) -> dict:
        """The last recording's path, the records written, and what the recorder's writer dropped
        (``dropped``: items and rows per stream, ``dropped_total``: items) over every recording this
        node wrote in the run, as the manifests' ``dropped`` count them."""
        dropped = {k: dict(v) for k, v in getattr(self, "dropped", {}).items()}
        return {"path": getattr(self, "path", None), "n_written": getattr(self, "n_written", 0),
                "dropped": dropped, "dropped_total": sum(v["items"] for v in dropped.values())}
