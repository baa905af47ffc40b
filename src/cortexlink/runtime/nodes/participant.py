"""``participant``: the simulated participant in the loop."""

from __future__ import annotations

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.messages import ParticipantIntent
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node

__all__ = ["ParticipantNode"]


@register_node
class ParticipantNode(Node):
    """The simulated participant: sees the cursor state, forms an intent for the next bin.

    Parameters (``params``)
    -----------------------
    seed : int
    config : dict
        :class:`~cortexlink.sim.ParticipantConfig` overrides.

    Between blocks (``state.block`` is None) it rests: intent zero, its model is not stepped. At a
    block's first bin it is reset; in open-loop blocks its adaptation is switched off and it
    observes (:attr:`~cortexlink.sim.SimulatedParticipant.observing`: it follows the cursor the
    autopilot moves, with attention lapses).
    """

    kind = "participant"
    INPUTS = {"cursor": PortSpec(maxlen=64, policy="drop_oldest", required=True, feedback=True, message="cursor_state")}
    OUTPUTS = {"intent": "participant_intent"}
    PARAMS = {"seed": Param("int", 0, lo=0), "config": Param("dict", {})}

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        from cortexlink.sim.participant import ParticipantConfig

        try:
            ParticipantConfig().replace(**params["config"])
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"nodes.{name}.params.config is invalid: {exc}") from exc

    def setup(self) -> None:
        from cortexlink.sim.participant import ParticipantConfig, SimulatedParticipant

        if getattr(self, "participant", None) is not None:     # a restart keeps its state
            return
        cfg = ParticipantConfig(**self.params["config"]) if self.params["config"] else None
        self.participant = SimulatedParticipant(cfg, seed=self.params["seed"], dt_s=self.ctx.bin_ms / 1000.0)
        self._adapt_default = self.participant.adapt

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        for m in inbox["cursor"]:
            s = m.payload
            if s.block is None:
                self.participant.adapt = self._adapt_default
                out = ParticipantIntent(s.bin)                          # at rest
            else:
                if s.begin:
                    self.participant.reset()
                    self.participant.adapt = bool(self._adapt_default) and s.mode != "open"
                    self.participant.observing = s.mode == "open"
                it = self.participant.step(s.t_s, np.array(s.xy, dtype=float), s.target)
                vx, vy, c = self.participant.neural_intent(it)
                out = ParticipantIntent(s.bin, (float(it.velocity[0]), float(it.velocity[1])), float(it.click),
                                        (float(vx), float(vy), float(c)), True)
            self.emit("intent", out, sample=m.sample, t_enter_ns=m.t_enter_ns)
