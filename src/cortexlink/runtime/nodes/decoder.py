"""``decoder``: velocity (and click) decoding, calibrated or refitted in session."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.messages import Control
from cortexlink.core.types import Intent
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node
from cortexlink.runtime.nodes._common import _NAN2, logger
from cortexlink.runtime.stats import LatencyStats

__all__ = ["DecoderNode"]


def _trace(**arrays: Any) -> SimpleNamespace:
    return SimpleNamespace(**arrays)


def _kinematics(kin: dict | None, bins: list, labels: str, node: str) -> dict:
    """The cursor's kinematics (``cursor_velocity``, ``cursor_xy``, ``target_xy``) on ``bins``,
    from the calibration block's record the cursor sent with ``fit`` (NaN where a bin is missing)."""
    if kin is None:
        if labels == "intent":
            return {}
        raise ConfigError(f"nodes.{node}: labels {labels!r} need the calibration's cursor kinematics, and the fit "
                          "command carried none for this block (use labels: intent, or a cursor node's fit)")
    where = {int(b): i for i, b in enumerate(np.asarray(kin["bins"], np.int64).tolist())}
    idx = np.array([where.get(int(b), -1) for b in bins], np.int64)
    out = {}
    for key in ("cursor_velocity", "cursor_xy", "target_xy"):
        src = np.asarray(kin[key], float).reshape(-1, 2)
        arr = np.full((len(bins), 2), np.nan)
        arr[idx >= 0] = src[idx[idx >= 0]]
        out[key] = arr
    return out


#: Default ``click_freeze_proba``: the click decoder's ``off_threshold``, where evidence for a click
#: starts to count. Measured when the freeze was added (the ``default`` preset, click threshold
#: 0.7), Webgrid 30 x 30, 60 s: Kalman 256 ch seed 0 3.43 -> 5.40 bps (wrong clicks 5 -> 3);
#: 1,024 ch seeds 0-2 ReFIT-Kalman 7.03 +- 0.33 bps at 100 % accuracy. On the ``cortex`` preset
#: now: ``cortexlink bench closed-loop --channels 256 --decoders kalman --variants default
#: no_click_freeze`` (3.11 vs 2.78 bps, seeds 0-2).
CLICK_FREEZE_PROBA = 0.3
#: Default ``velocity_tau_s``: the Kalman filter's velocity prior decorrelates in 60 ms, about the
#: time a person steering a cursor takes to start a correction, instead of the autopilot's slow
#: kinematics the calibration labels carry (whose fitted dynamics made the filter smooth for an
#: offline R², a slow cursor). Webgrid 30 x 30, ``cortex`` preset, Kalman, seeds 0-2, fitted
#: dynamics vs 40 / 60 / 100 ms: 96 ch 1.85 vs 1.63 / 2.67 / 2.02 bps; 1,024 ch 4.20 vs
#: 5.34 / 5.23 / 5.12 (``bench closed-loop --variants fitted_dynamics`` is the ablation row).
VELOCITY_TAU_S = 0.06


@register_node
class DecoderNode(Node):
    """Velocity (and click) decoding, one ``intent`` per ``features`` message.

    Parameters (``params``)
    -----------------------
    decoder : {"wiener", "kalman", "refit_kalman", "gru"}
        Kind fitted in session (``fit`` / ``refit`` control messages).
    decoder_params : dict
        Its hyperparameters.
    path : str or None
        A decoder saved with ``decoder.save`` to load instead (ready at once; its feature names
        are checked against the dsp's when the first calibrated bin arrives).
    click : bool
        Fit a :class:`~cortexlink.decoders.ClickDecoder` with the velocity decoder.
    click_params : dict
    click_path : str or None
        A saved click decoder to load.
    save_dir : str or None
        Save every fitted decoder there (``<name>-v<k>.npz``, ``<name>-click-v<k>.npz``); the files
        of each version are published under ``<name>/models`` (a recorder names them in its
        ``block_start`` events, for replay).
    fit_in_thread : bool or None
        Fit in a background thread (the loop keeps running; the cursor is held until the new
        decoder is ready). Default: in ``clock: realtime`` runs.
    labels : {"target", "cursor", "intent"}
        Calibration velocity labels (:mod:`cortexlink.decoders.labels`): ``target`` (default:
        the direction to the target at the cursor's speed) and ``cursor`` come from the cursor's
        record, sent with the ``fit`` command; ``intent`` is the simulated participant's true
        intent (an oracle, for an upper bound).
    label_lag_s : float or None
        Lag of the labels behind the features, seconds; None (default) chooses it from the data.
    speed_gain : None, "auto" or float
        A speed-dependent gain on the decoded velocity
        (:class:`~cortexlink.decoders.speed_gain.SpeedGain`): ``auto`` sets its half-gain speed
        from the rest noise measured at each fit (the default), a number sets it (screen units/s),
        null turns it off.
    velocity_tau_s : float or None
        Kalman kinds: the correlation time of the filter's velocity prior, seconds (default
        :data:`VELOCITY_TAU_S`; :func:`~cortexlink.decoders.fitting.fit_decoders`); None fits the
        dynamics to the calibration labels (an autopilot's smooth kinematics: a slow cursor).
    refit_with_calibration : bool
        ReFIT refits the observation model on the last fit's calibration bins (rebuilt from the
        kept calibration blocks with the fit's labels and lag, also after a restart or a
        recovery from the journal) together with the closed-loop bins and their re-estimated
        intention (default True). False: the closed-loop bins alone, as Gilja et al. 2012.
        Ignored under SmoothBatch (``refit_half_life_s``), which fits each batch alone.
    refit_intent_lag_s : "auto", float or None
        ReFIT re-estimates the intention of each closed-loop bin from where the cursor was this
        long before (the participant's visual delay and cortical lag: the features of a bin carry
        an intention formed on an earlier view): ``auto`` (default) chooses the lag from the
        closed-loop data by ridge R², as the calibration's label lag is chosen; a number sets it
        (0 to 1 s); None is Gilja et al.'s current cursor position.
    click_freeze_proba : float or None
        Hold the cursor still (velocity zero) while the click decoder's filtered probability is
        at least this or its click state is on: the cursor does not drift off the target while
        the click builds up and lands. Default :data:`CLICK_FREEZE_PROBA`; None: never.
    bias_tau_s : float or None
        Bias correction (Jarosiewicz et al. 2015; :class:`~cortexlink.decoders.speed_gain.
        BiasCorrector`): the running mean of the fast decoded velocities over this time constant
        is subtracted from the output (reset at each block start). None (default): off.
    refit_half_life_s : float or None
        SmoothBatch (Orsborn et al. 2012): each ``refit`` fits the observation model on the
        closed-loop bins since the last one alone and blends it with the current model, keeping
        ``0.5 ** (batch seconds / half-life)`` of the current. None (default): ReFIT's refit.

    Without a ``control`` input the node decodes every bin (once a decoder is loaded). With one,
    it follows the cursor's blocks: ``open`` blocks collect training data (features + the
    participant's intent from ``labels``), ``closed`` blocks decode (state reset at each block
    start), ``fit`` fits on every open block so far, ``refit`` re-estimates ReFIT-Kalman from the
    closed-loop blocks since the last fit (:mod:`cortexlink.decoders.fitting`). A ``fit``/``refit``
    with ``job: true`` (an operator's, from an interactive cursor) is a *job*: its failure is
    reported instead of failing the node (a fit without click intents leaves the click decoder
    out, with a note), and each finished job counts ``n_jobs`` in the ``intent`` messages and
    is described under ``<name>/job`` (``{"job", "ok", "error" | "n_bins", "seconds", "version"}``).
    A scheduled fit or refit that fails is reported the same way (with ``"operator": false``) and
    the cursor ends the run on it, naming the error, instead of waiting for a decoder that never
    comes.

    In a child process the node journals what it must not lose (:mod:`cortexlink.runtime.journal`):
    every control message it applied, the bins of the block in progress, each fitted model and its
    job count. If the process dies and is restarted, the node comes back with its calibration and
    closed-loop bins, the block in progress and the fitted decoder, applies the control messages
    it missed (a block that ended, a fit asked for meanwhile) and reports a ``decoder_recovered``
    event; only the bins that arrived while the process was down are lost.
    """

    kind = "decoder"
    INPUTS = {
        "features": PortSpec(maxlen=256, policy="drop_oldest", required=True, message="features"),
        "labels": PortSpec(maxlen=1024, policy="drop_oldest", message="participant_intent",
                           doc="participant intent (training labels)"),
        "control": PortSpec(maxlen=64, policy="fail", feedback=True, message="control", replay=True,
                            doc="block begin/end, fit, refit"),
    }
    OUTPUTS = {"intent": "decoded_intent"}
    PARAMS = {
        "decoder": Param("str", "kalman", choices=("wiener", "kalman", "refit_kalman", "gru")),
        "decoder_params": Param("dict", {}),
        "path": Param("str", None, nullable=True),
        "click": Param("bool", True),
        "click_params": Param("dict", {}),
        "click_path": Param("str", None, nullable=True),
        "save_dir": Param("str", None, nullable=True),
        "fit_in_thread": Param("bool", None, nullable=True),
        # the choices are cortexlink.decoders.labels.LABELS (a test keeps them equal; not imported
        # here: the decoders package loads scikit-learn)
        "labels": Param("str", "target", choices=("target", "cursor", "intent")),
        "label_lag_s": Param("float", None, nullable=True, lo=0.0, hi=1.0),
        "speed_gain": Param("any", "auto", nullable=True),
        "velocity_tau_s": Param("float", VELOCITY_TAU_S, nullable=True, lo=0.001, hi=10.0),
        "refit_with_calibration": Param("bool", True),
        "refit_intent_lag_s": Param("any", "auto", nullable=True),
        "click_freeze_proba": Param("float", CLICK_FREEZE_PROBA, nullable=True, lo=0.0, hi=1.0),
        "bias_tau_s": Param("float", None, nullable=True, lo=0.1, hi=3600.0),
        "refit_half_life_s": Param("float", None, nullable=True, lo=0.1, hi=36000.0),
    }
    INJECT = {**Node.INJECT,
              "nan_at_bins": Param("list", [], doc="bins whose velocity output is NaN (with a click onset)"),
              "out_of_range_at_bins": Param("list", [], doc="bins whose velocity output is 1000 units/s "
                                                            "(with a click onset)")}

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        from cortexlink.decoders.fitting import make_click_decoder, make_decoder

        try:
            make_decoder(params["decoder"], params["decoder_params"])
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"nodes.{name}.params.decoder_params is invalid for {params['decoder']}: {exc}") from exc
        try:
            make_click_decoder(params["click_params"])
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"nodes.{name}.params.click_params is invalid: {exc}") from exc
        from cortexlink.decoders.speed_gain import check_speed_gain

        check_speed_gain(f"nodes.{name}.params.speed_gain", params["speed_gain"])
        from cortexlink.decoders.fitting import check_intent_lag

        check_intent_lag(f"nodes.{name}.params.refit_intent_lag_s", params["refit_intent_lag_s"])
        for key in ("path", "click_path"):
            if params[key] is not None and not Path(params[key]).is_file():
                raise ConfigError(f"nodes.{name}.params.{key} {params[key]} does not exist")

    def setup(self) -> None:
        from cortexlink.decoders import load
        from cortexlink.decoders.fitting import make_decoder
        from cortexlink.decoders.speed_gain import output_stage

        p = self.params
        self._output_stage = output_stage
        self._thread = None
        self._new = None
        if getattr(self, "_set_up", False):
            # a restart keeps the fitted decoders, the training data and the block (their state is
            # reset, as at a block start)
            if self.fitted:
                self.decoder.reset_state()
            if self.click_dec is not None:
                self.click_dec.reset_state()
            return
        self._set_up = True
        #: What the last fit was trained on (calibration kinematics, label lag in bins, block names):
        #: ReFIT rebuilds that training set from ``calib`` and refits on it and the closed loop.
        self._fit_src: tuple | None = None
        self.decoder = make_decoder(p["decoder"], p["decoder_params"])
        self.click_dec = None
        self.speed_gain = None
        self.bias = None
        self.version = 0
        self.fitted = False
        if p["path"]:
            self.decoder = load(p["path"])
            self.fitted = True
            self.version = 1
        if p["click_path"]:
            self.click_dec = load(p["click_path"])
        self.has_control = "control" in self.subs
        self.mode = "rest" if self.has_control else "closed"
        self.block: dict | None = None
        self.calib: list[dict] = []
        self.closed: dict[str, dict] = {}
        self.labels: dict[int, tuple] = {}
        self.names: tuple[str, ...] | None = None
        self._checked = False
        fit_thread = p["fit_in_thread"]
        self.fit_in_thread = self.ctx.realtime if fit_thread is None else fit_thread
        self._nan = {int(b) for b in self.inject.get("nan_at_bins", ())}
        self._oor = {int(b) for b in self.inject.get("out_of_range_at_bins", ())}
        self.fit_info: list[dict] = []
        #: Fitted versions (published as ``<name>/models``): files saved in ``save_dir`` and classes.
        self._models: dict[str, dict] = {}
        self._last_sample = -1
        self.decode_stats = LatencyStats(1 << 18)
        self.n_frozen = 0
        self.n_jobs = 0
        self._job: str | None = None
        self._operator_job = False
        self.journal = self.ctx.journal(self.name)
        if self.journal is not None:
            from cortexlink.runtime.nodes._journaled import recover

            recover(self)

    # -- control --------------------------------------------------------------------------
    def _block_control(self, c: Control) -> None:
        """``begin`` / ``end`` (also when the journal is read back after a restart)."""
        cmd = c.cmd
        if cmd == "begin":
            self.mode = c.mode
            self.block = {"name": c.name, "kind": c.kind, "bins": [], "x": [], "v": [], "c": [], "dec": []}
            if self.mode == "closed":
                if self.fitted:
                    self.decoder.reset_state()
                if self.bias is not None:
                    self.bias.reset()
                if self.click_dec is not None:
                    self.click_dec.reset_state()
        elif cmd == "end":
            b, self.block = self.block, None
            self.mode = "rest"
            if b is not None and b["kind"] == "calibration":
                self.calib.append(b)
            elif b is not None and b["kind"] == "closed_loop":
                self.closed[b["name"]] = b

    def _control(self, c: Control, closed: dict | None = None) -> None:
        cmd = c.cmd
        if cmd in ("begin", "end"):
            self._block_control(c)
        elif cmd in ("fit", "refit"):
            job = c.job
            if self._thread is not None:
                self._thread.join()
                self._swap()
            self._job = str(cmd)
            self._operator_job = bool(job)
            try:
                if cmd == "fit":
                    self._start(self._fit, job, c.blocks)
                else:
                    self._start(self._refit, c, dict(self.closed if closed is None else closed))
            except Exception as exc:
                self._job_done(False, error=f"{type(exc).__name__}: {exc}")
            self.closed = {}


    def _start(self, fn: Any, *args: Any) -> None:
        if self._thread is not None:
            self._thread.join()
            self._swap()
        if not self.fit_in_thread:
            fn(*args, in_place=True)
            return
        self._thread = threading.Thread(target=self._run_fit, args=(fn, args), name=f"{self.name}-fit", daemon=True)
        self._thread.start()

    def _run_fit(self, fn: Any, args: tuple) -> None:
        try:
            fn(*args, in_place=False)
        except Exception as exc:  # reported on the node's next step
            self._new = ("error", exc)

    def _swap(self) -> None:
        new, self._new = self._new, None
        if new is None:
            return
        if new[0] == "error":
            self._job_done(False, error=f"{type(new[1]).__name__}: {new[1]}")
            return
        self.decoder, self.click_dec, info, self.speed_gain = new[1], new[2], new[3], new[4]
        if new[5] is not None:
            self._fit_src = new[5]
        self.fitted = True
        self.version += 1
        self._after_fit(info)

    def _after_fit(self, info: dict) -> None:
        from cortexlink.decoders.speed_gain import BiasCorrector

        info["speed_gain"] = None if self.speed_gain is None else self.speed_gain.to_dict()
        self.bias = BiasCorrector.from_dict(info.get("bias_correction"))
        self.fit_info.append(info)
        sd = self.params["save_dir"]
        entry: dict[str, Any] = {"classes": {"decoder_file": type(self.decoder).__name__,
                                             "click_file": None if self.click_dec is None else type(self.click_dec).__name__},
                                 "sample": self._last_sample, "decoder_file": None, "click_file": None,
                                 "speed_gain": info["speed_gain"],
                                 "click_freeze_proba": self.params["click_freeze_proba"],
                                 "bias_correction": info.get("bias_correction")}
        if sd:
            Path(sd).mkdir(parents=True, exist_ok=True)
            entry["decoder_file"] = str(self.decoder.save(Path(sd) / f"{self.name}-v{self.version}.npz"))
            if self.click_dec is not None:
                entry["click_file"] = str(self.click_dec.save(Path(sd) / f"{self.name}-click-v{self.version}.npz"))
        self._models[str(self.version)] = entry
        self.ctx.bus.set_info(f"{self.name}/models", dict(self._models))
        logger.info("%s: decoder v%d ready (%s)", self.name, self.version, info)
        if self.journal is not None:
            from cortexlink.runtime.nodes._journaled import journal_model

            journal_model(self, info)
        if self._job is not None:
            self._job_done(True, info)

    def _job_done(self, ok: bool, info: dict | None = None, error: str | None = None) -> None:
        from cortexlink.core.jsonutil import jsonable

        out: dict[str, Any] = {"job": self._job, "ok": ok, "version": self.version, "operator": self._operator_job}
        if error is not None:
            out["error"] = error
            logger.warning("%s: %s failed: %s", self.name, self._job, error)
        for k in ("n_bins", "n_features", "note"):
            if info and info.get(k) is not None:
                out[k] = info[k]
        if info and info.get("fit_s") is not None:
            out["seconds"] = info["fit_s"]
        self._job = None
        self.n_jobs += 1
        self.ctx.bus.set_info(f"{self.name}/job", jsonable(out, finite=True))
        if self.journal is not None:
            self.journal.append("job", n_jobs=self.n_jobs)

    def _calibration_blocks(self, kinematics: tuple, names: tuple | None = None) -> tuple[list, tuple]:
        """The calibration blocks (those in ``names``, or all) as traces with their labels'
        kinematics; and the names of the blocks that had bins."""
        kin = {k["name"]: k for k in kinematics}
        blocks, used = [], []
        for b in self.calib:
            keep = [i for i, x in enumerate(b["x"]) if x is not None]     # bins with features (not a dsp warm-up)
            if not keep or (names is not None and b["name"] not in names):
                continue
            bins = [b["bins"][i] for i in keep]
            blocks.append(_trace(features=np.asarray([b["x"][i] for i in keep], np.float32).reshape(len(keep), -1),
                                 intended_velocity=np.asarray([b["v"][i] for i in keep], float).reshape(-1, 2),
                                 click_intent=np.asarray([b["c"][i] for i in keep], float), dt_s=self.ctx.bin_ms / 1000.0,
                                 **_kinematics(kin.get(b["name"]), bins, self.params["labels"], self.name)))
            used.append(b["name"])
        return blocks, tuple(used)

    def _fit(self, note: bool = False, kinematics: tuple = (), *, in_place: bool) -> None:
        from cortexlink.decoders.fitting import fit_decoders

        p = self.params
        blocks, used = self._calibration_blocks(kinematics)
        if not blocks:
            raise ConfigError(f"{self.name}: 'fit' but no calibration bins were collected")
        lag = "auto" if p["label_lag_s"] is None else int(round(p["label_lag_s"] * 1000.0 / self.ctx.bin_ms))
        try:
            res = fit_decoders(p["decoder"], p["decoder_params"], blocks, feature_names=self.names,
                               click=p["click"], click_params=p["click_params"],
                               on_no_click="note" if note else "raise", labels=p["labels"], lag_bins=lag,
                               speed_gain=p["speed_gain"], velocity_tau_s=p["velocity_tau_s"],
                               bias_tau_s=p["bias_tau_s"])
        except ConfigError as exc:
            raise ConfigError(f"nodes.{self.name}: {exc}") from exc
        click = res.click_decoder if p["click"] else self.click_dec
        src = (tuple(kinematics), res.info.get("label_lag_bins"), used)
        if in_place:
            self.decoder, self.click_dec, self.speed_gain = res.decoder, click, res.speed_gain
            self._fit_src = src
            self.fitted = True
            self.version += 1
            self._after_fit(res.info)
        else:
            self._new = ("ok", res.decoder, click, res.info, res.speed_gain, src)

    def _refit_prior(self) -> tuple | None:
        """The last fit's training set ``(X, y)``, rebuilt from ``calib`` (None when
        ``refit_with_calibration`` is off or nothing is known of the fit; said in the log)."""
        from cortexlink.decoders.fitting import lagged_training_set

        if not self.params["refit_with_calibration"] or self.params["refit_half_life_s"] is not None:
            return None
        if self._fit_src is None:
            logger.warning("%s: refit on the closed-loop bins alone (the fit's calibration is not known here)",
                           self.name)
            return None
        kinematics, lag, names = self._fit_src
        blocks, _ = self._calibration_blocks(kinematics, names)
        if not blocks:
            logger.warning("%s: refit on the closed-loop bins alone (no calibration bins kept)", self.name)
            return None
        X, y, _, _ = lagged_training_set(blocks, self.params["labels"], "auto" if lag is None else int(lag))
        return X, y

    def _refit(self, c: Control, closed: dict, *, in_place: bool) -> None:
        from cortexlink.decoders.fitting import refit_decoder

        blocks = []
        for blk in c.blocks:
            rec = closed.get(blk["name"])
            bins = np.asarray(blk["bins"], np.int64)
            n = bins.size
            F = len(self.names or ())
            feats = np.full((n, F), np.nan, np.float32)
            dec = np.full((n, 2), np.nan)
            if rec is not None:
                where = {b: i for i, b in enumerate(rec["bins"])}
                for j, b in enumerate(bins.tolist()):
                    i = where.get(b)
                    if i is not None and rec["x"][i] is not None and np.all(np.isfinite(rec["dec"][i])):
                        feats[j] = rec["x"][i]          # bins left NaN (not decoded) are dropped by refit_set
                        dec[j] = rec["dec"][i]
            blocks.append(_trace(features=feats, decoded_velocity=dec,
                                 cursor_xy=np.asarray(blk["cursor_xy"], float).reshape(n, 2),
                                 target_xy=np.asarray(blk["target_xy"], float).reshape(n, 2),
                                 on_target=np.asarray(blk["on_target"], bool).reshape(n), dt_s=float(blk["dt_s"])))
        lag = self.params["refit_intent_lag_s"]
        if lag is not None and lag != "auto":
            lag = int(round(float(lag) / min(b.dt_s for b in blocks))) if blocks else 0
        half = self.params["refit_half_life_s"]
        batch_s = sum(len(b.target_xy) * b.dt_s for b in blocks)
        res = refit_decoder(self.decoder, blocks, in_place=in_place, prior=self._refit_prior(),
                            intent_lag=0 if lag is None else lag, bias_tau_s=self.params["bias_tau_s"],
                            keep=0.0 if half is None else 0.5 ** (batch_s / half))
        if in_place:
            self.version += 1
            self._after_fit(res.info)
        else:
            self._new = ("ok", res.decoder, self.click_dec, res.info, self.speed_gain, None)

    # -- bins -----------------------------------------------------------------------------
    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        if self._thread is not None and not self._thread.is_alive():
            self._thread = None
            self._swap()
        for m in inbox.get("control", ()):
            if self.journal is not None:
                from cortexlink.runtime.wire import encode_message

                self.journal.append("control", encode_message(m))     # before applying it
            self._control(m.payload)
        for m in inbox.get("labels", ()):
            p = m.payload
            self.labels[p.bin] = (p.velocity, p.click)
        if len(self.labels) > 4096:
            for k in sorted(self.labels)[:-1024]:
                del self.labels[k]
        for m in inbox.get("features", ()):
            self._bin(m)

    def _bin(self, m: Message) -> None:
        self._last_sample = m.sample
        p = m.payload
        g = p.bin
        x = p.x
        have_x = x is not None
        valid = have_x and p.valid
        if have_x and self.names is None:
            info = self.ctx.bus.get_info(f"{self.ctx.producer(self.name, 'features')}/features")
            self.names = tuple(info["names"]) if info else None
        if have_x and not self._checked and self.fitted:
            self._checked = True
            self.decoder.check_compatible(feature_names=self.names, n_features=int(np.size(x)))
        v = _NAN2
        click = False
        proba = None
        decode_us = math.nan
        blk = self.block
        # in a session (control input) every bin with features is decoded (NaN input holds the
        # decoder); free-running, bins masked entirely are skipped
        if (have_x if self.has_control else valid) and self.mode == "closed" and self.fitted:
            t0 = time.perf_counter_ns()
            xd = np.asarray(x, dtype=np.float64)
            out = np.asarray(self.decoder.step(xd), dtype=float).reshape(-1)[:2]
            cs = None
            if self.click_dec is not None:
                cs = self.click_dec.step(xd)
                click, proba = bool(cs.onset), float(cs.proba)
            # bias correction, speed gain, and the cursor held while a click builds up (it lands where it was meant)
            out, frozen = self._output_stage(out, self.speed_gain, cs, self.params["click_freeze_proba"], self.bias)
            self.n_frozen += frozen
            v = (float(out[0]), float(out[1]))
            dt_ns = time.perf_counter_ns() - t0
            self.decode_stats.add(dt_ns)
            decode_us = dt_ns / 1e3
        if have_x and self.fitted and (g in self._nan or g in self._oor):
            v = _NAN2 if g in self._nan else (1000.0, 0.0)
            click = True                      # a click the gate must suppress
        if blk is not None and blk["kind"] in ("calibration", "closed_loop"):
            lab = self.labels.pop(g, None)
            blk["bins"].append(g)
            blk["x"].append(None if x is None else np.asarray(x, np.float32))
            blk["v"].append(_NAN2 if lab is None else tuple(lab[0]))
            blk["c"].append(0.0 if lab is None else lab[1])
            blk["dec"].append(v)
            if self.journal is not None:
                from cortexlink.runtime.nodes._journaled import journal_bin

                journal_bin(self, blk)
        # ready: this output may drive the cursor — fitted, and in closed mode (over Redis a block's
        # start reaches the decoder a little after the cursor: until then the cursor holds still
        # instead of taking the undecoded bins for NaN output)
        self.emit("intent", Intent(g, v, click, proba, self.fitted and self.mode == "closed", valid, self.version,
                                   decode_us, self.n_jobs), sample=m.sample, t_enter_ns=m.t_enter_ns)

    def teardown(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=60)

    def summary(self) -> dict:
        return {"fits": self.fit_info, "version": self.version, "decode": self.decode_stats.summary(),
                "n_frozen_bins": self.n_frozen,
                "bias": None if self.bias is None else [float(self.bias.bias[0]), float(self.bias.bias[1])]}
