"""``dsp``: feature extraction, one ``features`` message per bin."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.messages import FeatureBin
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node
from cortexlink.runtime.nodes._common import logger
from cortexlink.runtime.nodes.sources import ReplaySource, SimSource
from cortexlink.runtime.stats import LatencyStats

__all__ = ["DspNode"]


@register_node
class DspNode(Node):
    """Feature extraction: one ``features`` message per completed bin of the graph's ``bin_ms``.

    Parameters (``params``)
    -----------------------
    extractor : dict
        :class:`~cortexlink.dsp.FeatureExtractor` keyword arguments (``reference``,
        ``threshold_rms``, ``calibration_s``, ``band_hz``, ``backend``, ...; not ``bin_ms``,
        which is the graph's).
    feature_kinds : list of {"tx", "sbp", "lfp", "su"} or None
        Columns given to the decoder; default: both ``tx`` and ``sbp``
        up to 128 channels, ``sbp`` above (and ``su`` with ``units``).
    units : str or None
        A unit templates file (:meth:`cortexlink.dsp.units.UnitTemplates.save`, fitted with
        ``cortexlink units fit`` from a sorting): the extractor is wrapped in a
        :class:`~cortexlink.dsp.units.UnitFeatureExtractor`, so every bin also counts each sorted
        unit's spikes (``"<unit>/su"``); ``su`` in ``feature_kinds`` gives them to the decoder
        (units whose main channel is bad at calibration are left out, like bad channels).
    exclude_bad : bool
        Leave out the bad channels found at calibration.
    raster : int
        Also send, per bin, ``raster``: the threshold crossings of the first this many channels
        as uint8 (for traces and rasters; 0: none).
    full_rows : bool
        Also send, per bin, ``row``: every feature of every channel (float32, NaN where invalid),
        for a recorder that keeps the whole feature stream.
    artifacts : dict
        With the ``stim`` input connected (the pulses the stimulator delivered): keyword
        arguments of :class:`~cortexlink.dsp.artifacts.StimArtifactRemover` (``mode``: ``blank``,
        ``template`` or ``blank+template``; ``blank_pre_ms``, ``blank_post_ms``…), which cleans
        every raw chunk before the extractor so that artefacts do not become threshold crossings.
        ``mode: none`` leaves the artefacts in (for comparison). With ``compensate: true`` a
        bin's threshold crossings and spike-band power are scaled to rates over the samples that
        were not blanked (W / (W − blanked), at most 10x). Off by default: with the remover's
        zero-order-hold fill the hold's edges themselves add crossings and band power (measured:
        10 electrodes pulsing together at 100 Hz, 20 % of the time blanked, gave 1.12x the
        crossings and 0.91x the band power of the same recording without stimulation), so the
        scaling over-corrects.

    The extractor's parameters and every feature name are published under ``<name>/stream_features``
    at set-up (``dsp``: :meth:`~cortexlink.dsp.FeatureExtractor.get_params` without the channel
    map; ``names``; ``bin_width_samples``). Each time the noise calibration completes, its
    figures are published under ``<name>/noise`` (``version``, ``noise_rms_uv``, ``bad``: channel
    indices) and, exactly, under ``<name>/calibration`` (``version``, ``noise_rms_uv``,
    ``thresholds_uv``, ``bad``/``flat``/``saturated``/``nonfinite`` indices, ``n_samples``,
    ``armed_at_sample``: the first sample of a recalibration's window, None for the first), which
    a recorder stores so that replay reproduces the live features. With the ``operator`` input (``operator.commands``), the command
    ``recalibrate_noise`` re-estimates noise RMS, thresholds and bad channels from the next
    ``calibration_s`` of data (the decoder columns stay as they are). The decoder columns are fixed when the extractor's calibration completes and published under
    ``<name>/features`` (names, bad channels). Deadline: a chunk that completes no bin must be
    processed within ``deadline_ms`` of entering the graph (else ``n_missed``); one that completes
    a bin is checked at the cursor. In a child process restarted after a crash, the node puts back
    the calibration its previous process published (same thresholds, bad channels and decoder
    columns, so the decoder's features do not change under it; not with ``reference: lrr``).
    """

    kind = "dsp"
    INPUTS = {"raw": PortSpec(maxlen=256, policy="drop_oldest", required=True, message="chunk"),
              "operator": PortSpec(maxlen=256, policy="drop_oldest", message="operator_command", doc="operator commands (recalibrate_noise)"),
              "stim": PortSpec(maxlen=4096, policy="drop_oldest", message="stim_pulses",
                               doc="pulses delivered by the stimulator: their artefacts are removed before extraction")}
    OUTPUTS = {"features": "features"}
    PARAMS = {
        "extractor": Param("dict", {}),
        "feature_kinds": Param("list", None, nullable=True),
        "exclude_bad": Param("bool", True),
        "raster": Param("int", 0, lo=0),
        "full_rows": Param("bool", False),
        "artifacts": Param("dict", {"mode": "blank"}),
        "units": Param("str", None, nullable=True),
    }

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        fk = params["feature_kinds"]
        if fk is not None and (not fk or any(k not in ("tx", "sbp", "lfp", "su") for k in fk)):
            raise ConfigError(f"nodes.{name}.params.feature_kinds must be a non-empty list drawn from "
                              f"['tx', 'sbp', 'lfp', 'su']; got {fk!r}")
        if fk is not None and "su" in fk and not params["units"]:
            raise ConfigError(f"nodes.{name}.params.feature_kinds has 'su' (sorted units) but no units file is "
                              "given (params.units)")
        if params["units"]:
            from pathlib import Path

            from cortexlink.dsp.units import UnitTemplates

            try:
                UnitTemplates.load(Path(params["units"]).expanduser())
            except ValidationError as exc:
                raise ConfigError(f"nodes.{name}.params.units: {exc}") from exc
        if "bin_ms" in params["extractor"] or "channel_map" in params["extractor"]:
            raise ConfigError(f"nodes.{name}.params.extractor must not set bin_ms or channel_map "
                              "(bin_ms is the graph's; the channel map comes from the source)")
        src = graph["nodes"][name]["inputs"].get("raw")
        if src is not None:
            prod = graph["nodes"].get(src["from"].split(".", 1)[0], {})
            fs = None
            if prod.get("kind") == "sim_source":
                fs = SimSource.implant_fs(prod["params"])
            elif prod.get("kind") == "replay_source":
                fs = ReplaySource.known_fs(prod["params"])
            if fs is not None:
                n = graph["bin_ms"] * fs / 1000.0
                if abs(n - round(n)) > 1e-6 or round(n) < 1:
                    raise ConfigError(f"bin_ms must be a whole number of samples at the source's {fs:g} Hz "
                                      f"(a multiple of {1000.0 / fs:g} ms); got {graph['bin_ms']!r} for node {name}")
                from cortexlink.core.types import ChannelMap
                from cortexlink.dsp import FeatureExtractor

                try:
                    FeatureExtractor(ChannelMap.grid(2), fs, bin_ms=graph["bin_ms"], **params["extractor"])
                except (ConfigError, TypeError) as exc:
                    raise ConfigError(f"nodes.{name}.params.extractor is invalid: {exc}") from exc

    def setup(self) -> None:
        from cortexlink.core.types import ChannelMap
        from cortexlink.dsp import FeatureExtractor

        prod = self.ctx.producer(self.name, "raw")
        info = self.ctx.wait_info(f"{prod}/stream")
        cmap = ChannelMap.from_dict(info["channel_map"])
        try:
            self.fx = FeatureExtractor(cmap, info["fs_hz"], bin_ms=self.ctx.bin_ms, **self.params["extractor"])
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"nodes.{self.name}.params.extractor is invalid: {exc}") from exc
        self._unit_primary: dict[str, int] = {}
        if self.params["units"]:
            from pathlib import Path

            from cortexlink.dsp.units import UnitFeatureExtractor, UnitTemplates

            t = UnitTemplates.load(Path(self.params["units"]).expanduser())
            try:
                self.fx = UnitFeatureExtractor(self.fx, t)
            except ConfigError as exc:
                raise ConfigError(f"nodes.{self.name}.params.units does not fit this stream: {exc}") from exc
            self._unit_primary = {u: int(p) for u, p in zip(t.unit_ids, t.primary)}
        n = cmap.n_channels
        fk = self.params["feature_kinds"]
        self.kinds = tuple(fk) if fk else (("tx", "sbp") if n <= 128 else ("sbp",)) + (("su",) if self._unit_primary else ())
        self.W = self.fx.bin_width_samples
        self.cols: np.ndarray | None = None
        self.names: tuple[str, ...] = ()
        names = self.fx.feature_names
        tx = [i for i, nm in enumerate(names) if nm.endswith("/tx")][:self.params["raster"]]
        self.raster_cols = np.asarray(tx, dtype=np.intp) if tx else None
        self.full_rows = self.params["full_rows"]
        self.ctx.bus.set_info(f"{self.name}/stream_features", {
            "dsp": {k: v for k, v in self.fx.get_params().items() if k != "channel_map"},
            "names": list(names), "bin_width_samples": int(self.W), "fs_hz": float(self.fx.fs_hz),
            "kinds": list(self.kinds), "raster_channels": len(tx), "artifacts": self._artifacts_info()})
        self.remover = None
        art = dict(self.params["artifacts"])
        self.compensate = bool(art.pop("compensate", False))
        self._blanked_per_bin: dict[int, int] = {}
        self._rate_cols: tuple | None = None          # (names, the tx/sbp columns among them)
        if "stim" in self.subs and art.get("mode", "blank") != "none":
            from cortexlink.dsp.artifacts import StimArtifactRemover

            try:
                self.remover = StimArtifactRemover(n, info["fs_hz"], **art)
            except (ConfigError, TypeError) as exc:
                raise ConfigError(f"nodes.{self.name}.params.artifacts is invalid: {exc}") from exc
        self._cal_obj = None
        self._noise_version = 0
        self._armed_at: int | None = None              # where the calibration in progress began (None: at the start)
        self._next_sample: int | None = None
        if not hasattr(self, "g"):                         # a restart recalibrates but keeps counting bins
            self.g = 0
            self.chunk_stats = LatencyStats(1 << 20)
            if self.ctx.journal(self.name) is not None:      # a child process: restarted after a crash?
                from cortexlink.runtime.nodes._journaled import restore_dsp_calibration

                restore_dsp_calibration(self)

    def _fix_columns(self) -> None:
        bad = np.asarray(self.fx.bad_channels_, bool)
        ids = self.fx.channel_map.channel_ids
        bad_ids = {ids[i] for i in np.flatnonzero(bad)} if self.params["exclude_bad"] else set()
        bad_units = {u for u, p in self._unit_primary.items() if bad[p]}    # a unit on a bad channel
        names = self.fx.feature_names

        def left_out(nm: str) -> bool:
            head, kind = nm.rsplit("/", 1)
            return head in bad_units if kind == "su" else nm.split("/", 1)[0] in bad_ids

        cols = [i for i, nm in enumerate(names) if nm.rsplit("/", 1)[-1] in self.kinds and not left_out(nm)]
        self.cols = np.asarray(cols, dtype=np.intp)
        self.names = tuple(names[i] for i in cols)
        self.ctx.bus.set_info(f"{self.name}/features", {
            "names": list(self.names), "columns": [int(c) for c in cols], "kinds": list(self.kinds), "bin_ms": self.ctx.bin_ms,
            "fs_hz": self.fx.fs_hz, "bad_channels": [ids[i] for i in np.flatnonzero(bad)]})
        logger.info("%s: %d decoder features (%s), %d bad channels left out", self.name, len(cols),
                    "+".join(self.kinds), len(bad_ids))

    def _publish_noise(self) -> None:
        fx = self.fx
        cal = self._cal_obj = fx.calibration_
        self._noise_version += 1
        rms = np.round(np.asarray(fx.noise_rms_uv_, float), 2)
        self.ctx.bus.set_info(f"{self.name}/noise", {
            "version": self._noise_version, "noise_rms_uv": [v if np.isfinite(v) else None for v in rms.tolist()],
            "bad": [int(i) for i in np.flatnonzero(fx.bad_channels_)]})

        def exact(a: np.ndarray) -> list:
            return [float(v) if np.isfinite(v) else None for v in np.asarray(a, np.float64).tolist()]

        # the exact figures (a recording started later stores them, so that replay reproduces the features)
        self.ctx.bus.set_info(f"{self.name}/calibration", {
            "version": self._noise_version, "armed_at_sample": self._armed_at,
            "noise_rms_uv": exact(cal.noise_rms_uv), "thresholds_uv": exact(cal.thresholds_uv),
            **{k: [int(i) for i in np.flatnonzero(getattr(cal, k))] for k in ("bad", "flat", "saturated", "nonfinite")},
            "n_samples": int(cal.n_samples), "has_lrr_matrix": cal.lrr_matrix is not None})

    def _operator(self, cmd: dict) -> None:
        if not isinstance(cmd, dict) or cmd.get("cmd") != "recalibrate_noise":
            return
        self.fx.recalibrate()
        self._armed_at = self._next_sample           # the window starts with the next chunk
        self.reply(cmd, {"recalibrating_s": float(self.fx.calibration_s)})

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        stats_from = self.ctx.stats_from_sample
        deadline = self.ctx.deadline_ns
        for m in inbox.get("operator", ()):
            self._operator(m.payload)
        if self.remover is not None:
            from cortexlink.core.pulses import pulses_from_dict

            for m in inbox.get("stim", ()):
                self.remover.schedule(pulses_from_dict(m.payload))
        for m in inbox.get("raw", ()):
            chunk = m.payload if self.remover is None else self._clean(m.payload)
            bf = self.fx.step(chunk)
            self._next_sample = m.payload.end_sample
            if self.cols is None and self.fx.is_calibrated:
                self._fix_columns()
            if self.fx.is_calibrated and self.fx.calibration_ is not self._cal_obj:
                self._publish_noise()
            for i in range(bf.n_bins):
                x = None
                start = int(bf.bin_start_samples[i])
                if self.cols is not None:
                    x = bf.data[i][self.cols]
                    if self._blanked_per_bin:
                        self._compensate(x, start)
                    x.flags.writeable = False
                valid = x is not None and bool(bf.valid[i].any())
                raster = row = None
                if self.raster_cols is not None:
                    r = bf.data[i][self.raster_cols]
                    raster = np.where(np.isfinite(r), np.minimum(r, 255), 0).astype(np.uint8)
                if self.full_rows:
                    row = bf.data[i]
                    row.flags.writeable = False
                self.emit("features", FeatureBin(self.g, start, x, valid, raster, row), sample=start + self.W, t_enter_ns=m.t_enter_ns)
                self.g += 1
            if m.sample >= stats_from and m.t_enter_ns:
                lat = time.monotonic_ns() - m.t_enter_ns
                self.chunk_stats.add(lat)
                if bf.n_bins == 0 and lat > deadline:
                    self.n_missed += 1

    def _artifacts_info(self) -> dict | None:
        """The artefact removal in force (None: none), for the recording's manifest and replay."""
        if "stim" not in self.subs:
            return None
        return {**dict(self.params["artifacts"]), "compensate": bool(self.params["artifacts"].get("compensate", False))}

    def _clean(self, chunk: Any) -> Any:
        """Artefact removal; note how many samples of each bin were blanked (for compensation)."""
        out = self.remover.step(chunk)
        mask = self.remover.blank_mask_last_
        if self.compensate and mask is not None:
            rows = np.flatnonzero(mask) + chunk.start_sample
            bins, counts = np.unique(rows // self.W, return_counts=True)
            for b, c in zip(bins.tolist(), counts.tolist()):
                self._blanked_per_bin[b] = self._blanked_per_bin.get(b, 0) + c
        return out

    def _compensate(self, x: np.ndarray, start: int) -> None:
        """Scale the bin's crossings and spike-band power to rates over its unblanked samples."""
        b = start // self.W
        for old in [k for k in self._blanked_per_bin if k < b]:
            del self._blanked_per_bin[old]
        blanked = self._blanked_per_bin.pop(b, 0)
        if blanked:
            if self._rate_cols is None or len(self._rate_cols[0]) != len(self.names):
                rate = [i for i, nm in enumerate(self.names) if nm.rsplit("/", 1)[-1] in ("tx", "sbp")]
                self._rate_cols = (self.names, np.asarray(rate, dtype=np.intp))
            x[self._rate_cols[1]] *= self.W / max(self.W - blanked, self.W / 10.0)

    def summary(self) -> dict:
        art = None if self.remover is None else {"mode": self.remover.mode,
                                                 "blanked_samples": int(self.remover.n_blanked_samples_),
                                                 "late_pulses": int(self.remover.n_late_pulses_)}
        return {"n_features": len(self.names), "n_bins": self.g, "chunk_latency": self.chunk_stats.summary(),
                "artifacts": art,
                "fx": dict(self.fx.counters_) if hasattr(self.fx, "counters_") else {}}
