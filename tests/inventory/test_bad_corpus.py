"""The malformed-inventory corpus: every file in ``bad/`` is rejected with its expected YAML
path(s) in the message, and no host is contacted.

Each corpus file declares what it expects in leading comments::

    # expect: hosts.ws1.gpus[2].power_cap_w      (one line per path; required unless only text)
    # expect-text: 500 is above this GPU's max   (optional: a phrase the message must contain)
    # expect-line: 5                             (optional: the line the error points at)

A new case is a new file; no code changes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inventory.loader import pyinfra_hosts
from tuning.errors import ConfigError
from tuning.fabric.links_file import load_links_file

BAD = Path(__file__).with_name("bad")
CASES = sorted(BAD.glob("*.yaml"))


def _expectations(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"expect": [], "expect-text": [], "expect-line": []}
    raw = path.read_bytes()
    # Some cases are not UTF-8 on purpose; their header is still readable this way.
    text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else None
    for line in (text or raw.decode("utf-8", "replace")).splitlines():
        match = re.match(r"^#\s*(expect(?:-text|-line)?):\s*(.+?)\s*$", line)
        if match:
            found[match.group(1)].append(match.group(2))
    return found


def _assert_meets(message: str, path: Path, expected: dict[str, list[str]]) -> None:
    """The error ``message`` names every YAML path, phrase and line ``path`` declares."""
    __tracebackhide__ = True
    for yaml_path in expected["expect"]:
        # The path is followed by ': ' so hosts.ws1.gpus[1] does not match hosts.ws1.gpus[10].
        assert f" {yaml_path}: " in message, f"{yaml_path} not in:\n{message}"
    for text in expected["expect-text"]:
        assert text in message, f"{text!r} not in:\n{message}"
    for line_no in expected["expect-line"]:
        assert f"{path.name}:{line_no}:" in message, message


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_inventory_is_rejected_with_its_path(path: Path, no_connections: list[object]) -> None:
    expected = _expectations(path)
    assert expected["expect"] or expected["expect-text"], f"{path.name} declares no expectation"

    with pytest.raises(ConfigError) as caught:
        pyinfra_hosts(path)

    message = str(caught.value)
    lines = message.splitlines()[1:]
    assert lines, message
    assert all(path.name in line for line in lines), message
    _assert_meets(message, path, expected)
    for target in re.findall(r"chmod \d+ (/\S+)", message):
        # Advice to chmod is only ever about a file inside the inventory's tree.
        assert Path(target).resolve().is_relative_to(BAD.resolve()), message
    assert no_connections == []


LINKS = sorted(Path(__file__).with_name("bad-links").glob("*.yaml"))


def test_links_corpus_is_big_enough() -> None:
    assert len(LINKS) >= 10


@pytest.mark.parametrize("path", LINKS, ids=[p.stem for p in LINKS])
def test_bad_links_file_is_refused_with_its_path_and_line(path: Path) -> None:
    """``bad-links/``: ``links.yaml`` files with one fault each (the same headers as ``bad/``)
    are refused by the one links loader, naming the file, the line and the YAML path."""
    expected = _expectations(path)
    assert expected["expect"] or expected["expect-text"], f"{path.name} declares no expectation"

    with pytest.raises(ConfigError) as caught:
        load_links_file(path)

    message = str(caught.value)
    assert all(line.startswith(f"{path}:") for line in message.splitlines()), message
    assert re.match(rf"{re.escape(str(path))}:\d+", message), message
    _assert_meets(message, path, expected)
