"""Inventory YAML with positions: parsed through the one safe loader, each YAML path's line
and column kept for the validator's messages (stage 1 of :mod:`inventory.validate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inventory.host_checks import Issue
from tuning.core.yamlsafe import YamlDocument, YamlRefused, parse_yaml, read_text_file


class Positions:
    """Line/column (1-based) of each YAML path, for error messages."""

    def __init__(self, doc: YamlDocument | None = None) -> None:
        self.doc = doc

    def lookup(self, path: str) -> tuple[int | None, int | None]:
        """Position of ``path`` or of its nearest ancestor that has one."""
        position = self.doc.position_of(path) if self.doc is not None and path else None
        return position if position is not None else (None, None)


def _refusal_issues(exc: YamlRefused) -> list[Issue]:
    return [Issue(p.path, p.reason, p.line, p.column) for p in exc.problems]


def load_yaml(text: str | bytes, source: str = "<yaml>") -> tuple[Any, Positions, list[Issue]]:
    """Parse YAML through the one safe loader (:mod:`tuning.core.yamlsafe`); return ``(data,
    positions, issues)``. Refusals (syntax, duplicate keys, alias bombs, tags…) carry line and
    column; ``data`` is ``None`` when there are any."""
    try:
        doc = parse_yaml(text, source)
    except YamlRefused as exc:
        return None, Positions(), _refusal_issues(exc)
    return doc.data, Positions(doc), []


def read_yaml(path: Path, what: str) -> tuple[Any, Positions, list[Issue]]:
    """:func:`load_yaml` of a file read through :func:`tuning.core.yamlsafe.read_text_file`
    (a regular UTF-8 file of bounded size)."""
    try:
        text = read_text_file(path, what)
    except YamlRefused as exc:
        return None, Positions(), _refusal_issues(exc)
    return load_yaml(text, str(path))
