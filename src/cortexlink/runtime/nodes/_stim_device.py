"""The simulated stimulator inside ``sim_source``: command frames in, pulses rendered, delivered out.

A mixin of :class:`~cortexlink.runtime.nodes.sources.SimSource`. With its ``stim`` input
connected (``stim_interlock.command``), the source is also the device end of the stimulator link:
each frame (the versioned format of :mod:`cortexlink.stim.command`) goes to a
:class:`~cortexlink.stim.driver.SimulatedStimulator`; before each chunk is read, the pulses due
in it are rendered into the implant's signal (:meth:`cortexlink.sim.SimulatedImplant.stimulate`)
and published on the ``stim`` output (what was really delivered: the dsp blanks it, the recorder
keeps it). STOP frames, the device's own watchdog and late frames behave as the driver module says;
the frames still queued when the run ends (the host's last STOP) are received at teardown.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cortexlink.core.pulses import pulses_to_dict

__all__ = ["StimDeviceMixin"]


class StimDeviceMixin:
    """Adds the simulated stimulator to a source that owns ``self.implant``."""

    def _stim_setup(self) -> None:
        if "stim" not in self.subs or getattr(self, "stim_device", None) is not None:
            return
        from cortexlink.stim.driver import SimulatedStimulator

        self.stim_device = SimulatedStimulator(watchdog_s=max(0.1, 5 * self.ctx.bin_ms / 1000.0))

    def _stim_frames(self, messages: Any) -> None:
        dev = getattr(self, "stim_device", None)
        if dev is None:
            return
        now = self.implant.sample_index / self.implant.fs_hz
        for m in messages:
            frame = np.asarray(m.payload["frame"], np.uint8).tobytes()
            dev.receive(frame, now)

    def _stim_render(self, n_samples: int) -> None:
        dev = getattr(self, "stim_device", None)
        if dev is None:
            return
        fs = self.implant.fs_hz
        now = self.implant.sample_index / fs
        pulses = dev.due(now, (self.implant.sample_index + n_samples) / fs)
        if len(pulses):
            self.implant.stimulate(pulses)
            self.emit("stim", {"now_s": now, **pulses_to_dict(pulses)}, sample=self.implant.sample_index,
                      t_enter_ns=time.monotonic_ns())

    def teardown(self) -> None:
        """The frames still queued on the link reach the device (the host's STOP at the end of the run:
        the interlock is torn down first, as it comes later in the graph)."""
        sub = self.subs.get("stim")
        if sub is not None and getattr(self, "stim_device", None) is not None:
            self._stim_frames(sub.drain())
        super().teardown()

    def stim_summary(self) -> dict | None:
        dev = getattr(self, "stim_device", None)
        return None if dev is None else dict(dev.counts)

    def summary(self) -> dict:
        counts = self.stim_summary()
        return {} if counts is None else {"stimulator": counts}
