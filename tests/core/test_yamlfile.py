"""core.yamlfile: the one loader of users' YAML — limits on size, nesting and alias expansion, clear
refusals, numbers in exponent form; property-based: any text or bytes give a value or a ConfigError."""

import resource

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortexlink.core.errors import ConfigError
from cortexlink.core.yamlfile import MAX_DEPTH, MAX_EXPANSION, brief, load_yaml, read_yaml_file


def _bomb(levels=9, width=9):
    """The "billion laughs": ``width ** levels`` strings from a dozen lines."""
    text = 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]\n"
    return text + f"name: *a{levels - 1}\n"


def test_alias_bomb_is_refused_quickly_and_small():
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match=r"session file s.yaml is refused: anchors and aliases expand it to more than"):
        load_yaml(_bomb(), what="session file s.yaml")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200_000   # KiB: no expansion in memory


def test_aliases_within_reason_are_read():
    doc = load_yaml("base: &b {task: centre_out, seconds: 10}\nblocks: [*b, *b, {<<: *b, seconds: 5}]\n")
    assert doc["blocks"][0] == doc["blocks"][1] == {"task": "centre_out", "seconds": 10}
    assert doc["blocks"][2] == {"task": "centre_out", "seconds": 5}


def test_self_referencing_alias_and_deep_nesting_are_refused():
    with pytest.raises(ConfigError, match="refers to the value that contains it"):
        load_yaml("a: &a [1, *a]")
    with pytest.raises(ConfigError, match=f"nested more than {MAX_DEPTH} levels deep"):
        load_yaml("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(ConfigError, match="nested"):
        load_yaml("".join("  " * i + "k:\n" for i in range(200)) + "  " * 200 + "v")
    for deep in ("[" * 100000, "{a: " * 30000):
        with pytest.raises(ConfigError):
            load_yaml(deep)
    assert load_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None


def test_size_limit_reads_no_further(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"name: x\n" + b"# padding\n" * 5_000_000)           # 50 MB
    with pytest.raises(ConfigError, match=r"session file .*big.yaml is 50,000,008 bytes; at most 1,000,000"):
        read_yaml_file(big, what="session file")
    with pytest.raises(ConfigError, match="at most 100 bytes"):
        load_yaml("a: " + "x" * 200, max_bytes=100)


def test_encodings_control_characters_and_missing_files(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 0xe9 at offset 9\); save it as UTF-8"):
        read_yaml_file(p, what="session file")
    p.write_bytes("name: café\n".encode("utf-16"))
    assert read_yaml_file(p) == {"name": "café"}
    p.write_bytes("\ufeffname: café\n".encode("utf-8"))
    assert read_yaml_file(p) == {"name": "café"}
    p.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="session file"):
        read_yaml_file(p, what="session file")
    with pytest.raises(ConfigError, match="a character YAML does not allow"):
        load_yaml("name: a\x00b")
    with pytest.raises(ConfigError, match="does not exist or is not a regular file"):
        read_yaml_file(tmp_path / "nothing.yaml")
    with pytest.raises(ConfigError, match="does not exist or is not a regular file"):
        read_yaml_file(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml_file("x" * 5000)


def test_syntax_errors_and_bad_tags_name_the_problem():
    with pytest.raises(ConfigError, match=r"is not valid YAML: .*line 1"):
        load_yaml("{a: 1")
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        load_yaml("!!python/object/apply:os.system ['true']")
    for bad in ("!!int x", "!!float abc", "!!timestamp foo", "a: " + "1" * 5000):
        with pytest.raises(ConfigError):
            load_yaml(bad)


def test_numbers_in_exponent_form_are_numbers():
    doc = load_yaml("a: 1e12\nb: 1.5e3\nc: -2E-3\nd: 1.0\ne: 1_000\nf: e3\ng: 1e\nh: '1e12'\ni: .5e1")
    assert doc == {"a": 1e12, "b": 1500.0, "c": -0.002, "d": 1.0, "e": 1000, "f": "e3", "g": "1e", "h": "1e12",
                   "i": 5.0}


def test_brief_cuts_values_short():
    assert len(brief("x" * 100_000)) < 80 and len(brief(list(range(100_000)))) < 80
    assert len(brief({i: [[[i]]] for i in range(1000)})) < 200
    assert brief("demo") == "'demo'"


# ------------------------------------------------------------------------------------------ properties
def _check(doc):
    try:
        load_yaml(doc, what="session file")
    except ConfigError as exc:
        assert str(exc).startswith("session file") and len(str(exc)) < 1000


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_any_text_or_bytes_give_a_value_or_a_config_error(doc):
    _check(doc)


_yamlish = st.lists(st.sampled_from(["a:", " ", "\n", "- ", "&x ", "*x", "&y ", "*y", "[", "]", "{", "}", ",",
                                     "<<: ", "!!int ", "!!str ", "!!binary ", "!!set ", "? ", "'", '"', "1e5", "#",
                                     "---\n", "...\n", "|\n", ">\n", "~", "\t", "b: c"]), max_size=60).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_yamlish)
def test_yaml_like_fragments_give_a_value_or_a_config_error(doc):
    _check(doc)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels=st.integers(2, 12), width=st.integers(2, 12))
def test_alias_heavy_documents_stay_small_and_fast(levels, width):
    try:
        doc = load_yaml(_bomb(levels, width))
    except ConfigError as exc:
        assert "anchors and aliases expand it" in str(exc)
        assert 9 * width ** (levels - 1) > MAX_EXPANSION / 8          # refused only when really large
    else:
        assert len(doc["name"]) == width
