"""The one unit-text writer: every value that reaches a systemd unit or a rendered script.

A unit file is line-based and systemd expands specifiers (``%n``, ``%d``…) in most settings
and ``$VAR`` in command lines (``systemd.unit(5)`` "SPECIFIERS", ``systemd.service(5)``
"COMMAND LINES"). So a value is **refused** (:class:`UnsafeUnitValue`) when it holds a
newline, a carriage return, NUL or any other control character — no quoting can keep a
newline from starting a new directive such as ``ExecStartPre=+/bin/sh -c …`` — and
otherwise written so that systemd reads back exactly the value:

* :func:`unit_word` — one ``ExecStart=`` argument: ``%`` → ``%%``, ``$`` → ``$$``; bare when it
  is plain (letters, digits, ``_@%+=:,./-``), else in ``"…"`` with ``\\`` and ``"`` escaped;
* :func:`unit_exec` — the executable of a command line: an absolute path (so no ``+``/``-``/
  ``@``/``!`` prefix can be smuggled in) without quotes or backslashes (systemd refuses an
  executable name with them), written like a word;
* :func:`unit_path` — a path setting (``EnvironmentFile=``, ``ReadWritePaths=``,
  ``LoadCredential=``): absolute, shorter than ``PATH_MAX``, ``%`` → ``%%``;
* :func:`unit_env` — one ``Environment="NAME=value"`` assignment: quoted, ``%`` → ``%%``,
  ``\\`` and ``"`` escaped (``Environment=`` expands specifiers, not ``$``);
* :func:`unit_setting` — the value of a specifier-expanding setting (``User=``,
  ``Description=``, paths, comments): ``%`` → ``%%``;
* :func:`unit_verbatim` — the value of a setting that expands nothing (``IPAddressAllow=``);
* :func:`shell_word` — one word of a rendered shell script (``shlex.quote``).

Each returns :class:`UnitText`; the renderer's unit templates print nothing else (and finite
numbers), so a raw value cannot reach a unit by accident (:mod:`tuning.render.environment`).
"""

from __future__ import annotations

import math
import re
import shlex

from tuning.core.checks import text_problem
from tuning.errors import ConfigError

__all__ = [
    "UnitText",
    "UnsafeUnitValue",
    "refuse_unsafe",
    "shell_word",
    "unit_env",
    "unit_exec",
    "unit_path",
    "unit_setting",
    "unit_verbatim",
    "unit_word",
]

#: A word systemd reads back unchanged without quotes (after ``%`` / ``$`` are doubled).
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")
#: Linux ``PATH_MAX`` (``<linux/limits.h>``) counts the terminating NUL: a path has at most 4095
#: bytes, and systemd's specifier expansion refuses longer paths.
PATH_MAX = 4096
#: An environment variable name (POSIX: letters, digits, underscore; no leading digit).
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnsafeUnitValue(ConfigError):
    """A value that cannot be written into a unit or a script (a newline, a control character,
    a relative executable, a bad variable name). The message names the value and the fix."""


class UnitText(str):
    """Text the writer produced for a unit or a script; the templates print only this."""

    __slots__ = ()


def refuse_unsafe(value: object, what: str = "value") -> str:
    """``str(value)``, or :class:`UnsafeUnitValue` when it holds a control character.

    Refused: Unicode category ``Cc`` (newline, ``\\r``, tab, NUL, ESC, DEL, C1) and the line and
    paragraph separators (``Zl``, ``Zp``); non-finite numbers and booleans (a boolean where a
    value is meant is a typo in the YAML, ``inf``/``nan`` are never a setting).
    """
    if isinstance(value, bool):
        raise UnsafeUnitValue(f"{what} {value!r} is a boolean where a value is meant; quote it")
    if isinstance(value, float) and not math.isfinite(value):
        raise UnsafeUnitValue(f"{what} {value!r} is not a finite number")
    text = str(value)
    problem = text_problem(text, quotes=False)
    if problem:
        raise UnsafeUnitValue(f"{what} {text!r} {problem}")
    return text


def unit_word(value: object, *, expand: bool = True) -> UnitText:
    """One command-line argument (``ExecStart=``), read back by systemd as exactly ``value``.

    ``expand``: the setting expands ``$VAR`` (command lines do), so ``$`` is doubled;
    ``expand=False`` for a quoted word in a setting that does not (see :func:`unit_env`).
    """
    text = refuse_unsafe(value, "unit argument").replace("%", "%%")
    if expand:
        text = text.replace("$", "$$")
    if text and _PLAIN_WORD.fullmatch(text):
        return UnitText(text)
    return UnitText('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')


def unit_exec(path: object) -> UnitText:
    """The executable of a command line: an absolute path, written as :func:`unit_word`.

    systemd reads ``@``, ``-``, ``:``, ``+`` and ``!`` before the path as prefixes (``+`` runs
    it with full privileges), so anything but an absolute path is refused.
    """
    text = _absolute_path(path, "unit executable")
    if any(char in text for char in "\"'\\"):
        # systemd: "Executable name contains special characters" and the unit does not load
        raise UnsafeUnitValue(
            f"unit executable {text!r} contains a quote or a backslash, which systemd refuses "
            "in an executable's name; install it under a plain path"
        )
    return unit_word(text)


def unit_path(path: object) -> UnitText:
    """The value of a path setting: an absolute path shorter than ``PATH_MAX``, ``%`` doubled."""
    return UnitText(_absolute_path(path, "unit path").replace("%", "%%"))


def _absolute_path(path: object, what: str) -> str:
    text = _line_value(path, what)
    if not text.startswith("/"):
        raise UnsafeUnitValue(f"{what} {text!r} is not an absolute path; give the full path (/…)")
    if len(text.encode()) >= PATH_MAX:
        raise UnsafeUnitValue(
            f"{what} {text[:40]!r}… is {len(text.encode())} bytes, longer than a path can be "
            f"({PATH_MAX - 1})"
        )
    return text


def unit_env(name: str, value: object) -> UnitText:
    """``"NAME=value"`` for ``Environment=``: quoted, ``%`` doubled, ``\\`` and ``"`` escaped."""
    if not _ENV_NAME.fullmatch(name):
        raise UnsafeUnitValue(f"environment variable name {name!r} is not [A-Za-z_][A-Za-z0-9_]*")
    text = refuse_unsafe(value, f"{name}").replace("%", "%%")
    return UnitText('"' + f"{name}={text}".replace("\\", "\\\\").replace('"', '\\"') + '"')


def unit_setting(value: object) -> UnitText:
    """The value of a setting that expands specifiers (``User=``, paths, ``Description=``)."""
    return UnitText(_line_value(value, "unit setting").replace("%", "%%"))


def unit_verbatim(value: object) -> UnitText:
    """The value of a setting that expands nothing (``IPAddressAllow=``): control chars refused."""
    return UnitText(_line_value(value, "unit setting"))


def _line_value(value: object, what: str) -> str:
    """A value written bare to the end of a line: no control character, no trailing backslash,
    no whitespace at either end.

    systemd.syntax(7): a line ending in a backslash continues on the next line, so a value
    ending in one would swallow the directive after it; whitespace around a value is stripped,
    so systemd would read another value than the one given.
    """
    text = refuse_unsafe(value, what)
    if text != text.strip():
        raise UnsafeUnitValue(
            f"{what} {text!r} starts or ends with whitespace, which systemd strips; remove it"
        )
    if text.endswith("\\"):
        raise UnsafeUnitValue(
            f"{what} {text!r} ends in a backslash, which would join the next line of the unit "
            "to it; remove it"
        )
    return text


def shell_word(value: object) -> UnitText:
    """One word of a rendered shell script: control characters refused, then ``shlex.quote``."""
    return UnitText(shlex.quote(refuse_unsafe(value, "script value")))
