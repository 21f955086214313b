"""The one YAML loader for every file rigforge reads (inventory, models, rig, profile, plan,
budget, captures): nothing in a file can surprise it.

PyYAML's ``safe_load`` is safe against code execution but not against surprises. This loader
refuses, each with the file, the line and a sentence saying what to do:

- bytes that are not UTF-8 (a UTF-16 file from a Windows editor, a stray Latin-1 byte), NUL
  and other control characters, files larger than :data:`MAX_BYTES`;
- more than one document (``---`` between two documents: ``safe_load`` would refuse with an
  unhelpful message, ``safe_load_all`` would silently take one);
- a key that appears twice in a mapping, at any depth (YAML would keep the last one
  silently — the first ``power_cap_w`` the user reads is not the one applied);
- aliases that expand to more than :data:`MAX_ALIAS_NODES` nodes (a 600-byte "billion laughs"
  file expands to ~10⁹ nodes; it is refused while composing, in milliseconds), an alias to the
  node that contains it (a recursive structure every walker would loop on), an alias to an
  anchor that is not defined;
- nesting deeper than :data:`MAX_DEPTH` (PyYAML's composer recurses; 10 000 ``[`` would end in
  a ``RecursionError``);
- explicit tags (``!!python/object``, ``!!binary``, ``!custom``) other than ``!!str``.

YAML 1.1 reads some scalars in ways nobody means. Here a scalar becomes an ``int`` only when
it is written as a plain decimal (``570``, ``-3``), and a ``float`` only in decimal or
exponent notation (``12.8``, ``1e3``, ``.inf``); everything else stays the text that was
written: ``0570`` (YAML 1.1: octal 376), ``22:22`` (sexagesimal 1342), ``0x1F``, ``1_000``,
``2024-01-01`` (a date). Floats keep their source text (:func:`source_text`), so a version
written ``12.10`` is not read back as ``12.1``. ``yes``/``no``/``on``/``off`` stay booleans as in
YAML 1.1 (schemas that want a word say so when they get a boolean).

:func:`parse_yaml` returns a :class:`YamlDocument`: the data and the 1-based ``(line,
column)`` of every YAML path (``hosts.ws1.gpus[2].power_cap_w``), for error messages.
:func:`read_text_file` is the safe reader for any user file, YAML or not (captures): a regular
file only, bounded, strict UTF-8.

This module imports only the standard library and PyYAML.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "YamlDocument",
    "YamlFloat",
    "YamlRefused",
    "decode_text",
    "load_yaml_file",
    "parse_yaml",
    "read_text_file",
    "source_text",
]

#: Largest file read (bytes). The biggest file rigforge writes, a profile with curves for eight
#: GPUs, is ~100 kB; a 16 MiB cap leaves room and stops a file that never ends (estimate).
MAX_BYTES = 16 * 1024 * 1024
#: Nodes that aliases may add by expansion, in total. A hand-written inventory that reuses a
#: section per host adds a few hundred; a billion-laughs file adds ~10⁹ (estimate).
MAX_ALIAS_NODES = 10_000
#: Deepest nesting of mappings and sequences. rigforge's deepest file (the inventory:
#: ``hosts.ws1.serving.models[0].args[0]``) nests 6 levels (estimate, with room to spare).
MAX_DEPTH = 64

#: Explicit tags that may appear: ``!!str`` (force text) only.
_ALLOWED_TAGS = frozenset({"tag:yaml.org,2002:str"})
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_STR_TAG = "tag:yaml.org,2002:str"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_PLAIN_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_PLAIN_FLOAT = re.compile(
    r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
    r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
)
#: Control characters refused anywhere in a file (tab, newline and carriage return are YAML).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff]")


class YamlRefused(ValueError):
    """A file rigforge will not read: ``source``, 1-based ``line``/``column`` when known, the
    YAML ``path`` when there is one, and ``reason`` (a sentence with the fix).

    ``str()`` is ``source:line:column: path: reason``, one line per problem in ``problems``
    (several only for duplicate keys, which are all reported at once).
    """

    def __init__(
        self,
        source: str,
        reason: str,
        line: int | None = None,
        column: int | None = None,
        path: str = "",
        more: tuple[YamlRefused, ...] = (),
    ) -> None:
        self.source = source
        self.reason = reason
        self.line = line
        self.column = column
        self.path = path
        self.problems: tuple[YamlRefused, ...] = (self, *more)
        super().__init__("\n".join(p.render() for p in self.problems))

    def render(self) -> str:
        """This one problem as ``source:line:column: path: reason``."""
        where = self.source
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        return f"{where}: {self.path}: {self.reason}" if self.path else f"{where}: {self.reason}"


class YamlFloat(float):
    """A float that remembers how it was written (``12.10`` stays ``"12.10"``)."""

    yaml_text: str

    def __new__(cls, value: float, text: str) -> YamlFloat:
        obj = super().__new__(cls, value)
        obj.yaml_text = text
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (YamlFloat, (float(self), self.yaml_text))


def source_text(value: object) -> str:
    """The text a scalar was written as: a :class:`YamlFloat`'s source, else ``str(value)``."""
    text = getattr(value, "yaml_text", None)
    return text if isinstance(text, str) else str(value)


@dataclass(frozen=True)
class YamlDocument:
    """A parsed file: ``data`` and ``positions`` (YAML path → 1-based ``(line, column)``).

    Paths are written as :func:`tuning.errors.yaml_path` writes them (``gpus[2].cap_w``;
    ``""`` for the top level).
    """

    data: Any
    source: str
    positions: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def line_of(self, path: str) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        position = self.position_of(path)
        return position[0] if position else None

    def position_of(self, path: str) -> tuple[int, int] | None:
        """``(line, column)`` of ``path`` or of its nearest ancestor that has one."""
        while True:
            if path in self.positions:
                return self.positions[path]
            parent = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", path)
            if parent == path:
                return self.positions.get("")
            path = parent


# --------------------------------------------------------------------------------------------
# Bytes → text
# --------------------------------------------------------------------------------------------

_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xfe\xff", "UTF-16"),
    (b"\xff\xfe", "UTF-16"),
)


def decode_text(raw: bytes, source: str, *, allow_control: bool = False) -> str:
    """Strict UTF-8 text of ``raw`` (a UTF-8 BOM is dropped); :class:`YamlRefused` for UTF-16/32,
    invalid UTF-8 or (unless ``allow_control``: captures carry terminal escapes their parsers
    strip) control characters, naming the line."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise YamlRefused(
                source,
                f"is {name} text (byte-order mark {bom.hex()}); rigforge reads UTF-8 only: "
                f"convert it (iconv -f {name} -t UTF-8)",
                1,
            )
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlRefused(
            source,
            f"byte 0x{raw[exc.start]:02x} is not UTF-8; save the file as UTF-8 (iconv -f "
            "LATIN1 -t UTF-8 converts a Latin-1 file)",
            line,
            column,
        ) from None
    bad = None if allow_control else _CONTROL.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        what = "a NUL byte" if bad.group() == "\x00" else f"the control character {bad.group()!r}"
        hint = " (a UTF-16 file without byte-order mark?)" if bad.group() == "\x00" else ""
        raise YamlRefused(
            source, f"contains {what}{hint}; a text file has none: remove it", line, column
        )
    return text


def read_text_file(path: str | Path, what: str = "file", *, allow_control: bool = False) -> str:
    """The UTF-8 text of a user file: a regular file only (not a FIFO, device, directory or a
    kernel interface under ``/proc``, ``/sys``, ``/dev`` — a symlink to ``/proc/self/mem`` is
    refused by where it points), at most :data:`MAX_BYTES`. Raises :class:`YamlRefused` with
    the path and what to do."""
    path = Path(path)
    source = str(path)
    try:
        target = path.resolve()
    except (OSError, RuntimeError) as exc:
        raise YamlRefused(source, f"cannot read the {what}: {exc}; check the path") from None
    if target.parts[1:2] and target.parts[1] in ("proc", "sys", "dev"):
        raise YamlRefused(
            source,
            f"points to {target}, a kernel interface, not a {what}; name a regular file",
        )
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise YamlRefused(
            source, f"cannot read the {what} ({exc.strerror}); check the path"
        ) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise YamlRefused(source, f"is a directory, not a {what}; name the file in it")
        if not stat.S_ISREG(info.st_mode):
            raise YamlRefused(source, f"is not a regular file; a {what} must be one")
        if info.st_size > MAX_BYTES:
            raise YamlRefused(
                source,
                f"is {info.st_size} bytes; a {what} is at most {MAX_BYTES} bytes: is this "
                "the right file?",
            )
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise YamlRefused(
            source, f"cannot read the {what} ({exc.strerror}); check the path"
        ) from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise YamlRefused(source, f"is larger than {MAX_BYTES} bytes; is this the right file?")
    return decode_text(b"".join(chunks), source, allow_control=allow_control)


# --------------------------------------------------------------------------------------------
# Text → nodes → data
# --------------------------------------------------------------------------------------------


class _Refusal(Exception):
    def __init__(self, reason: str, mark: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mark = mark


class _Resolver(Resolver):
    """YAML 1.1's resolver without the surprises: ints and floats in decimal only, no
    timestamps (``2024-01-01`` stays text); octal, hex, sexagesimal forms stay text."""


_Resolver.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in (_INT_TAG, _FLOAT_TAG, _TIMESTAMP_TAG)
    ]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_Resolver.add_implicit_resolver(
    _INT_TAG, re.compile(rf"^(?:{_PLAIN_INT.pattern})$"), list("-+0123456789")
)
_Resolver.add_implicit_resolver(
    _FLOAT_TAG, re.compile(rf"^(?:{_PLAIN_FLOAT.pattern})$"), list("-+.0123456789")
)


class _Composer(Composer):
    """PyYAML's composer with an alias budget, a depth limit and no recursive aliases."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._expanded = 0
        self._sizes: dict[int, int] = {}
        self._open: set[str] = set()

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):  # type: ignore[attr-defined]
            event = self.peek_event()  # type: ignore[attr-defined]
            anchor = event.anchor
            if anchor in self._open:
                raise _Refusal(
                    f"alias *{anchor} refers to the node that contains it (a recursive "
                    "structure); write the value out instead",
                    event.start_mark,
                )
            if anchor not in self.anchors:
                raise _Refusal(
                    f"alias *{anchor} names no anchor defined before it; define &{anchor} first",
                    event.start_mark,
                )
            self._expanded += self._sizes.get(id(self.anchors[anchor]), 1)
            if self._expanded > MAX_ALIAS_NODES:
                raise _Refusal(
                    f"aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?); "
                    "write the values out or use fewer nested aliases",
                    event.start_mark,
                )
        else:
            event = self.peek_event()  # type: ignore[attr-defined]
            tag = getattr(event, "tag", None)
            if tag not in (None, "!") and tag not in _ALLOWED_TAGS:
                raise _Refusal(
                    f"the explicit tag {tag} is not accepted (rigforge files hold plain values); "
                    "remove the tag",
                    event.start_mark,
                )
            if not isinstance(event, ScalarEvent):
                self._depth += 1
                if self._depth > MAX_DEPTH:
                    raise _Refusal(
                        f"nesting is deeper than {MAX_DEPTH} levels; no rigforge file needs "
                        "that: flatten it",
                        event.start_mark,
                    )
        anchor = getattr(event, "anchor", None)
        if anchor is not None and not isinstance(event, AliasEvent):
            self._open.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            if anchor is not None and not isinstance(event, AliasEvent):
                self._open.discard(anchor)
            if not isinstance(event, ScalarEvent | AliasEvent):
                self._depth -= 1
        if node is not None and not isinstance(event, AliasEvent) and id(node) not in self._sizes:
            self._sizes[id(node)] = _size(node, self._sizes)
        return node


def _size(node: Node, sizes: dict[int, int]) -> int:
    if isinstance(node, ScalarNode):
        return 1
    if isinstance(node, SequenceNode):
        return 1 + sum(sizes.get(id(child), 1) for child in node.value)
    if isinstance(node, MappingNode):
        return 1 + sum(sizes.get(id(key), 1) + sizes.get(id(value), 1) for key, value in node.value)
    return 1


class _Constructor(SafeConstructor):
    """Floats remember their text; ints are plain decimal (the resolver saw to it)."""

    def construct_yaml_float(self, node: ScalarNode) -> float:  # type: ignore[override]
        value = super().construct_yaml_float(node)
        return YamlFloat(value, str(node.value))

    def construct_yaml_int(self, node: ScalarNode) -> int:  # type: ignore[override]
        return int(str(node.value))


_Constructor.add_constructor(_FLOAT_TAG, _Constructor.construct_yaml_float)  # type: ignore[type-var]
_Constructor.add_constructor(_INT_TAG, _Constructor.construct_yaml_int)  # type: ignore[type-var]


class _Loader(Reader, Scanner, Parser, _Composer, _Constructor, _Resolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)


def _walk(
    node: Node,
    path: str,
    positions: dict[str, tuple[int, int]],
    duplicates: list[tuple[str, Any]],
    seen_nodes: set[int],
) -> None:
    positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, MappingNode):
        check = id(node) not in seen_nodes
        seen_nodes.add(id(node))
        keys: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, ScalarNode) else "?"
            if key == "<<" and key_node.tag == "tag:yaml.org,2002:merge":
                continue
            child = f"{path}.{key}" if path else key
            if check and isinstance(key_node, ScalarNode) and key in keys:
                duplicates.append((child, key_node.start_mark))
            keys.add(key)
            positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk(value_node, child, positions, duplicates, seen_nodes)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, f"{path}[{i}]", positions, duplicates, seen_nodes)


def _mark_refusal(source: str, reason: str, mark: Any) -> YamlRefused:
    if mark is None:
        return YamlRefused(source, reason)
    return YamlRefused(source, reason, mark.line + 1, mark.column + 1)


def parse_yaml(text: str | bytes, source: str = "<yaml>") -> YamlDocument:
    """Parse one YAML document; :class:`YamlRefused` (file, line, a sentence) for anything this
    module's docstring lists. An empty file is ``data=None``."""
    if isinstance(text, bytes):
        text = decode_text(text, source)
    else:
        bad = _CONTROL.search(text)
        if bad:
            text = decode_text(text.encode("utf-8", "surrogatepass"), source)
    if len(text) > MAX_BYTES:
        raise YamlRefused(source, f"is larger than {MAX_BYTES} bytes; is this the right file?")
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.composer.ComposerError as exc:
            if "expected a single document" in str(exc.context or ""):
                raise _Refusal(
                    "holds more than one YAML document ('---' starts a second one); keep one "
                    "document per file",
                    exc.problem_mark,
                ) from None
            raise
        if node is None:
            return YamlDocument(None, source, {})
        positions: dict[str, tuple[int, int]] = {}
        duplicates: list[tuple[str, Any]] = []
        _walk(node, "", positions, duplicates, set())
        if duplicates:
            found = [
                YamlRefused(
                    source,
                    "key appears twice in this mapping; YAML would silently keep the last: "
                    "delete one",
                    mark.line + 1,
                    mark.column + 1,
                    child,
                )
                for child, mark in duplicates
            ]
            first = found[0]
            raise YamlRefused(
                source, first.reason, first.line, first.column, first.path, tuple(found[1:])
            )
        data = loader.construct_document(node)
    except YamlRefused:
        raise
    except _Refusal as exc:
        raise _mark_refusal(source, exc.reason, exc.mark) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        context_mark = getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark is not mark:
            context += f" that starts at line {context_mark.line + 1}"
        detail = f"{problem} ({context})" if context else problem
        raise _mark_refusal(source, f"YAML syntax error: {detail}; fix the syntax", mark) from None
    except (TypeError, ValueError, RecursionError) as exc:
        # An unhashable key (``? [a]: 1``), an int too large, a structure PyYAML cannot build.
        raise YamlRefused(source, f"cannot be read as plain data ({exc}); simplify it") from None
    finally:
        loader.dispose()
    return YamlDocument(data, source, positions)


def load_yaml_file(path: str | Path, what: str = "file") -> YamlDocument:
    """:func:`read_text_file` then :func:`parse_yaml`; :class:`YamlRefused` on any problem."""
    return parse_yaml(read_text_file(path, what), str(path))
