"""The unit-text writer and the renderer's one environment, against systemd's own rules.

Expected texts are worked by hand from systemd.service(5) "COMMAND LINES" (``%%`` is a
literal ``%``, ``$$`` a literal ``$``, ``"…"`` groups a word, ``\\"`` and ``\\\\`` inside it)
and systemd.exec(5) ``Environment=`` (quoted assignments, specifiers expanded, ``$`` not).
"""

from __future__ import annotations

import jinja2
import pytest

from tuning.render import (
    UnsafeUnitValue,
    environment,
    unit_env,
    unit_exec,
    unit_path,
    unit_setting,
    unit_word,
)


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("--port", "--port"),  # plain: bare
        ("8000", "8000"),
        ("100%", "100%%"),  # a specifier sign, doubled even bare
        ("a b", '"a b"'),  # a space: one quoted word
        ("$HOME", '"$$HOME"'),  # '$' is not plain; doubled so no variable is expanded
        ('say "hi"', '"say \\"hi\\""'),
        ("C:\\dir", '"C:\\\\dir"'),
        ("", '""'),  # an empty argument stays an argument
    ],
)
def test_unit_word_is_one_literal_argument(value: str, written: str) -> None:
    assert unit_word(value) == written


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\tb", "a\x1bb", "a\u2028b"])
def test_control_characters_are_refused_not_escaped(value: str) -> None:
    with pytest.raises(UnsafeUnitValue, match="control character"):
        unit_word(value)


def test_environment_assignment_doubles_percent_but_not_dollar() -> None:
    assert unit_env("ROOT", "/srv/a b$1%n") == '"ROOT=/srv/a b$1%%n"'
    with pytest.raises(UnsafeUnitValue, match="variable name"):
        unit_env("BAD NAME", "x")


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("+/bin/sh", "absolute"),  # '+' would run it with full privileges
        ("relative/bin", "absolute"),
        ('/opt/"v"/bin', "quote or a backslash"),
        ("/" + "a" * 4095, "longer than a path"),
    ],
)
def test_executables_are_plain_absolute_paths(path: str, why: str) -> None:
    with pytest.raises(UnsafeUnitValue, match=why):
        unit_exec(path)


def test_bare_settings_refuse_what_systemd_would_read_differently() -> None:
    assert unit_setting("rigforge %i") == "rigforge %%i"
    with pytest.raises(UnsafeUnitValue, match="backslash"):
        unit_setting("/x\\")  # would continue onto the next line
    with pytest.raises(UnsafeUnitValue, match="whitespace"):
        unit_path("/etc/key ")  # systemd strips it


def test_a_raw_value_in_a_unit_template_is_refused() -> None:
    """The environment prints only the writer's output and numbers into units and scripts."""
    env = environment().overlay(
        loader=jinja2.DictLoader(
            {
                "etc/systemd/system/x.service.j2": "ExecStart=/bin/x {{ value }}",
                "etc/systemd/system/y.service.j2": "ExecStart=/bin/x {{ value | sd }} {{ n }}",
                "etc/other.conf.j2": "value={{ value }}",
            }
        )
    )
    with pytest.raises(UnsafeUnitValue, match="reached a unit or script unquoted"):
        env.get_template("etc/systemd/system/x.service.j2").render(value="a")
    text = env.get_template("etc/systemd/system/y.service.j2").render(value="a b", n=3)
    assert text == 'ExecStart=/bin/x "a b" 3'
    # outside units, raw text is allowed but a control character never is
    assert env.get_template("etc/other.conf.j2").render(value="a b") == "value=a b"
    with pytest.raises(UnsafeUnitValue):
        env.get_template("etc/other.conf.j2").render(value="a\nb=c")
    with pytest.raises(UnsafeUnitValue, match="finite"):
        env.get_template("etc/systemd/system/y.service.j2").render(value="a", n=float("inf"))
