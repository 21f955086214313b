"""The one safe YAML loader (:mod:`tuning.core.yamlsafe`): what it refuses and what it keeps.

Expected values are YAML's own rules worked by hand: under YAML 1.1 (PyYAML's ``safe_load``)
``0570`` is octal 376, ``22:22`` is sexagesimal 22·60+22 = 1342, ``12.10`` is the float 12.1
and ``2024-01-01`` a date; nine levels of nine aliases expand to 9⁹ = 387 420 489 strings.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tuning.core.yamlsafe import (
    MAX_ALIAS_NODES,
    YamlRefused,
    load_yaml_file,
    parse_yaml,
    read_text_file,
    source_text,
)

BOMB = "".join(
    [f"l0: &l0 [{', '.join(['lol'] * 9)}]\n"]
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)]
)


def refusal(text: str | bytes) -> YamlRefused:
    with pytest.raises(YamlRefused) as caught:
        parse_yaml(text, "f.yaml")
    return caught.value


def test_yaml_1_1_surprises_are_what_pyyaml_does() -> None:
    """The baseline this loader fixes (so the test below cannot pass by accident)."""
    data = yaml.safe_load("branch: 0570\nport: 22:22\nversion: 12.10\nday: 2024-01-01\n")
    assert data["branch"] == 376
    assert data["port"] == 1342
    assert data["version"] == 12.1
    assert not isinstance(data["day"], str)


def test_scalars_keep_the_text_that_was_written() -> None:
    doc = parse_yaml("branch: 0570\nport: 22:22\nversion: 12.10\nday: 2024-01-01\nhex: 0x1F\n")
    assert doc.data == {
        "branch": "0570",
        "port": "22:22",
        "version": 12.1,
        "day": "2024-01-01",
        "hex": "0x1F",
    }
    assert source_text(doc.data["version"]) == "12.10"


def test_plain_numbers_and_booleans_are_unchanged() -> None:
    doc = parse_yaml("n: 570\nneg: -3\nf: 250.5\ne: 1e3\ninf: .inf\nb: yes\ns: !!str 5\n")
    assert doc.data == {"n": 570, "neg": -3, "f": 250.5, "e": 1000.0, "inf": float("inf"),
                        "b": True, "s": "5"}  # fmt: skip
    assert type(doc.data["n"]) is int


def test_positions_are_one_based_per_yaml_path() -> None:
    doc = parse_yaml("hosts:\n  ws1:\n    gpus:\n      - {uuid: x, cap_w: 5}\n")
    assert doc.positions["hosts.ws1.gpus"] == (3, 5)
    assert doc.positions["hosts.ws1.gpus[0].cap_w"] == (4, 19)
    assert doc.line_of("hosts.ws1.gpus[0].cap_w.nothing") == 4


def test_duplicate_keys_at_any_depth_all_reported() -> None:
    error = refusal("a: 1\nb:\n  c: [{d: 1, d: 2}]\na: 3\n")
    assert [(p.path, p.line) for p in error.problems] == [("b.c[0].d", 3), ("a", 4)]
    assert "key appears twice" in str(error)


def test_billion_laughs_is_refused_while_composing() -> None:
    assert len(BOMB) < 600
    error = refusal(BOMB)
    assert f"more than {MAX_ALIAS_NODES} nodes" in error.reason
    # l4 is the first level past the budget: 9^5 = 59049 nodes > 10000 (9^4 = 6561 is not).
    assert error.line == 5


def test_a_few_aliases_are_fine() -> None:
    doc = parse_yaml("base: &b {x: 1}\nh1: {<<: *b, y: 2}\nh2: *b\n")
    assert doc.data == {"base": {"x": 1}, "h1": {"x": 1, "y": 2}, "h2": {"x": 1}}


@pytest.mark.parametrize(
    ("text", "phrase", "line"),
    [
        ("a: &a [1, *a]\n", "refers to the node that contains it", 1),
        ("a: *nowhere\n", "names no anchor", 1),
        ("x: " + "[" * 100 + "]" * 100 + "\n", "deeper than 64", 1),
        ("a: !!python/object/apply:os.system [ls]\n", "python/object/apply:os.system", 1),
        ("a: !!binary aGVsbG8=\n", "tag:yaml.org,2002:binary", 1),
        ("a: 1\n---\nb: 2\n", "more than one YAML document", 2),
        ("a: 1\nb: \x00\n", "NUL byte", 2),
        ("a: [1\n", "YAML syntax error", 2),
        ("? [a]\n: 1\n", "unhashable key", 1),
    ],
)
def test_refused_with_line_and_sentence(text: str, phrase: str, line: int) -> None:
    error = refusal(text)
    assert phrase in str(error)
    assert error.line == line
    assert str(error).startswith(f"f.yaml:{line}:")


def test_encodings_other_than_utf8_are_refused() -> None:
    assert "UTF-16" in refusal("a: 1\n".encode("utf-16")).reason
    latin = refusal(b"a: 1\nb: caf\xe9\n")
    assert (latin.line, latin.column) == (2, 7)
    assert "0xe9" in latin.reason
    assert parse_yaml(b"\xef\xbb\xbfa: 1\n").data == {"a": 1}  # a UTF-8 BOM is fine


def test_read_text_file_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "mem").symlink_to("/proc/self/mem")
    with pytest.raises(YamlRefused, match="kernel interface"):
        read_text_file(tmp_path / "mem", "rig file")
    with pytest.raises(YamlRefused, match="is a directory"):
        read_text_file(tmp_path, "rig file")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(YamlRefused, match="not a regular file"):
        read_text_file(tmp_path / "fifo", "rig file")  # would block forever if opened plainly
    with pytest.raises(YamlRefused, match="No such file"):
        load_yaml_file(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        (b"schema_version: 1\nschema_version: 2\n", "key appears twice"),
        (b"schema_version: 1\nrig: caf\xe9\n", "is not UTF-8"),
    ],
)
def test_the_links_file_goes_through_the_safe_loader(
    tmp_path: Path, raw: bytes, phrase: str
) -> None:
    from tuning.errors import ConfigError
    from tuning.fabric.links_file import load_links_file

    path = tmp_path / "links.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match=rf"links\.yaml:2:\d+: .*{phrase}"):
        load_links_file(path)
