"""Every error rigforge raises on purpose, each with a sentence a person can act on.

Callers catch :class:`RigforgeError` at the CLI boundary and print ``str(error)``; anything
else that escapes is a bug.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tuning.core.yamlsafe import YamlDocument, YamlRefused, load_yaml_file, parse_yaml

_M = TypeVar("_M", bound=BaseModel)


class RigforgeError(Exception):
    """Base class: the message says what happened and what to do about it."""


class ConfigError(RigforgeError):
    """A user-supplied file (rig, inventory, models, profile) is invalid.

    The message names the file, the YAML path and the fix.
    """


class BackendUnavailable(RigforgeError):
    """No usable GPU backend (NVML library missing, no driver loaded, no GPU)."""


class NvmlLibraryNotFound(BackendUnavailable):
    """libnvidia-ml.so cannot be loaded."""


class DriverLibraryMismatch(BackendUnavailable):
    """The loaded kernel module and the user-space NVML library are different versions."""


class NoPermission(RigforgeError):
    """The caller lacks the privilege for the requested change (usually: not root)."""


class GpuLost(RigforgeError):
    """A GPU fell off the bus or stopped answering; it needs a reset or a reboot."""


class OutOfRange(RigforgeError, ValueError):
    """A requested setting lies outside the hardware's constraints; nothing was changed."""


class ReadBackMismatch(RigforgeError):
    """A setting was applied but the value read back differs from what was asked."""


class UnknownGpu(RigforgeError):
    """A GPU was referenced (by UUID or bus id) that the rig does not have."""


class SafetyAbort(RigforgeError):
    """The watchdog stopped a run (temperature or power near a limit); settings were restored."""


class WorkloadFailed(RigforgeError):
    """A load generator (a synthetic worker, a command, an endpoint) died or hung mid-run.

    Throughput measured since then is void; the message names the GPU and what the load said.
    """


def yaml_path(loc: Sequence[int | str], *, prefix: str = "", skip: Container[object] = ()) -> str:
    """Where a value sits in a YAML document, as a person writes it.

    ``("gpus", 2, "preset")`` → ``gpus[2].preset``; ``prefix`` is prepended
    (``hosts.ws1``); elements in ``skip`` (pydantic's union tags) are left out. An empty
    location is ``(top level)``.
    """
    path = prefix
    for part in loc:
        if part in skip:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def located(source: str, doc: YamlDocument | None, path: str) -> str:
    """``source:line`` when ``doc`` knows the line of YAML ``path`` (or of its nearest
    ancestor), else ``source``: the prefix of every problem line rigforge prints."""
    line = doc.line_of("" if path == "(top level)" else path) if doc is not None else None
    return f"{source}:{line}" if line is not None else source


def problems_error(
    source: str,
    problems: Iterable[tuple[str, str]],
    doc: YamlDocument | None = None,
    *,
    header: str | None = None,
    indent: str = "",
) -> ConfigError:
    """One :class:`ConfigError` with a ``source:line: yaml.path: what and the fix`` line per
    ``(yaml path, message)`` problem, in file order (the line where ``doc`` knows it).

    The one formatter of file problems for every kind of file (rig, models, profile, plan,
    budget, links); ``header`` (a first line) and ``indent`` (before each problem) keep a
    file kind's established layout.
    """
    located_lines = []
    for order, (path, message) in enumerate(problems):
        line = doc.line_of("" if path == "(top level)" else path) if doc is not None else None
        located_lines.append(
            ((line or 0, order), f"{indent}{located(source, doc, path)}: {path}: {message}")
        )
    located_lines.sort(key=lambda item: item[0])
    body = [text for _, text in located_lines]
    return ConfigError("\n".join([header, *body] if header else body))


def validated(model: type[_M], doc: YamlDocument, source: str) -> _M:
    """``model`` validated from ``doc``'s data; otherwise one :class:`ConfigError` with a
    ``source:line: yaml.path: message`` line per pydantic error (:func:`problems_error`)."""
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems = [
            (yaml_path(e["loc"]), str(e["msg"]).removeprefix("Value error, ")) for e in exc.errors()
        ]
        raise problems_error(source, problems, doc) from None


def entry_problem(
    error: Mapping[str, Any],
    *,
    known_keys: Callable[[tuple[int | str, ...]], Sequence[str]],
    missing_fix: str,
    choices: Mapping[str, Sequence[str]],
    named: re.Pattern[str],
) -> tuple[str, str]:
    """``(yaml path, what is wrong and the fix)`` of one pydantic error of a user file's entry.

    The one wording of per-entry problems for files checked key by key (models, workload):
    an unknown key gets the closest known one (``known_keys(parent location)``) or the list;
    a missing key ``missing_fix`` (where the keys are documented); a literal of a field in
    ``choices`` (``{"engine": ENGINES}``) its allowed values; a check across keys whose
    message ``named`` matches (groups: the path it refuses, the message) that path's line;
    anything else pydantic's message with the value given (60 characters at most).
    """
    loc = tuple(error["loc"])
    where = yaml_path(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        known = known_keys(loc[:-1])
        hint = did_you_mean(str(loc[-1]), known) or f"; known keys: {', '.join(known)}"
        return where, f"unknown key{hint}"
    if kind == "missing":
        return where, f"required key missing; add it ({missing_fix})"
    message = str(error["msg"]).removeprefix("Value error, ")
    field = loc[-1] if loc else None
    if kind == "literal_error" and isinstance(field, str) and field in choices:
        got = error.get("input")
        allowed = choices[field]
        hint = did_you_mean(str(got), allowed)
        return where, f"unknown {field} {got!r}; use one of {', '.join(allowed)}{hint}"
    if kind == "value_error":
        across = named.match(message)
        if not loc and across:
            # a check across keys names the entry or key it refuses: that one's path and line
            return across.group(1), across.group(2)
        return where, message
    got = repr(error.get("input"))
    return where, f"{message} (got {got[:60]})"


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` — did you mean 'x'?`` for the closest known spelling, or an empty string."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" — did you mean {close[0]!r}?" if close else ""


def read_yaml_config(path: str | Path, what: str = "file") -> YamlDocument:
    """A user YAML file through the one safe loader (:mod:`tuning.core.yamlsafe`).

    Raises :class:`ConfigError` naming the file, the line and the fix for anything the loader
    refuses (not UTF-8, duplicate keys, alias bombs, tags, several documents, a FIFO…).
    """
    try:
        return load_yaml_file(path, what)
    except YamlRefused as exc:
        raise ConfigError(str(exc)) from None


def parse_yaml_config(text: str | bytes, source: str) -> YamlDocument:
    """:func:`read_yaml_config` for text already read; ``source`` names it in messages."""
    try:
        return parse_yaml(text, source)
    except YamlRefused as exc:
        raise ConfigError(str(exc)) from None
