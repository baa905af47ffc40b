"""`cortexlink quality` on damaged copies of the real EEG recordings: each damage is caught by the
check meant for it, with evidence pointing at the damaged place, and the undamaged data set gives
no finding of those checks at severity >= warning.

The damaged copies are made by tests/quality/_damage.py from ../shared/data/eeg_motor_imagery
(skipped with a reason when absent); each data set is the three imagined fists-vs-feet runs
(6, 10, 14) with run 6 damaged. Each report is computed once per module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import _damage as D
from _shared_data import SHARED_DATA, need

DATA_DIR = SHARED_DATA / "eeg_motor_imagery"


@pytest.fixture(scope="module", autouse=True)
def _imagery_runs():
    """Skips the module without runs 6, 10, 14 of EEGMMIDB subject 1 (fails it under CI=true);
    module-scoped and autouse, so it runs before the module's report cache."""
    for f in D.IMAGERY_RUNS:
        need(DATA_DIR / f, "a real EEG recording (runs 6, 10, 14 of EEGMMIDB subject 1)")

#: Permutations for the chance level where the baseline runs (few: the tests judge findings; >= 19
#: so that p < 0.05 is reachable and the baseline does not warn for want of permutations).
N_PERMUTATIONS = 20


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """``get(name) -> (damage, report)``, each report computed once for the module."""
    workdir = tmp_path_factory.mktemp("damage")
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = D.run_case(name, DATA_DIR, workdir, n_permutations=N_PERMUTATIONS)
        return cache[name]

    return get


@pytest.mark.req("SR-51")
@pytest.mark.parametrize("case", D.CASES, ids=[c.name for c in D.CASES])
def test_damage_is_caught_where_it_is(reports, case):
    damage, report = reports(case.name)
    verdict = D.judge(case, damage, report.findings)
    assert verdict.caught, (f"{case.name}: " + "; ".join(verdict.problems)
                            + f"\nfindings of {case.check}: "
                            + repr([f.to_dict() for f in report.findings if f.check == case.check]))


@pytest.mark.parametrize("case", D.CASES, ids=[c.name for c in D.CASES])
def test_no_target_check_flags_an_undamaged_file(reports, case):
    """In each damaged data set, none of the ten target checks flags a file that was left intact, and
    no check fails on the damage."""
    damage, report = reports(case.name)
    stray = [f.to_dict() for f in D.at_least_warning(report.findings)
             if f.check in D.TARGET_CHECKS and f.file is not None and f.file not in damage.files]
    assert stray == []
    crashed = [f.to_dict() for f in report.findings if f.detail.startswith("check failed")]
    assert crashed == []


@pytest.mark.parametrize("name", ["clean", "clean_reexport"])
def test_undamaged_data_set_gives_no_target_finding(reports, name):
    """The real recordings (byte copies; and the same written back by the damage writer) give no
    finding >= warning from the ten checks that target the damages."""
    _, report = reports(name)
    false = [f.to_dict() for f in D.at_least_warning(report.findings) if f.check in D.TARGET_CHECKS]
    assert false == []
    crashed = [f.to_dict() for f in report.findings if f.detail.startswith("check failed")]
    assert crashed == []
    ran = {r.check for r in report.results}
    missing = sorted(set(D.TARGET_CHECKS) - ran - {"split_leakage"})  # no split file given here
    assert missing == [], f"target checks that did not run: {missing}"


def test_judge_rejects_findings_at_the_wrong_place():
    """The judge itself can fail: a finding on an undamaged file or channel is not a catch."""
    from cortexlink.quality.model import Finding
    case = D.CASE_BY_NAME["clipped_channel"]
    damage = D.Damage("clipped_channel", ["S001R06.edf"], channel="Cz..")
    right = Finding("clipped_channels", "signal_quality", "warning", "on the rail", file="S001R06.edf",
                    channel="Cz..")
    wrong_file = Finding("clipped_channels", "signal_quality", "warning", "x", file="S001R10.edf", channel="Cz..")
    wrong_ch = Finding("clipped_channels", "signal_quality", "warning", "x", file="S001R06.edf", channel="C4..")
    info = Finding("clipped_channels", "signal_quality", "info", "x", file="S001R06.edf", channel="Cz..")
    assert D.judge(case, damage, [right]).caught
    assert not D.judge(case, damage, [info]).caught
    assert not D.judge(case, damage, [wrong_file]).caught
    assert not D.judge(case, damage, [right, wrong_ch]).caught
    past = D.CASE_BY_NAME["events_past_end"]
    dmg = D.Damage("events_past_end", ["S001R06.edf"], start_s=135.0)
    assert D.judge(past, dmg, [Finding("event_bounds", "accuracy", "error", "x", file="S001R06.edf",
                                       start_s=135.0)]).caught
    assert not D.judge(past, dmg, [Finding("event_bounds", "accuracy", "error", "x", file="S001R06.edf",
                                           start_s=12.0)]).caught


def test_damaged_copies_differ_from_the_original_only_where_damaged(tmp_path):
    """Each writer changes what it says and nothing else (read back through MNE)."""
    import warnings

    import mne

    def read(p):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mne.io.read_raw_edf(p, preload=True, verbose="error")

    src = DATA_DIR / D.IMAGERY_RUNS[0]
    orig = read(src)
    x = orig.get_data() * 1e6
    ch = D.pick_channel(src, D.DAMAGED_CHANNEL_IDX)
    ci = orig.ch_names.index(ch)

    D.reexport_clean(src, tmp_path / "same.edf")
    assert np.array_equal(read(tmp_path / "same.edf").get_data() * 1e6, x)

    dmg = D.clip_channel(src, tmp_path / "clip.edf", ch)
    y = read(tmp_path / "clip.edf").get_data() * 1e6
    others = np.arange(x.shape[0]) != ci
    assert np.array_equal(y[others], x[others])
    assert np.allclose(np.abs(y[ci]).max(), 100.0) and dmg.extra["fraction_on_rail"] > 0.05
    assert np.abs(x[ci]).max() > 100.0  # the original is not clipped there

    dmg = D.line_noise(src, tmp_path / "line.edf", ch)
    y = read(tmp_path / "line.edf").get_data() * 1e6
    assert np.array_equal(y[others], x[others])
    resid = y[ci] - x[ci]
    assert np.sqrt(np.mean(resid ** 2)) == pytest.approx(10 * dmg.extra["channel_rms_uv"], rel=0.02)

    dmg = D.flip_labels(src, tmp_path / "flip.edf")
    flipped = read(tmp_path / "flip.edf")
    assert np.array_equal(flipped.get_data(), orig.get_data())
    changed = [(o, a, b) for o, a, b in zip(orig.annotations.onset, orig.annotations.description,
                                            flipped.annotations.description) if a != b]
    assert [o for o, _, _ in changed] == pytest.approx(dmg.extra["flipped_onsets_s"])
    assert len(changed) == round(0.2 * dmg.extra["n_trials"])
    assert all({a, b} == {"T1", "T2"} for _, a, b in changed)

    D.drop_channel(src, tmp_path / "drop.edf", ch)
    dropped = read(tmp_path / "drop.edf")
    assert ch not in dropped.ch_names and len(dropped.ch_names) == len(orig.ch_names) - 1

    D.patient_name(src, tmp_path / "name.edf")
    raw = (tmp_path / "name.edf").read_bytes()
    assert b"John_Smith" in raw[8:88] and raw[88:] == src.read_bytes()[88:]

    D.resample(src, tmp_path / "rs.edf")
    assert read(tmp_path / "rs.edf").info["sfreq"] == 128.0

    dmg = D.events_past_end(src, tmp_path / "past.edf")
    onsets = mne.read_annotations(tmp_path / "past.edf").onset
    assert onsets.max() == pytest.approx(dmg.start_s) and dmg.start_s > orig.times[-1]

    dmg = D.truncate(src, tmp_path / "cut.edf")
    assert (tmp_path / "cut.edf").stat().st_size == int(0.6 * src.stat().st_size)
    assert read(tmp_path / "cut.edf").times[-1] < dmg.region_s[0] + 1.0


def test_build_case_rejects_an_unknown_damage(tmp_path):
    with pytest.raises(KeyError, match="unknown damage 'scrambled'"):
        D.build_case("scrambled", DATA_DIR, tmp_path / "x")


def test_table_lists_every_damage():
    rows = [(c, D.Verdict(True, "warning: `f.edf` — seen", [])) for c in D.CASES]
    table = D.markdown_table(rows)
    assert table.count("\n") == len(D.CASES) + 1
    for c in D.CASES:
        assert f"`{c.check}`" in table
    assert Path(D.__file__).name == "_damage.py"
