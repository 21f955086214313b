"""Hostile values, shared by every test that feeds user input to a unit, a script or a command.

Each is what an attacker or a careless user can put in an inventory, a models file, a plan or
a profile. A renderer must refuse it (``tuning.render.UnsafeUnitValue``) or write it so that
systemd reads back exactly that value and no other directive. The three ``issue10_*`` values
are the root command injections issue 10 found accepted on ``main`` (``kernel.root``,
``tuner.venv``, ``serving.bind``).

:func:`systemd_directives` and :func:`systemd_words` read unit text the way systemd does
(``systemd.syntax(7)``: sections, ``key=value`` lines, ``\\`` continuations, ``#``/``;``
comments; ``systemd.service(5)`` "COMMAND LINES": words split on whitespace, ``"…"``/``'…'``
quoting with C escapes, ``%%`` → ``%``, ``$$`` → ``$``), so a test can say which directives a
file has and what value each argument carries — from the specification, not from the writer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PAYLOAD = "/bin/sh -c 'touch /tmp/rigforge-pwned'"

#: id -> value. Every class issue 10 names: newline + directive, CR, NUL, other control
#: characters, specifiers, variables, quotes, backslashes, spaces, very long.
HOSTILE: dict[str, str] = {
    "newline_execstartpre": f"/x\nExecStartPre=+{PAYLOAD}\n#",
    "cr_execstartpre": f"/x\rExecStartPre=+{PAYLOAD}",
    "crlf": "/x\r\nUser=root",
    "nul": "/x\x00y",
    "tab": "/x\ty",
    "escape": "/x\x1b[2J",
    "del": "/x\x7f",
    "c1_next_line": "/x\x85ExecStartPre=/bin/true",
    "line_separator": "/x\u2028ExecStartPre=/bin/true",
    "specifiers": "/x/%n/%h/%%/%",
    "variables": "/x/$HOME/${PATH}/$$",
    "double_quote": '/x/"quoted" word',
    "single_quote": "/x/'quoted' word",
    "backslash": "/x\\ny\\\\z\\",
    "backslash_newline_text": "/x\\\nExecStartPre=/bin/true",
    "spaces": "/x/a b  c ",
    "semicolon": "/x ; /bin/true",
    "prefix_plus": f"+{PAYLOAD}",
    "very_long": "/" + "A" * 5000,
    "issue10_kernel_root": f"/\nExecStartPre=+{PAYLOAD}\n#",
    "issue10_tuner_venv": f"/opt/v\nExecStart={PAYLOAD}\n#",
    "issue10_serving_bind": f"::1%lo\nExecStartPre=+sh -c {PAYLOAD!r}",
}


@dataclass(frozen=True)
class Directive:
    section: str
    key: str
    value: str  # as written (continuations joined with a space), not unquoted


def systemd_directives(text: str) -> list[Directive]:
    """Every ``key=value`` line of a unit file, in order, with its section."""
    found: list[Directive] = []
    section = ""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        while line.endswith("\\") and i < len(lines):  # continuation: joined with a space
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        found.append(Directive(section, key.strip() if sep else f"<no '='> {line}", value.strip()))
    return found


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", " ": " ", "s": " "}


def systemd_words(value: str, *, expand_dollar: bool = True) -> list[str]:
    """A command line (or an ``Environment=`` value) split into words the way systemd does.

    Raises ``ValueError`` on what systemd would expand or reject: a lone ``%`` specifier, a
    ``$VAR`` (with ``expand_dollar``), an unterminated quote.
    """
    words: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t":
            i += 1
        if i >= n:
            break
        word: list[str] = []
        quote = ""
        while i < n and (quote or value[i] not in " \t"):
            char = value[i]
            if char == "\\" and i + 1 < n:
                word.append(_ESCAPES.get(value[i + 1], "\\" + value[i + 1]))
                i += 2
                continue
            if quote and char == quote:
                quote = ""
            elif not quote and char in "\"'":
                quote = char
            elif char == "%":
                if value[i + 1 : i + 2] != "%":
                    raise ValueError(f"specifier %{value[i + 1 : i + 2]} would be expanded")
                word.append("%")
                i += 1
            elif char == "$" and expand_dollar:
                if value[i + 1 : i + 2] != "$":
                    raise ValueError("a $VARIABLE would be expanded")
                word.append("$")
                i += 1
            else:
                word.append(char)
            i += 1
        if quote:
            raise ValueError("unterminated quote")
        words.append("".join(word))
    return words


def setting_value(value: str) -> str:
    """A specifier-expanding setting (``User=``, paths) as systemd reads it: ``%%`` → ``%``."""
    if re.search(r"%(?!%)", value.replace("%%", "")):
        raise ValueError("a specifier would be expanded")
    return value.replace("%%", "%")
