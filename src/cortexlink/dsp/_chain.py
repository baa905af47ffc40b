"""Running the chain over a chunk: gaps, calibration windows and the two backends.

:class:`_ChainMixin` holds the per-chunk machinery of :class:`~cortexlink.dsp.FeatureExtractor`
(split out of :mod:`cortexlink.dsp.features` for size); it works only as a base class of
the extractor and uses its attributes.
"""

from __future__ import annotations

import os

import numpy as np

from cortexlink.dsp._state import _BIN_FILL, _CAL_LEFT, _CAL_PHASE, _CAL_ROW, _N_EV, _N_NEED_INIT, _N_OUT
from cortexlink.dsp.calibration import reference_rows

_EMPTY2 = np.zeros((0, 0), np.float32)
_EMPTY_EV = (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


class _ChainMixin:
    """Per-chunk processing of :class:`~cortexlink.dsp.FeatureExtractor` (gaps, both backends)."""

    def _flush_partial_bin(self, blocks: list) -> None:
        """Emit the partly filled current bin as a masked bin and clear the accumulators."""
        st = self._st
        bf = int(st.ist[_BIN_FILL])
        if bf == 0:
            return
        nan = np.full((1, self.n_channels), np.nan, np.float32)
        blocks.append((np.array([self._next - bf], np.int64), nan, nan, nan, True))
        st.clear_bin()
        st.ist[_BIN_FILL] = 0
        st.lfp.ist[2] = 0

    def _handle_gap(self, start: int, blocks: list) -> None:
        st = self._st
        W = self.bin_width_samples
        e = self._next
        if self.on_gap == "bridge":
            cur = e - int(st.ist[_BIN_FILL])
            new = self._grid0 + ((start - self._grid0) // W) * W
            if new != cur:
                self._flush_partial_bin(blocks)
            st.ist[_BIN_FILL] = start - new
            st.lfp.ist[2] = start - new
            self._mask_ranges.append((e, start + 1))
        else:  # reset
            self._flush_partial_bin(blocks)
            st.restart_filters()
            if self.keep_events:
                self._flush_pending_events()
            self._grid0 = start

    def _process(self, data: np.ndarray, start: int, blocks: list) -> None:
        st = self._st
        ist = st.ist
        W = self.bin_width_samples
        n = data.shape[0]
        C = self.n_channels
        n_bins = (int(ist[_BIN_FILL]) + n) // W
        b0 = start - int(ist[_BIN_FILL])
        if n_bins:
            out_tx = np.empty((n_bins, C), np.float32)
            out_sbp = np.empty((n_bins, C), np.float32)
            out_lfp = np.empty((n_bins if self.lfp_band_hz is not None else 0, C), np.float32)
        else:  # most 1 ms chunks complete no bin: nothing is written, share one empty array
            out_tx = out_sbp = out_lfp = self._no_rows
        ist[_N_OUT] = 0
        st.lfp.ist[3] = 0
        gain = self._gain[data.dtype]
        offset = self._offset[data.dtype]
        pos = 0
        numpy_done = 0
        while pos < n:
            stop = n
            collecting = ist[_CAL_LEFT] > 0
            if collecting:
                stop = min(n, pos + int(ist[_CAL_LEFT]))
                if self.backend == "numba":
                    from cortexlink.dsp import _side_kernels as SK

                    r = self._rails
                    rails = SK.rails_int if data.dtype.kind in "iu" else SK.rails
                    rails(data[pos:stop], r.mn, r.mx, r.n_mn, r.n_mx, r.n_finite)
                else:
                    self._rails.update(data[pos:stop])
            if self.backend == "numba":
                self._run_numba(data, pos, stop, start, gain, offset, out_tx, out_sbp)
                if self.lfp_band_hz is not None:
                    self._run_lfp_numba(data, pos, stop, gain, offset, out_lfp)
            else:
                tx, sbp, lfp = self._run_numpy(data, pos, stop, start, gain, offset)
                done, m = numpy_done, tx.shape[0]
                out_tx[done:done + m] = tx
                out_sbp[done:done + m] = sbp
                if lfp is not None:
                    out_lfp[done:done + m] = lfp
                numpy_done += m
            if collecting and ist[_CAL_LEFT] == 0:
                self._finish_calibration(start + stop)
            pos = stop
        if n_bins:
            starts = b0 + np.arange(n_bins, dtype=np.int64) * W
            blocks.append((starts, out_tx, out_sbp, out_lfp if out_lfp.shape[0] else None, False))

    # ---- numba backend
    def _event_buffers(self) -> None:
        need = max((self._scratch[0].shape[0] + 2) * self.n_channels, 4096)
        if self._ev is None or self._ev_cap < need:
            self._ev_cap = need
            self._ev = (np.zeros(need, np.int32), np.zeros(need, np.int64), np.zeros(need, np.int64),
                        np.zeros(need, np.float32))

    def _drain_events(self) -> None:
        k = int(self._st.ist[_N_EV])
        if k:
            ch, cr, tr, val = self._ev
            self._emit(ch[:k].copy(), cr[:k].copy(), tr[:k].copy(), val[:k].copy())
            self._st.ist[_N_EV] = 0

    def _setup_numba(self) -> None:
        """Pick the one-thread or the parallel kernel (``n_threads``) and its scratch buffers."""
        import numba

        from cortexlink.dsp import _kernels as K
        from cortexlink.dsp._side_kernels import warm_calibration

        warm_calibration()
        n = self.n_channels
        want = self.config.n_threads or (os.cpu_count() or 1)
        # one part of whole groups of channels per thread, run on at most numba's pool of threads
        self.n_threads_ = max(1, min(want, -(-n // K.GROUP)))
        self._pool_threads = max(1, min(self.n_threads_, numba.config.NUMBA_NUM_THREADS))
        if self.n_threads_ > 1:
            self._kernel = K.chain_parallel
            self._scratch = K.scratch(n, K.TILE_PAR, self.n_threads_)
        else:
            self._kernel = K.chain
            self._scratch = K.scratch(n)

    def _kernel_call(self, data, pos, stop, start, mode, gain, offset, V, v0, out_tx, out_sbp):
        # Before the first calibration no channel can cross and no trough window is open, so
        # the event pass is skipped (same result; it ran ~15x slower in some processes then).
        st = self._st
        cal = self._cal_rows if self._cal_rows is not None else _EMPTY2
        if self.keep_events:
            ev = self._ev
        else:
            ev = _EMPTY_EV
        keep = self.keep_events and self._calib is not None
        cal_stride = self._cal_stride if self._cal_rows is not None else 1
        before = 0
        if self.n_threads_ > 1:
            import numba

            before = numba.get_num_threads()  # the setting is per calling thread: put it back
            numba.set_num_threads(self._pool_threads)
        try:  # one compiled call; arguments passed directly (no tuple in between)
            return self._kernel(data, pos, stop, start, mode, gain, offset, self._coef, self._zi, st.z,
                                st.need_init, st.nonfinite, self._refmask, V, v0, self._thr_k, st.armed,
                                st.dead, self._dead_n, st.tx_acc, st.sbp_acc, self.bin_width_samples,
                                out_tx, out_sbp, cal, cal_stride, keep, self._trough_n, st.pend_left,
                                st.pend_cross, st.pend_idx, st.pend_val, ev[0], ev[1], ev[2], ev[3], st.ist,
                                *self._scratch)
        finally:
            if before:
                import numba

                numba.set_num_threads(before)

    def _run_numba(self, data, pos, stop, start, gain, offset, out_tx, out_sbp) -> None:
        if self.keep_events:
            self._event_buffers()
        if self._lrr is None:
            t = pos
            while t < stop:
                t = self._kernel_call(data, t, stop, start, 0, gain, offset, _EMPTY2, 0, out_tx, out_sbp)
                if self.keep_events:
                    self._drain_events()
            return
        # LRR: filter the rows, reference them with one matrix product, then the features
        Y = np.empty((stop - pos, self.n_channels), np.float32)
        self._kernel_call(data, pos, stop, start, 1, gain, offset, Y, pos, out_tx, out_sbp)
        V = reference_rows(Y, "lrr", ~self._bad, self._lrr)
        t = pos
        while t < stop:
            t = self._kernel_call(data, t, stop, start, 2, gain, offset, V, pos, out_tx, out_sbp)
            if self.keep_events:
                self._drain_events()

    def _run_lfp_numba(self, data, pos, stop, gain, offset, out_lfp) -> None:
        from cortexlink.dsp import _side_kernels as SK

        L = self._st.lfp
        SK.lfp(data, pos, stop, gain, offset, self.lfp_decim, self._lcoef, self._lzi, L.z, L.need_init,
              L.acc, L.pacc, self.bin_width_samples, out_lfp, L.ist, L.xb)

    # ---- numpy backend
    def _run_numpy(self, data, pos, stop, start, gain, offset):
        from cortexlink.dsp import _numpy_engine as E

        st = self._st
        ist = st.ist
        raw = data[pos:stop]
        if raw.dtype == np.int16:
            X = raw.astype(np.float32) * gain + offset
        else:
            X = raw.astype(np.float32, copy=True)
        Y = E.filter_block(X, self._coef, self._zi, st.z, st.need_init, st.nonfinite)
        ist[_N_NEED_INIT] = int(st.need_init.sum())
        m = Y.shape[0]
        if ist[_CAL_LEFT] > 0:
            ph = int(ist[_CAL_PHASE])
            stride = self._cal_stride
            take = np.arange((-ph) % stride, m, stride)
            r = int(ist[_CAL_ROW])
            self._cal_rows[r:r + take.size] = Y[take]
            ist[_CAL_ROW] = r + take.size
            ist[_CAL_PHASE] = (ph + m) % stride
            ist[_CAL_LEFT] -= m
        if self._lrr is not None:
            V = reference_rows(Y, "lrr", ~self._bad, self._lrr)
        elif self.reference == "none":
            V = Y
        else:
            V = E.common_average(Y, self._refmask)
        bin_fill = int(ist[_BIN_FILL])
        _, cuts, last_complete = E.bin_segments(m, bin_fill, self.bin_width_samples)
        tx, sbp = E.features_block(V, start + pos, st, self._thr_k, self._dead_n, self.bin_width_samples,
                                   self.keep_events, self._trough_n, self._emit)
        lfp = None
        if self.lfp_band_hz is not None:
            lfp = E.lfp_block(X, cuts, cuts.size + 1, last_complete, self.lfp_decim, self._lcoef,
                              self._lzi, st.lfp)
            st.lfp.ist[2] = ist[_BIN_FILL]
        return tx, sbp, lfp
