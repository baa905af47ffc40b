"""``cortexlink bench safety``: how its figures are read from the cursor's messages (the drills
themselves run in tests/runtime/test_runtime_realsignals.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cortexlink.bench import safety, safety_cases
from cortexlink.core.errors import ConfigError
from cortexlink.core.messages import CursorState, Gate

MS = 1_000_000


def _state(bin_, halted, v=(0.3, -0.1), clicked=False):
    return CursorState(bin_, bin_ * 0.02, (0.0, 0.0), (0.0, 0.0) if halted else v, clicked, halted, None, None,
                       False, None, False, None)


def test_halt_figures_count_the_bins_that_moved_after_the_fault_and_map_the_time_to_bins():
    t0 = 1_000 * MS
    states = [(t0 - 20 * MS, _state(1, False)), (t0 + 5 * MS, _state(2, False, clicked=True)),
              (t0 + 25 * MS, _state(3, False)), (t0 + 61 * MS, _state(4, True)), (t0 + 80 * MS, _state(5, True))]
    gates = [(t0 - 500 * MS, Gate(True, (0.0, 0.0), True)), (t0 - 400 * MS, Gate(False)),
             (t0 + 41 * MS, Gate(True, (0.0, 0.0), True))]
    f = safety.halt_figures(states, gates, t0)
    # the gate at +41 ms held it first (a halt before the fault does not count): 3 bins of 20 ms;
    # two bins moved the cursor after the fault, one of them with a click
    assert f == {"halted": True, "halt_ms": 41.0, "bins_to_halt": 3, "moved_bins": 2, "clicks_before_halt": 1}
    # a halt carried by a bin only (the E-STOP publishes no gate)
    f = safety.halt_figures(states, [], t0)
    assert f["halt_ms"] == 61.0 and f["bins_to_halt"] == 4 and f["moved_bins"] == 2
    # never held
    f = safety.halt_figures(states[:3], gates[:2], t0)
    assert f == {"halted": False, "halt_ms": None, "bins_to_halt": None, "moved_bins": 2, "clicks_before_halt": 1}


def test_unknown_cases_are_refused():
    with pytest.raises(ConfigError, match="unknown safety case"):
        safety_cases.run(["no_such_case"])
    out = subprocess.run([sys.executable, "-m", "cortexlink.cli.main", "bench", "safety", "--cases", "nope"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "invalid choice: 'nope'" in out.stderr and "sigkill_pipeline" in out.stderr
