"""The sorters' in-RAM cache sized for sessions sorted at once (sorters.cache_params,
run_sorter(memory_share=...), the data set task's share from its Ray node).

tridesclous2 and spykingcircus2 each copy the preprocessed recording into RAM when it fits in
half of the free memory, a check each process makes for itself: two sessions of a data set
build (256 channels x 300 s, 9.2 GB each) started together on a 24 GB machine both took the copy
and Ray's memory monitor killed one. With a share of 1/N, each sizes its copy against its part.
"""

from __future__ import annotations

import psutil
import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.sorting.sorters import cache_params, run_sorter


def _known(sorter: str) -> dict:
    from spikeinterface.sorters.sorterlist import sorter_dict

    return sorter_dict[sorter].default_params()


def _lazy_recording(n_channels: int, seconds: float):
    """A lazy noise recording (nothing is held in memory) with a probe."""
    from probeinterface import generate_linear_probe
    from spikeinterface.generation import NoiseGeneratorRecording

    rec = NoiseGeneratorRecording(num_channels=n_channels, sampling_frequency=30_000.0, durations=[seconds],
                                  dtype="float32", seed=0)
    probe = generate_linear_probe(num_elec=n_channels, ypitch=20.0)
    probe.set_device_channel_indices(list(range(n_channels)))
    rec.set_probe(probe)
    return rec


def test_tridesclous2_caches_in_ram_only_what_fits_in_its_share():
    small = _lazy_recording(4, 1.0)                       # 480 kB
    assert cache_params(_known("tridesclous2"), small, 1.0) == {"cache_preprocessing_mode": "memory"}
    assert cache_params(_known("tridesclous2"), small, 0.5) == {"cache_preprocessing_mode": "memory"}
    # a recording whose float32 copy is 40 % of the free memory: fits alone (under half), not in half of it
    free = psutil.virtual_memory().available
    seconds = 0.4 * free / (4.0 * 64 * 30_000.0)
    big = _lazy_recording(64, seconds)
    assert cache_params(_known("tridesclous2"), big, 1.0) == {"cache_preprocessing_mode": "memory"}
    assert cache_params(_known("tridesclous2"), big, 0.5) == {"cache_preprocessing_mode": "folder"}
    assert cache_params(_known("lupin"), big, 0.5) == {"cache_preprocessing_mode": "folder"}


def test_spykingcircus2_limit_is_scaled_and_others_get_nothing():
    rec = _lazy_recording(4, 1.0)
    own = _known("spykingcircus2")["cache_preprocessing"]
    got = cache_params(_known("spykingcircus2"), rec, 0.5)["cache_preprocessing"]
    assert got["memory_limit"] == pytest.approx(own["memory_limit"] * 0.5)
    assert {k: v for k, v in got.items() if k != "memory_limit"} == {k: v for k, v in own.items()
                                                                   if k != "memory_limit"}
    assert cache_params(_known("mountainsort5"), rec, 0.5) == {}
    assert cache_params(_known("simple"), rec, 0.5) == {}


class _Stop(Exception):
    pass


def _captured(monkeypatch) -> dict:
    """SpikeInterface's run_sorter replaced by one that keeps the keyword arguments cortexlink
    passes and stops there (what reaches the sorter, without running it)."""
    import spikeinterface.sorters as ss

    seen: dict = {}

    def keep(sorter_name, recording, **kw):
        seen.update(kw, sorter_name=sorter_name)
        raise _Stop

    monkeypatch.setattr(ss, "run_sorter", keep)
    return seen


@pytest.mark.parametrize("share, expected", [(1.0, None), (0.5, "memory")])
def test_run_sorter_passes_the_share_and_the_users_cache_wins(tmp_path, monkeypatch, share, expected):
    seen = _captured(monkeypatch)
    rec = _lazy_recording(8, 1.0)
    with pytest.raises(_Stop):
        run_sorter(rec, "tridesclous2", tmp_path / "s", memory_share=share, progress=False)
    assert seen.get("cache_preprocessing_mode") == expected       # 1.0: nothing, the sorter's own default
    with pytest.raises(_Stop):
        run_sorter(rec, "tridesclous2", tmp_path / "s2", memory_share=0.5, progress=False,
                   params={"cache_preprocessing_mode": "no-cache"})
    assert seen["cache_preprocessing_mode"] == "no-cache"


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.5, True, "half", None])
def test_bad_memory_share_is_refused_before_anything_is_touched(tmp_path, bad):
    from cortexlink.sorting.pipeline import sort_recording

    kept = tmp_path / "s" / "kept.txt"
    kept.parent.mkdir()
    kept.write_text("an earlier sort")
    with pytest.raises(ConfigError, match="memory_share"):
        run_sorter(_lazy_recording(8, 1.0), "tridesclous2", tmp_path / "s", memory_share=bad, progress=False)
    assert kept.read_text() == "an earlier sort"          # the folder run_sorter would replace is left alone
    with pytest.raises(ConfigError, match="memory_share"):
        sort_recording(tmp_path / "missing.nwb", tmp_path / "out", sorter="tridesclous2", memory_share=bad)
    assert not (tmp_path / "out").exists()                # refused before the input is read or the folder made


def test_outside_ray_a_task_counts_on_the_whole_machine():
    from cortexlink.sorting._dataset_tasks import memory_share

    assert memory_share() == 1.0          # inside a build: tests/sorting/test_dataset.py (1 / the node's CPUs)
