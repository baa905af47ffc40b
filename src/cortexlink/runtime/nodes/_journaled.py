"""The decoder node's journal: what it writes as it goes, and how it comes back after its process
was restarted (see :mod:`cortexlink.runtime.journal` and :class:`~cortexlink.runtime.nodes.decoder.DecoderNode`).

Records: ``control`` (each control message as it arrived, in the bus's wire encoding, journaled
before it is applied), ``bin`` (one bin of a calibration or closed-loop block: its features as
float32 bytes, the participant's intended velocity and click, the decoded velocity), ``model``
(each fitted decoder and click decoder as their ``.npz`` bytes, its version and fit info) and
``job`` (the count of finished fits and refits).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.runtime.nodes._common import logger

__all__ = ["journal_bin", "journal_model", "recover"]


def journal_bin(node: Any, blk: dict) -> None:
    """The last bin appended to block ``blk``."""
    x = blk["x"][-1]
    fields = {} if x is None else {b"x": np.asarray(x, np.float32).tobytes()}
    v, dec = blk["v"][-1], blk["dec"][-1]
    node.journal.append("bin", fields, block=blk["name"], bin=int(blk["bins"][-1]), v=[float(v[0]), float(v[1])],
                        c=float(blk["c"][-1]), dec=[float(dec[0]), float(dec[1])])


def journal_model(node: Any, info: dict) -> None:
    """The decoder (and click decoder) just fitted."""
    from cortexlink.core.jsonutil import jsonable

    fields: dict[bytes, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cortexlink-journal-") as d:
        fields[b"decoder"] = Path(node.decoder.save(Path(d) / "decoder.npz")).read_bytes()
        if node.click_dec is not None:
            fields[b"click"] = Path(node.click_dec.save(Path(d) / "click.npz")).read_bytes()
    node.journal.append("model", fields, version=int(node.version), info=jsonable(info), models=node._models)


def _load(blob: bytes) -> Any:
    from cortexlink.decoders import load

    with tempfile.TemporaryDirectory(prefix="cortexlink-journal-") as d:
        p = Path(d) / "model.npz"
        p.write_bytes(blob)
        return load(p)


def recover(node: Any) -> None:
    """Read ``node``'s journal back (a restarted process): blocks, bins, the fitted decoder, the
    job count; skip the control messages already applied; redo a fit that was asked for but had
    not finished. A fresh journal changes nothing."""
    from cortexlink.runtime.wire import decode_message

    entries = node.journal.read()
    if not entries:
        return
    pending = None
    last_seq = -1
    model = None
    fit_kin = None
    for kind, v, f in entries:
        if kind == "control":
            m = decode_message(f"{node.name}.control", f)
            last_seq = max(last_seq, m.seq)
            c = m.payload
            if c.cmd in ("begin", "end"):
                node._block_control(c)
            else:
                pending = (c, dict(node.closed))
                node.closed = {}
                if c.cmd == "fit":
                    fit_kin = tuple(c.blocks or ())
        elif kind == "bin":
            blk = node.block
            if blk is not None and blk["name"] == v["block"]:
                blk["bins"].append(int(v["bin"]))
                blk["x"].append(np.frombuffer(f[b"x"], np.float32).copy() if b"x" in f else None)
                blk["v"].append(tuple(v["v"]))
                blk["c"].append(float(v["c"]))
                blk["dec"].append(tuple(v["dec"]))
        elif kind == "model":
            model = (v, f)
        elif kind == "job":
            node.n_jobs = int(v["n_jobs"])
            pending = None
    if model is not None:
        v, f = model
        node.decoder = _load(f[b"decoder"])
        node.click_dec = _load(f[b"click"]) if b"click" in f else node.click_dec
        node.version = int(v["version"])
        node.fitted = True
        node.fit_info.append(v.get("info") or {})
        from cortexlink.decoders.speed_gain import BiasCorrector, SpeedGain

        node.speed_gain = SpeedGain.from_dict((v.get("info") or {}).get("speed_gain"))
        node.bias = BiasCorrector.from_dict((v.get("info") or {}).get("bias_correction"))
        node._models = dict(v.get("models") or {})
        if fit_kin is not None:          # what ReFIT refits on besides the closed loop (the fit's calibration)
            node._fit_src = (fit_kin, (v.get("info") or {}).get("label_lag_bins"),
                             tuple(k["name"] for k in fit_kin) or None)
    sub = node.subs.get("control")
    if sub is not None:
        sub.resume_after = last_seq
    info = node.ctx.bus.get_info(f"{node.ctx.producer(node.name, 'features')}/features")
    if info:
        node.names = tuple(info["names"])
    n_cal = sum(len(b["bins"]) for b in node.calib)
    blk = node.block
    msg = (f"decoder {node.name} came back from its journal after a restart of its process: "
           f"{len(node.calib)} calibration block(s) ({n_cal} bins), "
           + (f"block {blk['name']!r} in progress ({len(blk['bins'])} bins), " if blk is not None else "")
           + (f"decoder v{node.version}" if node.fitted else "no fitted decoder")
           + (f"; redoing the {pending[0].cmd} asked for before the restart" if pending is not None else ""))
    logger.warning(msg)
    node.fault("decoder_recovered", severity="info", message=msg, n_calibration_bins=n_cal,
               version=int(node.version))
    if pending is not None:
        node._control(pending[0], closed=pending[1])


def restore_dsp_calibration(node: Any) -> bool:
    """A dsp node in a restarted process: put back the noise calibration its previous process
    published (``<name>/calibration``, exact figures), so that its features — thresholds, bad
    channels, decoder columns — are those the decoder was trained on, from the first bin (instead
    of a new calibration window of different figures). False when there is none to restore (a
    first start, or the ``lrr`` reference, whose matrix is not published)."""
    from cortexlink.dsp.calibration import Calibration

    d = node.ctx.bus.get_info(f"{node.name}/calibration")
    if not d or d.get("has_lrr_matrix"):
        return False
    n = node.fx.n_channels

    def arr(key: str) -> np.ndarray:
        return np.asarray([np.nan if x is None else x for x in d[key]], np.float64)

    def mask(key: str) -> np.ndarray:
        m = np.zeros(n, bool)
        m[np.asarray(d.get(key) or [], np.int64)] = True
        return m

    if len(d.get("noise_rms_uv") or ()) != n:
        return False
    node.fx.set_calibration(Calibration(noise_rms_uv=arr("noise_rms_uv"), thresholds_uv=arr("thresholds_uv"),
                                        bad=mask("bad"), flat=mask("flat"), saturated=mask("saturated"),
                                        nonfinite=mask("nonfinite"), n_samples=int(d.get("n_samples") or 0)))
    node._cal_obj = node.fx.calibration_
    node._noise_version = int(d.get("version") or 1)
    logger.warning("%s: restarted with the noise calibration of its previous process (version %d)",
                   node.name, node._noise_version)
    return True
