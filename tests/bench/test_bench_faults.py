"""The fault campaign's harness (bench faults): cases registered, run in child processes, reported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cortexlink.bench import faults
from cortexlink.core.errors import ConfigError


def test_the_campaign_holds_at_least_forty_cases_in_every_area():
    cases = faults.load_cases()
    assert len(cases) >= 40
    assert {c.area for c in cases.values()} >= {"storage", "runtime", "inputs", "writing"}
    for c in cases.values():
        assert c.doc and c.doc != c.name, f"{c.name} has no description"
        assert 0 < c.timeout_s <= 300


def test_two_cases_run_in_child_processes_and_report_every_field(tmp_path):
    res = faults.run(["session_seconds_1e12", "ui_wrong_host"], workdir=tmp_path)
    assert [c["case"] for c in res["cases"]] == ["session_seconds_1e12", "ui_wrong_host"]
    for c in res["cases"]:
        assert set(c) >= {"case", "area", "survived", "data_lost", "cursor_halted_within_bins", "exit_code",
                          "message_ok", "detail", "seconds"}
        assert c["survived"] is True and c["message_ok"] is True, c
    assert res["summary"]["n_ran"] == 2 and res["summary"]["failed"] == []
    assert (tmp_path / "session_seconds_1e12").is_dir()


def test_an_unknown_pattern_is_refused():
    with pytest.raises(ConfigError, match="no fault case matches"):
        faults.run(["no_such_case_*"])


def test_the_table_survives_skipped_cases_and_missing_values():
    res = {"cases": [
        {"case": "a", "area": "x", "survived": True, "data_lost": None, "cursor_halted_within_bins": None,
         "exit_code": None, "message_ok": True},
        {"case": "b", "area": "x", "survived": False, "data_lost": True, "cursor_halted_within_bins": 3,
         "exit_code": 1, "message_ok": False},
        {"case": "c", "area": "y", "skipped": "needs redis-server"},
        {"case": "d", "area": "y"},
    ]}
    lines = faults.format_table(res).splitlines()
    assert len(lines) == 6
    assert "| b | x | **no** | **yes** | 3 | 1 | **no** |" in lines
    assert "skipped (needs redis-server)" in lines[4]
    assert faults.format_table({}).count("\n") == 1


def test_cli_lists_the_cases_and_runs_one_as_json(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cortexlink.cli.main", "bench", "faults", "--list"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "storage_header_byte_flipped" in out.stdout
    run = subprocess.run([sys.executable, "-m", "cortexlink.cli.main", "bench", "faults", "--only",
                          "ui_static_path_traversal", "--json", "--out", str(tmp_path / "f.json")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(run.stdout)
    assert res["summary"]["n_survived"] == 1
    assert json.loads((tmp_path / "f.json").read_text()) == res
