"""Nothing lost, nothing hung: a lost Redis server, a child process killed mid-session, a fit that
fails, stop signals. Real redis-server processes (private ones where a test kills them), real child
processes; every wait bounded, no assertion on latency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from cortexlink.bench.latency import prepare_data
from cortexlink.runtime import redis_server as _rs
from cortexlink.runtime.runner import GraphRunner


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    return prepare_data(32, 1.0, tmp_path_factory.mktemp("faults"), seed=3)


def _wait(pred, timeout_s, what):
    t_end = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class _Background:
    """A GraphRunner run in a thread (the test kills things under it)."""

    def __init__(self, graph, **kw):
        self.runner = GraphRunner(graph, **kw)
        self.res = self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.res = self.runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def node(self, name):
        slot = getattr(self.runner, "by_name", {}).get(name)
        return None if slot is None else slot.node

    def join(self, timeout_s=90):
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the run did not end"
        assert self.error is None, self.error
        return self.res


def _pipeline_graph(replay, seconds=120.0):
    """Replay source and cursor here, dsp and decoder in a child process over Redis."""
    return {"name": "bus-fault", "clock": "realtime", "seconds": seconds, "bus": {"kind": "redis"},
            "watchdog": {"stall_ms": 250, "output_timeout_ms": 500},
            "nodes": {
                "source": {"kind": "replay_source", "params": {"path": replay["data"]}},
                "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}}, "inputs": {"raw": "source.raw"},
                        "where": "subprocess", "group": "pipeline"},
                "decoder": {"kind": "decoder", "params": {"path": replay["decoder"], "click": False},
                            "inputs": {"features": "dsp.features"}, "where": "subprocess", "group": "pipeline"},
                "cursor": {"kind": "cursor", "inputs": {"intent": "decoder.intent"}},
                "gates": {"kind": "sink", "params": {"keep": 100}, "inputs": {"data": "cursor.gate"}},
            }}


# -- a lost Redis server -----------------------------------------------------------------------------
@pytest.mark.req("SR-06")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_lost_redis_server_halts_the_cursor_and_ends_the_run_with_its_failure(redis_executable, replay, tmp_path, sig):
    srv = _rs.RedisServer(executable=redis_executable).start()
    try:
        bg = _Background(_pipeline_graph(replay), redis_url=srv.url, out_dir=tmp_path)
        _wait(lambda: getattr(bg.node("cursor"), "n_updates", 0) > 10 or not bg.thread.is_alive(),
              90, "the cursor to move")
        os.kill(srv.pid, sig)
        res = bg.join()
    finally:
        srv.stop()
    f = res["failure"]
    assert f["kind"] == "bus_lost" and "lost the message bus" in f["message"] and res["stop_reason"].startswith("bus_lost")
    kinds = [(e["kind"], e["severity"]) for e in res["faults"]]
    assert ("bus_lost", "halt") in kinds and ("bus_down", "halt") in kinds
    gates = [m.payload for m in bg.node("gates").kept]
    assert gates[-1].halted and gates[-1].velocity == (0.0, 0.0)
    # the child process saw it too and ended (no restart while the run ends)
    proc = res["processes"]["pipeline"]
    assert proc["returncode"] is not None and proc["restarts"] == 0


@pytest.mark.req("SR-06")
def test_a_restarted_redis_server_is_not_reconnected_the_run_ends_cleanly(redis_executable, replay, tmp_path):
    srv = _rs.RedisServer(executable=redis_executable).start()
    again = None
    try:
        bg = _Background(_pipeline_graph(replay), redis_url=srv.url, out_dir=tmp_path)
        _wait(lambda: getattr(bg.node("cursor"), "n_updates", 0) > 10 or not bg.thread.is_alive(),
              90, "the cursor to move")
        port = srv.port
        os.kill(srv.pid, signal.SIGKILL)
        srv.stop()
        again = _rs.RedisServer(port=port, executable=redis_executable).start()
        res = bg.join()
        # nothing of the run came back on the new server: the bus never reconnected
        assert redis.Redis.from_url(again.url).keys("cl:*") == []
    finally:
        srv.stop()
        if again is not None:
            again.stop()
    assert res["failure"]["kind"] == "bus_lost"


def test_a_broken_redis_bus_keeps_delivering_here_and_answers_reads_as_empty(redis_executable):
    from cortexlink.runtime.bus import Message
    from cortexlink.runtime.processes import _client_kw
    from cortexlink.runtime.redis_bus import RedisStreamsBus

    srv = _rs.RedisServer(executable=redis_executable).start()
    try:
        bus = RedisStreamsBus(_rs.connect(srv.url, **_client_kw()), "broken1")
        bus.advertise("a.out", remote=True)
        mine = bus.subscribe("a.out", "b.in")
        theirs = bus.subscribe("c.out", "b.other")
        bus.publish(Message("a.out", 0, 0, 0, {"n": 0}))
        assert bus.broken is None and bus.pump(0.0) == 0
        os.kill(srv.pid, signal.SIGKILL)
        srv.stop()
        bus.publish(Message("a.out", 1, 0, 0, {"n": 1}))          # the send fails later, or now: never raises
        bus.pump(0.01)
        assert bus.broken is not None and "Error" in bus.broken
        bus.publish(Message("a.out", 2, 0, 0, {"n": 2}))
        assert [m.payload["n"] for m in mine.drain()] == [0, 1, 2] and theirs.drain() == []
        assert bus.states() == {} and bus.get_info("x") is None and bus.poll_stop() is None and bus.n_unsent >= 1
        bus.set_state("a", {"state": "running"})
        bus.request_stop("x")
        bus.close()
    finally:
        srv.stop()


# -- a child process killed mid-session ------------------------------------------------------------
def _session_graph(cal_s=5.0, cl_s=3.0, click=True, split=True):
    where = {"where": "subprocess", "group": "pipeline"} if split else {}
    return {"name": "kill-child", "bin_ms": 20, "clock": "realtime", "stats_after_s": 1.0, "bus": {"kind": "redis"},
            "watchdog": {"stall_ms": 250, "output_timeout_ms": 500},
            "nodes": {
                "participant": {"kind": "participant", "params": {"seed": 0}, "inputs": {"cursor": "cursor.state"}},
                "implant": {"kind": "sim_source", "params": {"seed": 0, "config": {"n_channels": 24}, "chunk_ms": 5},
                            "inputs": {"intent": "participant.intent"}},
                "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}}, "inputs": {"raw": "implant.raw"},
                        **where},
                "decoder": {"kind": "decoder", "params": {"decoder": "kalman", "click": True},
                            "inputs": {"features": "dsp.features", "labels": "participant.intent",
                                       "control": "cursor.control"}, **where},
                "cursor": {"kind": "cursor", "params": {"seed": 0, "decoder_kind": "kalman", "blocks": [
                    {"name": "calibration", "kind": "calibration", "task": "centre_out", "seconds": cal_s,
                     "task_params": {"click": click}},
                    {"name": "fit", "kind": "fit"},
                    {"name": "closed-loop", "kind": "closed_loop", "task": "centre_out", "seconds": cl_s,
                     "task_params": {"click": True}}]},
                    "inputs": {"intent": "decoder.intent", "participant": "participant.intent"}},
                "gates": {"kind": "sink", "params": {"keep": 100}, "inputs": {"data": "cursor.gate"}},
            }}


@pytest.mark.req("SR-05")
@pytest.mark.parametrize("block", ["calibration", "closed-loop"])
def test_a_child_killed_mid_block_comes_back_with_its_bins_and_decoder_and_the_session_finishes(
        redis_server, tmp_path, block):
    bg = _Background(_session_graph(), redis_url=redis_server.url, out_dir=tmp_path)

    def in_block():
        cur = bg.node("cursor")
        blk = getattr(cur, "block", None)
        return (blk is not None and blk.name == block and blk.n >= 40) or not bg.thread.is_alive()

    _wait(in_block, 120, f"40 bins of the {block} block")
    os.kill(bg.runner._workers["pipeline"]["proc"].pid, signal.SIGKILL)
    res = bg.join(180)
    assert res["failure"] is None and res["stop_reason"] == "cursor: schedule finished"
    assert res["processes"]["pipeline"]["restarts"] == 1
    back = [e for e in res["faults"] if e["kind"] == "decoder_recovered"]
    assert len(back) == 1
    fits = res["nodes"]["decoder"]["summary"]["fits"]
    assert fits and fits[0]["n_bins"] >= 40                     # the bins before the kill were kept
    if block == "calibration":
        assert "block 'calibration' in progress" in back[0]["message"] and back[0]["version"] == 0
    else:                                                        # it came back fitted, mid-block, decoding
        assert back[0]["version"] == 1 and "block 'closed-loop' in progress" in back[0]["message"]
        assert res["nodes"]["decoder"]["summary"]["version"] == 1
    blocks = {b["name"]: b for b in res["nodes"]["cursor"]["summary"]["blocks"]}
    assert blocks["closed-loop"]["n_bins"] == 150


@pytest.mark.req("SR-31")
def test_a_scheduled_fit_that_fails_ends_the_run_naming_it_instead_of_waiting_forever(tmp_path):
    # calibration without click intent, click decoder asked for: the fit fails; in real time the cursor
    # waited for a decoder version that never came
    g = _session_graph(cal_s=2.0, click=False, split=False)
    g["bus"] = {"kind": "inprocess"}
    bg = _Background(g, out_dir=tmp_path)
    res = bg.join(120)
    f = res["failure"]
    assert f["kind"] == "fit_failed" and f["node"] == "decoder" and "no click intent" in f["message"]
    gates = [m.payload for m in bg.node("gates").kept]
    assert gates[-1].halted and any(x["kind"] == "fit_failed" for x in gates[-1].faults)


def test_the_decoder_journal_reads_back_blocks_bins_model_and_skips_applied_controls():
    from cortexlink.core.messages import Control, FeatureBin, ParticipantIntent
    from cortexlink.runtime.bus import InProcessBus, Message
    from cortexlink.runtime.node import NodeContext
    from cortexlink.runtime.nodes.decoder import DecoderNode
    from cortexlink.runtime.wire import decode_message, encode_message

    class Journal:                 # the records, kept as the Redis stream keeps them (bytes)
        def __init__(self):
            self.records = []

        def append(self, kind, fields=None, **values):
            f = {k: bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for k, v in (fields or {}).items()}
            self.records.append((kind, json.loads(json.dumps(values)), f))

        def read(self):
            return [(k, v, dict(f)) for k, v, f in self.records]

    journal = Journal()
    graph = {"bin_ms": 20.0, "nodes": {"decoder": {"inputs": {"features": {"from": "dsp.features"},
                                                              "control": {"from": "cursor.control"}}}}}

    def make():
        bus = InProcessBus()
        bus.set_info("dsp/features", {"names": [f"f{i}" for i in range(4)]})
        ctx = NodeContext(bus=bus, graph=graph, realtime=False, now_ns=lambda: 0, fault=lambda *a, **k: None,
                          request_stop=lambda r: None, health=dict, journal=lambda n: journal)
        params = {k: p.default for k, p in DecoderNode.PARAMS.items()}    # every parameter, new ones too
        params.update({"decoder": "kalman", "decoder_params": {}, "path": None, "click": False, "click_params": {},
                       "click_path": None, "save_dir": None, "fit_in_thread": False, "labels": "intent",
                       "label_lag_s": 0.0, "speed_gain": 0.5, "click_freeze_proba": None})
        node = DecoderNode("decoder", params, ctx)
        node.subs = {"control": bus.subscribe("cursor.control", "decoder.control", maxlen=64, policy="fail"),
                     "features": bus.subscribe("dsp.features", "decoder.features")}
        node.setup()
        return node

    rng = np.random.default_rng(0)
    a = make()
    seq = iter(range(100))

    def control(node, c):
        m = Message("cursor.control", next(seq), 0, 0, c)
        m = decode_message("cursor.control", {k: v if isinstance(v, bytes) else str(v).encode()
                                              for k, v in encode_message(m).items()})
        node.step({"control": [m]}, 0)
        return m

    control(a, Control("begin", "cal", "calibration", "open", 0))
    for g in range(60):
        a.step({"labels": [Message("p.i", g, 0, 0, ParticipantIntent(g, (float(np.sin(g / 5)), 0.0), 0.0))]}, 0)
        x = rng.normal(size=4).astype(np.float32) + np.float32(np.sin(g / 5))
        a.step({"features": [Message("dsp.features", g, g * 600, 0, FeatureBin(g, g * 600, x, True))]}, 0)
    control(a, Control("end", "cal"))
    control(a, Control("fit", "fit"))
    last = control(a, Control("begin", "cl", "closed_loop", "closed", 60))
    for g in range(60, 70):
        a.step({"features": [Message("dsp.features", g, g * 600, 0, FeatureBin(g, g * 600, rng.normal(size=4).astype(np.float32), True))]}, 0)
    assert a.fitted and a.version == 1 and len(a.block["bins"]) == 10
    b = make()                                               # a new process: everything from the journal
    assert b.fitted and b.version == 1 and b.mode == "closed" and b.block["name"] == "cl"
    assert [len(x["bins"]) for x in b.calib] == [60] and len(b.block["bins"]) == 10
    np.testing.assert_array_equal(np.asarray(b.calib[0]["x"]), np.asarray(a.calib[0]["x"]))
    assert b.subs["control"].resume_after == last.seq and b.n_jobs == a.n_jobs == 1
    a.decoder.reset_state()                                  # a restart resets the filter, as a block start does
    xs = rng.normal(size=4)
    np.testing.assert_allclose(b.decoder.step(xs), a.decoder.step(xs))
    assert b.speed_gain == a.speed_gain and a.speed_gain.s0_units_s == 0.5    # the output's gain came back too
    # what ReFIT refits on besides the closed loop (the fit's calibration) comes back too, and an
    # in-process restart (the supervisor calls setup again) keeps it
    (Xa, ya), (Xb, yb) = a._refit_prior(), b._refit_prior()
    assert Xa.shape == (60, 4)
    np.testing.assert_array_equal(Xa, Xb)
    np.testing.assert_array_equal(ya, yb)
    a.setup()
    np.testing.assert_array_equal(a._refit_prior()[0], Xa)


# -- stop signals ------------------------------------------------------------------------------------
@pytest.mark.req("SR-12")
def test_a_stop_signal_asks_the_running_graph_to_stop_once_and_a_burst_is_absorbed():
    from cortexlink.runtime.signals import stop_on_signals, stopper

    got = []
    with stop_on_signals() as sig:
        with stopper(got.append):
            for s in [signal.SIGTERM] + [signal.SIGINT, signal.SIGHUP] * 10:
                os.kill(os.getpid(), s)
            _wait(lambda: sig.n_received == 21, 10, "the signals")
    assert got == ["SIGTERM received"] and sig.exit_code == 143 and sig.name == "SIGTERM"
    # outside a graph's loop the first signal unwinds the command as Ctrl+C does
    with pytest.raises(KeyboardInterrupt):
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGHUP)
            _wait(lambda: False, 10, "the signal")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_a_stop_that_hangs_is_interrupted_by_a_later_signal(monkeypatch):
    from cortexlink.runtime import signals

    monkeypatch.setattr(signals, "ESCALATE_AFTER_S", 0.0)
    with pytest.raises(KeyboardInterrupt):
        with signals.stop_on_signals():
            with signals.stopper(lambda reason: None):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGTERM)
                _wait(lambda: False, 10, "the second signal")


def _cli_run(tmp_path, graph):
    gfile = tmp_path / "g.yaml"
    gfile.write_text(json.dumps(graph))
    err = open(tmp_path / "stderr.txt", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cortexlink.cli.main", "-v", "run", str(gfile), "--redis", "auto",
                             "--out", str(tmp_path / "runs")], stdout=subprocess.DEVNULL, stderr=err)
    return proc, err


def _children(pid):
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                    out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError):
                pass
    return out


def _gone(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


@pytest.mark.req("SR-12")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
@pytest.mark.parametrize("burst", [[signal.SIGTERM], [signal.SIGTERM, signal.SIGINT, signal.SIGHUP] * 15])
def test_signals_stop_run_redis_auto_cleanly_summary_written_nothing_left(redis_executable, replay, tmp_path, burst):
    proc, err = _cli_run(tmp_path, _pipeline_graph(replay))
    try:
        def ready():
            kids = _children(proc.pid)
            return any("--node" in c for c in kids.values()) and any("redis-server" in c for c in kids.values()) \
                and "started process" in (tmp_path / "stderr.txt").read_text()
        _wait(lambda: ready() or proc.poll() is not None, 120, "the run's child processes")
        time.sleep(1.0)
        kids = _children(proc.pid)
        rs = next(p for p, c in kids.items() if "redis-server" in c)
        folder = os.readlink(f"/proc/{rs}/cwd")
        for s in burst:
            os.kill(proc.pid, s)
        rc = proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        err.close()
    text = (tmp_path / "stderr.txt").read_text()
    assert rc in {128 + int(s) for s in burst} and "stopped by SIG" in text and "Traceback" not in text
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["stop_reason"].endswith("received") and summary["failure"] is None
    assert summary["processes"]["pipeline"]["returncode"] is not None
    assert all(_gone(p) for p in kids) and not os.path.exists(folder)


@pytest.mark.req("SR-12")
def test_sigterm_of_session_run_writes_what_ran_and_exits_143(tmp_path):
    sess = tmp_path / "long.yaml"
    sess.write_text("name: long\nimplant: {n_channels: 24}\ndecoder: {kind: kalman}\nclick_decoder: {enabled: false}\n"
                    "blocks:\n  - {kind: calibration, task: centre_out, seconds: 3000}\n  - {kind: fit}\n")
    err = open(tmp_path / "stderr.txt", "wb")
    # -v: the dsp's INFO line says the graph's loop runs (a fixed sleep after the run folder appeared
    # sent the signal during start-up on a loaded machine, before there was a run to summarise)
    proc = subprocess.Popen([sys.executable, "-m", "cortexlink.cli.main", "-v", "session", "run", str(sess), "--out",
                             str(tmp_path / "runs"), "--no-progress"], stdout=subprocess.DEVNULL, stderr=err)
    try:
        _wait(lambda: "calibrated on" in (tmp_path / "stderr.txt").read_text() or proc.poll() is not None, 300,
              "the dsp to calibrate in the loop")   # 3000 s of calibration block: far from done
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        err.close()
    text = (tmp_path / "stderr.txt").read_text()
    assert rc == 143 and "Traceback" not in text and "was stopped (SIGTERM received)" in text
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["completed"] is False and summary["runtime"]["stop_reason"] == "SIGTERM received"
