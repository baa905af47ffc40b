"""bench stim through its CLI: a small run gives every figure the issue names, the summary prints
and survives missing parts (the full figures are measured with `cortexlink bench stim --json`)."""

from __future__ import annotations

import json

from cortexlink.bench import stim
from cortexlink.cli.main import main


def test_small_bench_stim_run(tmp_path, capsys):
    out = tmp_path / "stim.json"
    rc = main(["bench", "stim", "--plans", "400", "--artifact-channels", "16", "--artifact-seconds", "1",
               "--no-auditory", "--json", "--out", str(out)])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == r
    f = r["interlock"]
    assert f["plans_tried"] == 400 and f["pulses_checked"] > 2000 and f["unsafe_pulses_emitted"] == 0
    assert f["pulses_refused"] > 0 and f["review_us_per_plan"] > 0
    for c in r["interlock_cost"].values():
        assert c["unsafe"] == 0 and c["approved"] > 0 and c["us_per_plan"] > 0
    modes = r["artifacts"]["modes"]
    assert set(modes) == {"none", "blank", "template", "blank+template"}
    # Artefacts really become false crossings, and removal takes most of them away.
    assert modes["none"]["false_crossings_per_s"] > 5 * modes["blank+template"]["false_crossings_per_s"]
    assert r["auditory"]["skipped"]


def test_summary_survives_missing_parts(capsys):
    stim.print_summary({})
    stim.print_summary({"interlock": {"plans_tried": 1}, "interlock_cost": {"x": {}},
                        "artifacts": {"baseline": {"false_crossings_per_s": 0.5}, "modes": {"none": {}}},
                        "auditory": {"skipped": "no espeak-ng"}})
    out = capsys.readouterr().out
    assert "unsafe pulses emitted: n/a" in out and "skipped (no espeak-ng)" in out


def test_bad_plan_count():
    import pytest

    with pytest.raises(SystemExit, match="--plans must be >= 1"):
        main(["bench", "stim", "--plans", "0", "--json"])
