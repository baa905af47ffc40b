"""The neural closed loop: participant → implant → features → decoders → cursor → task.

One :class:`ClosedLoop` holds a simulated implant, a streaming
:class:`~cortexlink.dsp.FeatureExtractor`, a :class:`~cortexlink.sim.participant.SimulatedParticipant`
and a :class:`~cortexlink.tasks.cursor.CursorEffector`, and advances them one feature bin
(``dt_s``, 20 ms by default) at a time. Each bin:

1. the participant looks at the cursor it was shown (with its visual delay) and the task's
   current target, and forms an intended velocity and a click intent;
2. that intent drives the simulated implant's units for the next ``dt_s`` of samples, which go
   through feature extraction (one bin);
3. the velocity decoder and the click decoder ``step`` on that bin (``mode="closed"``), or the
   cursor moves to the target by itself (``mode="open"``, calibration: the participant intends
   along), or the cursor follows the participant's intent exactly (``mode="perfect"``, the
   ceiling of a perfect decoder; the implant is not run);
4. the cursor moves and the task sees the cursor and any click.

Decoder quality therefore feeds back: a poorly decoded cursor is what the participant sees and
corrects. Every bin is kept in a :class:`BlockTrace` (cursor, intent, decoded velocity, clicks,
targets, features, decode latency) for refitting, reports and recording.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_choice, check_positive
from cortexlink.tasks.cursor import MODES, cursor_command
from cortexlink.tasks.trace import RASTER_CHANNELS, BlockTrace

logger = logging.getLogger(__name__)

__all__ = ["ClosedLoop", "BlockRun", "LoopTap"]


@dataclasses.dataclass(eq=False)
class BlockRun:
    """A block in progress (see :meth:`ClosedLoop.begin_block`); ``done`` once its time is up
    or its task is finished."""

    task: Any
    mode: str
    name: str
    decoder: Any
    click_decoder: Any
    n_max: int
    rec: dict
    feats: np.ndarray | None
    raster: np.ndarray | None
    t_start: float
    adapt_before: Any
    n: int = 0
    prev_click_intent: float = 0.0
    events: list = dataclasses.field(default_factory=list)
    finished: bool = False

    @property
    def done(self) -> bool:
        return self.finished or self.n >= self.n_max or bool(self.task.done)


class LoopTap:
    """Something that watches a :class:`ClosedLoop` (a recorder, a UI feed): the loop calls
    these hooks; the default ones do nothing."""

    def samples(self, loop: "ClosedLoop", chunk: Any, features: Any) -> None:
        """Called for every chunk of raw samples the implant gave (warm-up included) with the
        :class:`~cortexlink.core.types.BinnedFeatures` the extractor made of it."""

    def block_started(self, loop: "ClosedLoop", run: BlockRun) -> None:
        """Called by :meth:`ClosedLoop.begin_block`."""

    def bin_done(self, loop: "ClosedLoop", run: BlockRun, out: dict) -> None:
        """Called at the end of each :meth:`ClosedLoop.step_bin` with its result."""

    def block_ended(self, loop: "ClosedLoop", run: BlockRun, trace: BlockTrace) -> None:
        """Called by :meth:`ClosedLoop.end_block`."""


class ClosedLoop:
    """A simulated participant using a simulated implant to drive a cursor, one bin at a time.

    Parameters
    ----------
    implant : SimulatedImplant or None
        The implant whose units the participant's intent drives. None allows only
        ``mode="perfect"``.
    participant : SimulatedParticipant, optional
        Default: ``SimulatedParticipant(seed=seed, dt_s=dt_s)``.
    effector : CursorEffector, optional
        Default: ``CursorEffector(dt_s=dt_s)``.
    dt_s : float
        Bin width (the feature bin and the loop period), default 0.02 s.
    feature_kinds : sequence of {"tx", "sbp"}, optional
        Features given to the decoders. Default: both up to 128 channels, spike-band power only
        above (thousands of threshold-crossing counts add little over SBP and cost fit time).
    autopilot_speed : float
        Peak cursor speed (screen units/s) of the open-loop calibration cursor.
    seed : int
        Seed of the default participant.
    """

    def __init__(self, implant: Any = None, *, participant: Any = None, effector: Any = None,
                 dt_s: float = 0.02, feature_kinds: tuple[str, ...] | None = None,
                 autopilot_speed: float = 1.0, seed: int = 0) -> None:
        from cortexlink.sim.participant import SimulatedParticipant
        from cortexlink.tasks.cursor import CursorEffector

        self.dt_s = check_positive("dt_s", dt_s)
        self.autopilot_speed = check_positive("autopilot_speed", autopilot_speed)
        self.implant = implant
        self.participant = participant if participant is not None else SimulatedParticipant(seed=seed, dt_s=dt_s)
        self.effector = effector if effector is not None else CursorEffector(dt_s=dt_s)
        self.t_s = 0.0
        #: :class:`LoopTap` objects called at block start, each bin and block end.
        self.taps: list = []
        self.fx = None
        self.feature_columns_: np.ndarray | None = None
        self.feature_names_: tuple[str, ...] | None = None
        if implant is not None:
            from cortexlink.dsp import FeatureExtractor

            fs = float(implant.fs_hz)
            n = dt_s * fs
            if abs(n - round(n)) > 1e-6:
                raise ConfigError(f"dt_s must be a whole number of samples at the implant's fs_hz={fs:g}; "
                                  f"got {dt_s!r} ({n:g} samples)")
            self.samples_per_bin = int(round(n))
            self.fx = FeatureExtractor(implant.channel_map, fs, bin_ms=dt_s * 1000.0)
            n_ch = implant.channel_map.n_channels
            kinds = tuple(feature_kinds) if feature_kinds is not None else (("tx", "sbp") if n_ch <= 128 else ("sbp",))
            for k in kinds:
                check_choice("feature_kinds", k, ("tx", "sbp"))
            self.feature_kinds = kinds
        else:
            self.samples_per_bin = 0
            self.feature_kinds = ()

    # ------------------------------------------------------------------ set-up
    def warm_up(self, progress: Any = None) -> None:
        """Run the implant with the participant at rest until the extractor's calibration
        window is over, then fix the decoder's feature columns (bad channels left out)."""
        if self.implant is None or self.feature_columns_ is not None:
            return
        n_bins = int(np.ceil(self.fx.calibration_s / self.dt_s)) + 1
        self.implant.set_intent(velocity=(0.0, 0.0), click=0.0)
        for _ in range(n_bins):
            chunk = self.implant.read(self.samples_per_bin)
            bf = self.fx.step(chunk)
            for tap in self.taps:
                tap.samples(self, chunk, bf)
            self.t_s += self.dt_s
            if progress is not None:
                progress.update(1)
        bad = np.asarray(self.fx.bad_channels_, bool)
        ids = self.implant.channel_map.channel_ids
        bad_ids = {ids[i] for i in np.flatnonzero(bad)}
        names = self.fx.feature_names
        cols = [i for i, nm in enumerate(names)
                if nm.rsplit("/", 1)[-1] in self.feature_kinds and nm.split("/", 1)[0] not in bad_ids]
        self.feature_columns_ = np.asarray(cols, dtype=np.intp)
        tx = [i for i, nm in enumerate(names) if nm.endswith("/tx")][:RASTER_CHANNELS]
        self._raster_columns = np.asarray(tx, dtype=np.intp)
        self.feature_names_ = tuple(names[i] for i in cols)
        logger.info("closed loop: %d decoder features (%s), %d bad channels left out",
                    len(cols), "+".join(self.feature_kinds), len(bad_ids))

    @property
    def n_features(self) -> int:
        return 0 if self.feature_columns_ is None else int(self.feature_columns_.size)

    # ------------------------------------------------------------------ one block
    def run_block(self, task: Any, *, mode: str = "closed", seconds: float | None = None,
                  max_seconds: float = 3600.0, decoder: Any = None, click_decoder: Any = None,
                  name: str | None = None, keep_features: bool = True, progress: Any = None) -> BlockTrace:
        """Run ``task`` until it is done or ``seconds`` have passed.

        Parameters
        ----------
        task : Task
        mode : {"open", "closed", "perfect"}
            See the module docstring.
        seconds : float, optional
            Block length; None runs until ``task.done`` (at most ``max_seconds``).
        decoder : fitted velocity decoder with ``reset_state``/``step``
            Required in ``mode="closed"``.
        click_decoder : fitted ClickDecoder, optional
            In ``mode="closed"``; without it the cursor never clicks.
        keep_features : bool
            Keep the per-bin decoder input in the trace (needed to fit or refit).
        progress : tqdm-like, optional
            ``update(1)`` is called per bin.

        Returns
        -------
        BlockTrace

        Notes
        -----
        This is :meth:`begin_block`, :meth:`step_bin` until :attr:`BlockRun.done`, then
        :meth:`end_block`; a runtime or a UI that needs to act between bins calls those itself.
        """
        run = self.begin_block(task, mode=mode, seconds=seconds, max_seconds=max_seconds, decoder=decoder,
                               click_decoder=click_decoder, name=name, keep_features=keep_features)
        while not run.done:
            self.step_bin(run)
            if progress is not None:
                progress.update(1)
        return self.end_block(run)

    def begin_block(self, task: Any, *, mode: str = "closed", seconds: float | None = None,
                    max_seconds: float = 3600.0, decoder: Any = None, click_decoder: Any = None,
                    name: str | None = None, keep_features: bool = True) -> "BlockRun":
        """Start a block (arguments as :meth:`run_block`) and return its :class:`BlockRun`."""
        mode = check_choice("mode", mode, MODES)
        if seconds is not None:
            check_positive("seconds", seconds)
        if mode != "perfect" and self.implant is None:
            raise ConfigError(f"mode={mode!r} needs an implant; only mode='perfect' runs without one")
        if mode == "closed" and decoder is None:
            raise ConfigError("mode='closed' needs a fitted velocity decoder (decoder=...)")
        if mode != "perfect":
            self.warm_up()
        n_max = int(round((seconds if seconds is not None else max_seconds) / self.dt_s))
        F = self.n_features if (keep_features and mode != "perfect") else 0
        rec = {k: np.full((n_max, 2), np.nan) for k in ("cursor_xy", "cursor_velocity", "intended_velocity",
                                                         "decoded_velocity", "target_xy")}
        rec.update({k: np.full(n_max, np.nan) for k in ("t_s", "click_intent", "click_proba", "target_radius",
                                                        "decode_latency_us", "loop_latency_us")})
        rec["clicks"] = np.zeros(n_max, bool)
        rec["on_target"] = np.zeros(n_max, bool)
        feats = np.full((n_max, F), np.nan, np.float32) if F else None
        raster = (np.zeros((n_max, self._raster_columns.size), np.uint8)
                  if mode != "perfect" and self.implant is not None else None)

        task.reset()
        self.participant.reset()
        # In open loop the cursor moves by itself: the participant must not learn the autopilot's
        # speed as the gain of its own commands (its intents are the decoder's training labels).
        adapt_before = getattr(self.participant, "adapt", None)
        if adapt_before is not None:
            self.participant.adapt = bool(adapt_before) and mode != "open"
        self.effector.reset()
        if decoder is not None:
            decoder.reset_state()
        if click_decoder is not None:
            click_decoder.reset_state()
        run = BlockRun(task=task, mode=mode, name=name or f"{getattr(task, 'name', 'task')}-{mode}",
                       decoder=decoder, click_decoder=click_decoder, n_max=n_max, rec=rec, feats=feats,
                       raster=raster, t_start=self.t_s, adapt_before=adapt_before)
        for tap in self.taps:
            tap.block_started(self, run)
        return run

    def step_bin(self, run: "BlockRun", *, override_velocity: Any = None, halt: bool = False) -> dict:
        """Advance ``run`` by one bin and return that bin's values.

        Parameters
        ----------
        override_velocity : (vx, vy), optional
            Drive the cursor with this velocity instead of the decoder/autopilot ("mouse mode");
            the implant, features and decoders still run and are recorded.
        halt : bool
            Emergency stop / fault: the cursor velocity is zero and clicks are suppressed in this bin.

        Returns
        -------
        dict
            ``n`` (bin index in the block), ``t_s``, ``cursor_xy``, ``velocity`` (given to the
            effector), ``decoded_velocity``, ``click_proba``, ``clicked``, ``events`` (task events
            of this bin), ``chunk`` (raw samples, None in ``mode="perfect"``), ``features`` (this
            bin's full feature row or None), ``loop_latency_us``.
        """
        if run.done:
            raise ConfigError(f"block {run.name!r} is finished; start a new one with begin_block")
        rec = run.rec
        n = run.n
        task = run.task
        mode = run.mode
        clock = time.perf_counter_ns
        target = task.current_target()
        xy_shown = np.array(self.effector.xy, dtype=float)
        intent = self.participant.step(self.t_s, xy_shown, target)
        v_int = np.asarray(intent.velocity, dtype=float)
        c_int = float(intent.click)
        x = None
        t0 = 0
        chunk = None
        row = None
        if mode != "perfect":
            vx_n, vy_n, c_n = self.participant.neural_intent(intent)
            self.implant.set_intent(velocity=(float(vx_n), float(vy_n)), click=float(c_n))
            chunk = self.implant.read(self.samples_per_bin)
            t0 = clock()                    # the bin's samples are in: the loop latency starts
            bf = self.fx.step(chunk)
            for tap in self.taps:
                tap.samples(self, chunk, bf)
            if bf.n_bins:
                row = bf.data[-1]
                x = np.asarray(row[self.feature_columns_], dtype=np.float64)
                if run.raster is not None:
                    r = row[self._raster_columns]
                    run.raster[n] = np.where(np.isfinite(r), np.minimum(r, 255), 0).astype(np.uint8)
        decoded = None
        decoded_click = False
        if mode == "closed":
            td = clock()
            if x is None:
                x = np.full(self.n_features, np.nan)
            decoded = np.asarray(run.decoder.step(x), dtype=float).reshape(-1)[:2]
            if run.click_decoder is not None:
                cs = run.click_decoder.step(x)
                decoded_click = bool(cs.onset)
                rec["click_proba"][n] = cs.proba
            rec["decode_latency_us"][n] = (clock() - td) / 1e3
            rec["decoded_velocity"][n] = decoded
        xy, clicked, vel = cursor_command(self.effector, mode, target=target, decoded_velocity=decoded,
                                          decoded_click=decoded_click, intended_velocity=v_int, click_intent=c_int,
                                          prev_click_intent=run.prev_click_intent,
                                          autopilot_speed=self.autopilot_speed, override_velocity=override_velocity,
                                          halt=halt)
        if mode != "perfect":
            rec["loop_latency_us"][n] = (clock() - t0) / 1e3
        self.t_s += self.dt_s
        ev = task.update(self.t_s, np.asarray(xy, dtype=float), bool(clicked))
        run.events.extend(ev)
        rec["t_s"][n] = self.t_s
        rec["cursor_xy"][n] = xy
        rec["cursor_velocity"][n] = vel
        rec["intended_velocity"][n] = v_int
        rec["click_intent"][n] = c_int
        rec["clicks"][n] = bool(clicked)
        if target is not None:
            rec["target_xy"][n] = target.xy
            rec["target_radius"][n] = target.radius
            rec["on_target"][n] = float(np.hypot(*(np.asarray(xy) - np.asarray(target.xy)))) <= target.radius
        if run.feats is not None and x is not None:
            run.feats[n] = x
        run.prev_click_intent = c_int
        run.n = n + 1
        out = {"n": n, "t_s": self.t_s, "cursor_xy": np.asarray(xy, dtype=float), "velocity": vel,
               "decoded_velocity": decoded, "click_proba": float(rec["click_proba"][n]), "clicked": bool(clicked),
               "events": ev, "chunk": chunk, "features": row, "loop_latency_us": float(rec["loop_latency_us"][n])}
        for tap in self.taps:
            tap.bin_done(self, run, out)
        return out

    def end_block(self, run: "BlockRun") -> BlockTrace:
        """Finish ``run`` (it may stop early) and return its :class:`BlockTrace`."""
        if run.adapt_before is not None:
            self.participant.adapt = run.adapt_before
        n = run.n
        rec = run.rec
        elapsed = self.t_s - run.t_start
        trace = BlockTrace(
            name=run.name, mode=run.mode, task=getattr(run.task, "name", "task"),
            dt_s=self.dt_s, t_s=rec["t_s"][:n], cursor_xy=rec["cursor_xy"][:n],
            cursor_velocity=rec["cursor_velocity"][:n], intended_velocity=rec["intended_velocity"][:n],
            click_intent=rec["click_intent"][:n], decoded_velocity=rec["decoded_velocity"][:n],
            click_proba=rec["click_proba"][:n], clicks=rec["clicks"][:n], target_xy=rec["target_xy"][:n],
            target_radius=rec["target_radius"][:n], on_target=rec["on_target"][:n],
            features=None if run.feats is None else run.feats[:n], decode_latency_us=rec["decode_latency_us"][:n],
            loop_latency_us=rec["loop_latency_us"][:n], tx_raster=None if run.raster is None else run.raster[:n],
            events=run.events, metrics=run.task.metrics(elapsed))
        run.finished = True
        for tap in self.taps:
            tap.block_ended(self, run, trace)
        logger.info("block %s: %d bins (%.1f s), metrics %s", trace.name, n, elapsed, trace.metrics)
        return trace

