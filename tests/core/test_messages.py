"""The typed messages of a closed loop (core.messages): round trips through to_dict/from_dict and
the Redis wire format, and the refusals of malformed ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cortexlink.core.errors import ValidationError
from cortexlink.core.messages import (BinRow, Control, ControlCommand, CursorState, FeatureBin, Gate,
                                      ParticipantIntent)
from cortexlink.core.types import LoopMode, Target
from cortexlink.runtime.bus import Message
from cortexlink.runtime.wire import WIRE_TYPES, decode_message, encode_message


def _over_the_wire(payload):
    fields = encode_message(Message("a.b", 1, 2, 3, payload, 4))
    wire = {k: (bytes(v) if isinstance(v, memoryview) else str(v).encode() if not isinstance(v, bytes) else v)
            for k, v in fields.items()}
    return decode_message("a.b", wire).payload


def _same(a, b):
    """Equal field by field, arrays by value and NaN equal to NaN."""
    assert type(a) is type(b)
    da, db = a.to_dict(), b.to_dict()
    assert da.keys() == db.keys()
    for k in da:
        x, y = da[k], db[k]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert x is not None and y is not None, k
            assert np.asarray(x).dtype == np.asarray(y).dtype, k
            np.testing.assert_array_equal(x, y)
        elif isinstance(x, float) and math.isnan(x):
            assert isinstance(y, float) and math.isnan(y), k
        elif isinstance(x, list) and any(isinstance(v, float) and math.isnan(v) for v in x):
            assert len(x) == len(y) and all((math.isnan(u) and math.isnan(v)) or u == v for u, v in zip(x, y)), k
        else:
            assert x == y, k


MESSAGES = [
    FeatureBin(12, 7200, np.linspace(0, 1, 6, dtype=np.float32), True,
               raster=np.array([0, 3, 255], np.uint8), row=np.arange(10, dtype=np.float32)),
    FeatureBin(0, 0, None, False),
    ParticipantIntent(5, (0.5, -0.25), 0.75, (0.4, -0.2, 0.7), True),
    ParticipantIntent(6),
    CursorState(9, 0.18, (0.1, -0.2), (1.0, 0.5), clicked=True, halted=False, block="cl1", mode=LoopMode.CLOSED,
                begin=True, target=Target((0.3, 0.4), 0.05, click=False, dwell_s=0.5), done=False,
                op={"state": "running", "estop": False}),
    CursorState(0, 0.0, (0.0, 0.0)),
    Control("begin", "calib", "calibration", "open", 40),
    Control(ControlCommand.REFIT, "refit-1", blocks=({"name": "cl1", "bins": [1, 2], "dt_s": 0.02},), job=True),
    Gate(True, (0.0, 0.0), True, ({"kind": "decoder_nan", "severity": "halt", "node": "decoder"},)),
    Gate(False),
    BinRow("cl1", 3, 44, 26400, 0.9, (0.1, 0.2), (0.5, 0.0), intended_velocity=(0.4, 0.1), click_intent=0.2,
           decoded_velocity=(0.35, 0.05), click_proba=0.1, clicks=False, target_xy=(0.3, 0.3), target_radius=0.05,
           on_target=False, decode_latency_us=12.5, loop_latency_us=410.0, halted=False),
    BinRow("calib", 0, 1, 600, 0.02, (0.0, 0.0), (0.0, 0.0)),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_loop_message_round_trips_through_its_dict_and_the_wire(msg):
    assert type(msg).__name__ in WIRE_TYPES
    _same(type(msg).from_dict(msg.to_dict()), msg)
    back = _over_the_wire(msg)
    _same(back, msg)


def test_feature_arrays_travel_as_raw_bytes_not_json():
    fb = FeatureBin(1, 600, np.arange(2048, dtype=np.float32), True)
    fields = encode_message(Message("dsp.features", 0, 0, 0, fb, 0))
    assert fields[b"t"] == "FeatureBin" and len(fields[b"a:x"]) == 2048 * 4
    assert b"2047" not in fields[b"j"].encode()
    back = _over_the_wire(fb)
    assert back.x.dtype == np.float32 and not back.x.flags.writeable


def test_types_that_a_consumer_reads_are_rebuilt_on_the_other_side():
    st = _over_the_wire(MESSAGES[4])
    assert isinstance(st.target, Target) and st.target.dwell_s == 0.5 and st.mode is LoopMode.CLOSED
    assert st.mode == "closed"                                     # a str enum equals its value
    c = _over_the_wire(MESSAGES[7])
    assert c.cmd is ControlCommand.REFIT and c.cmd == "refit" and c.blocks[0]["bins"] == [1, 2] and c.job


@pytest.mark.parametrize("cls, d, match", [
    (FeatureBin, {"bin": 1, "bin_start": 0, "x": None}, r"missing \['valid'\]"),
    (ParticipantIntent, {"bin": 1, "v": (0, 0)}, r"unknown \['v'\]"),
    (CursorState, {"bin": 1, "t_s": 0.0}, r"missing \['xy'\]"),
    (CursorState, {"bin": 1, "t_s": 0.0, "xy": (0, 0), "mode": "sideways"}, "mode must be one of"),
    (CursorState, {"bin": 1, "t_s": 0.0, "xy": (0, 0), "target": {"radius": 1}}, "a target needs xy and radius"),
    (Control, {"cmd": "explode", "name": "x"}, "cmd must be one of"),
    (Control, {"cmd": "begin", "name": "x"}, "a begin control needs the block's kind and mode"),
    (Gate, [], "a Gate is built from a dict; got list"),
    (BinRow, {"block": "b", "n": 0, "bin": 0, "sample": 0, "t_s": 0.0, "cursor_xy": (0, 0)},
     r"missing \['cursor_velocity'\]"),
])
def test_malformed_messages_are_refused_with_what_is_wrong(cls, d, match):
    with pytest.raises(ValidationError, match=match):
        cls.from_dict(d)


def test_messages_are_immutable():
    import dataclasses

    for msg in MESSAGES:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(msg, dataclasses.fields(msg)[0].name, None)
