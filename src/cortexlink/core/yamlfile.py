"""Reading the YAML users write (session files, graph files): one loader, bounded in every way.

:func:`load_yaml` is how cortexlink parses a user's YAML, and :func:`read_yaml_file` how it reads
one from disk. Both refuse, with a :class:`~cortexlink.core.errors.ConfigError` that names the
problem and what to do:

- a file or text over ``max_bytes`` (default :data:`MAX_YAML_BYTES`, 1 MB; a file is never read
  past that);
- bytes that are not UTF-8 text (UTF-16 and UTF-32 with a byte-order mark are accepted), and
  control characters;
- nesting deeper than :data:`MAX_DEPTH` levels;
- anchors and aliases that would stand for more than :data:`MAX_EXPANSION` values and characters
  when expanded (the "billion laughs": ten lines whose aliases stand for billions of values), or
  an alias inside the value it names (a structure that contains itself);
- YAML syntax errors (with the line and column), and values that a tag cannot build.

It reads YAML 1.1 as PyYAML's safe loader does (no Python objects), and also reads numbers in
exponent form without a dot or without a sign in the exponent (``1e12``, ``5E-3``, ``2.5e3``) as
numbers, where YAML 1.1 reads them as strings.

:func:`brief` shortens a value for an error message, so that no message ever holds an unbounded
value.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ConfigError

__all__ = ["load_yaml", "read_yaml_file", "brief", "MAX_YAML_BYTES", "MAX_DEPTH", "MAX_EXPANSION"]

#: Largest session or graph file (bytes): real ones are a few kilobytes.
MAX_YAML_BYTES = 1_000_000
#: Deepest nesting of mappings and lists: real files nest fewer than ten levels.
MAX_DEPTH = 64
#: Most values (one per scalar, list and mapping, plus one per character of each scalar) a
#: document may stand for once its aliases are expanded: a few times the largest file.
MAX_EXPANSION = 4_000_000

_brief = reprlib.Repr()
_brief.maxstring = 60
_brief.maxother = 60
_brief.maxlong = 40
_brief.maxlist = _brief.maxtuple = _brief.maxset = _brief.maxdict = 6
_brief.maxlevel = 3


def brief(value: Any) -> str:
    """``repr(value)`` cut short (long strings, numbers, lists and mappings elided with ``...``):
    what an error message may quote of a value it was given."""
    try:
        return _brief.repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails must not hide the real error
        return f"<{type(value).__name__}>"


def _bytes_text(data: bytes, what: str) -> str:
    boms = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
            (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
    enc = next((e for bom, e in boms if data.startswith(bom)), "utf-8")
    try:
        return data.decode(enc)
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.start + 1]
        raise ConfigError(f"{what} is not {enc.upper().replace('-SIG', '')} text (byte 0x{bad.hex()} at offset "
                          f"{exc.start}); save it as UTF-8 text") from None


def _loader_class() -> type:
    """PyYAML's safe loader with a nesting limit while composing and the exponent-number resolver;
    on libyaml's C parser where PyYAML has it (about four times faster), composed in Python."""
    import yaml
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    try:
        from yaml._yaml import CParser
    except ImportError:                      # PyYAML built without libyaml
        base: type = yaml.SafeLoader
    else:
        class _CBase(CParser, Composer, SafeConstructor, Resolver):
            def __init__(self, stream: str) -> None:
                CParser.__init__(self, stream)
                Composer.__init__(self)
                SafeConstructor.__init__(self)
                Resolver.__init__(self)

            check_node = Composer.check_node
            get_node = Composer.get_node
            get_single_node = Composer.get_single_node

        base = _CBase

    class _Loader(base):  # type: ignore[misc]  # a base chosen at run time (libyaml or not) is not static
        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise ConfigError(f"nested more than {MAX_DEPTH} levels deep (line {mark.line + 1}, "
                                      f"column {mark.column + 1})")
                return Composer.compose_node(self, parent, index)
            finally:
                self._depth -= 1

    # numbers such as 1e12, 1E-3, 2.5e3 (YAML 1.1 reads them as strings)
    _Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."))
    return _Loader


_LOADER: type | None = None


def _check_expansion(root: Any) -> None:
    """Refuse a node graph whose aliases expand past :data:`MAX_EXPANSION` or contain themselves
    (each node is sized once: linear in the document, whatever its aliases stand for)."""
    import yaml

    size: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            if isinstance(node, yaml.SequenceNode):
                total = 1 + sum(size[id(c)] for c in node.value)
            else:
                total = 1 + sum(size[id(k)] + size[id(v)] for k, v in node.value)
            if total > MAX_EXPANSION:
                mark = node.start_mark
                raise ConfigError(f"anchors and aliases expand it to more than {MAX_EXPANSION:,} values "
                                  f"(from line {mark.line + 1}); write the values out instead of "
                                  "nesting aliases")
            size[key] = total
            continue
        if key in size:
            continue
        if key in active:
            mark = node.start_mark
            raise ConfigError(f"an alias refers to the value that contains it (line {mark.line + 1}): a "
                              "structure cannot contain itself")
        if isinstance(node, yaml.ScalarNode):
            size[key] = 1 + len(node.value)
            continue
        active.add(key)
        stack.append((node, True))
        children = node.value if isinstance(node, yaml.SequenceNode) else [c for kv in node.value for c in kv]
        for c in children:
            if id(c) in active:
                mark = c.start_mark
                raise ConfigError(f"an alias refers to the value that contains it (line {mark.line + 1}): a "
                                  "structure cannot contain itself")
            if id(c) not in size:
                stack.append((c, False))


def load_yaml(source: str | bytes, *, what: str = "YAML", max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Parse one YAML document written by a user, within the limits above.

    Parameters
    ----------
    source : str or bytes
        The document (bytes: UTF-8, or UTF-16/32 with a byte-order mark).
    what : str
        What it is, for messages (``"session file s.yaml"``).
    max_bytes : int
        Largest accepted document, in bytes.

    Returns
    -------
    Any
        The document's value (dicts, lists, str, int, float, bool, None, dates, bytes).

    Raises
    ------
    ConfigError
        For anything this module's docstring lists; the message names ``what``.
    """
    global _LOADER
    import yaml

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise ConfigError(f"{what} is {len(data):,} bytes; at most {max_bytes:,} bytes are accepted")
        text = _bytes_text(data, what)
    elif isinstance(source, str):
        text = source
        if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
            raise ConfigError(f"{what} is over {max_bytes:,} bytes; at most {max_bytes:,} bytes are accepted")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ConfigError(f"{what} is not valid Unicode text (a lone surrogate at character {exc.start})") from None
    else:
        raise ConfigError(f"{what} must be YAML text; got {type(source).__name__}")
    if _LOADER is None:
        _LOADER = _loader_class()
    loader = None
    try:
        loader = _LOADER(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except ConfigError as exc:
        raise ConfigError(f"{what} is refused: {exc}") from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(f"{what} holds a character YAML does not allow (#x{exc.character:04x} at offset "
                          f"{exc.position}); save it as plain UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} is not valid YAML: {_yaml_message(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply to read") from None
    except Exception as exc:  # noqa: BLE001 - a tag's constructor failing on a value (e.g. !!int x)
        raise ConfigError(f"{what} holds a value YAML cannot build: {type(exc).__name__}: "
                          f"{str(exc)[:200]}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_message(exc: Any) -> str:
    """PyYAML's error, one line per part, without the source snippet, at most 300 characters."""
    parts = []
    for ctx, mark in ((getattr(exc, "context", None), getattr(exc, "context_mark", None)),
                      (getattr(exc, "problem", None), getattr(exc, "problem_mark", None))):
        if ctx:
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            parts.append(f"{ctx}{where}")
    text = "; ".join(parts) if parts else str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def read_yaml_file(path: str | Path, *, what: str = "YAML file", max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Read and parse a YAML file with :func:`load_yaml`; never reads more than ``max_bytes + 1``.

    Raises
    ------
    ConfigError
        The file is missing, not a regular file, unreadable, too large, or refused by
        :func:`load_yaml`.
    """
    p = Path(path)
    name = str(p)
    label = f"{what} {name if len(name) <= 200 else name[:90] + '...' + name[-90:]}"
    try:
        found = p.is_file()
    except (OSError, ValueError):            # a name too long, a NUL byte in it
        found = False
    if not found:
        raise ConfigError(f"{label} does not exist or is not a regular file")
    try:
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{label} cannot be read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        try:
            size = f"{p.stat().st_size:,} bytes"
        except OSError:
            size = f"over {max_bytes:,} bytes"
        raise ConfigError(f"{label} is {size}; at most {max_bytes:,} bytes are accepted (a session or "
                          "graph file is a few kilobytes: is this the right file?)")
    return load_yaml(data, what=label, max_bytes=max_bytes)
