"""Mutable per-stream state of :class:`~cortexlink.dsp.FeatureExtractor`, shared by both backends.

The integer state vector ``ist`` is indexed by the ``_BIN_FILL`` ... ``_N_NEED_INIT``
constants below; the numba kernels (:mod:`cortexlink.dsp._kernels`) use the same layout.
"""

from __future__ import annotations

import numpy as np

# integer state indices (shared with the numba kernels)
_BIN_FILL, _N_OUT, _CAL_LEFT, _CAL_PHASE, _CAL_ROW, _N_EV, _N_PEND, _N_NEED_INIT = range(8)


class _StreamState:
    """All mutable per-stream state, as numpy arrays shared by both backends."""

    def __init__(self, n_ch: int, n_sec: int, n_sec_lfp: int) -> None:
        self.ist = np.zeros(16, np.int64)
        self.z = np.zeros((n_sec, 2, n_ch), np.float32)
        self.need_init = np.ones(n_ch, np.int32)
        self.ist[_N_NEED_INIT] = n_ch
        self.nonfinite = np.zeros(n_ch, np.int64)
        self.armed = np.zeros(n_ch, np.int32)
        self.dead = np.zeros(n_ch, np.int32)
        self.tx_acc = np.zeros(n_ch, np.int32)
        self.sbp_acc = np.zeros(n_ch, np.float32)
        self.sbp_acc64 = np.zeros(n_ch, np.float64)
        self.pend_left = np.zeros(n_ch, np.int32)
        self.pend_cross = np.zeros(n_ch, np.int64)
        self.pend_idx = np.zeros(n_ch, np.int64)
        self.pend_val = np.zeros(n_ch, np.float32)
        self.yb = np.zeros(n_ch, np.float32)
        # LFP path
        self.lfp = _LfpState(n_ch, n_sec_lfp)

    def restart_filters(self) -> None:
        """Forget filter memory and crossing state (gap policy "reset")."""
        self.z[:] = 0
        self.need_init[:] = 1
        self.ist[_N_NEED_INIT] = self.need_init.size
        self.armed[:] = 0
        self.dead[:] = 0
        self.lfp.restart()

    def clear_bin(self) -> None:
        self.tx_acc[:] = 0
        self.sbp_acc[:] = 0
        self.sbp_acc64[:] = 0
        self.lfp.pacc[:] = 0
        self.lfp.ist[1] = 0


class _LfpState:
    def __init__(self, n_ch: int, n_sec: int) -> None:
        self.ist = np.zeros(8, np.int64)
        self.z = np.zeros((n_sec, 2, n_ch), np.float64)
        self.need_init = np.ones(n_ch, np.int32)
        self.ist[4] = n_ch
        self.acc = np.zeros(n_ch, np.float64)
        self.pacc = np.zeros(n_ch, np.float64)
        self.xb = np.zeros(n_ch, np.float64)

    def restart(self) -> None:
        self.z[:] = 0
        self.need_init[:] = 1
        self.ist[4] = self.need_init.size
        self.acc[:] = 0
        self.ist[0] = 0
