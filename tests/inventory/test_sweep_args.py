"""``tuner.sweep_args`` reach a shell command (each argument ``shlex.quote``d by deploys/tune.py):
regexes with quotes and backslashes pass, secrets and control characters do not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inventory.schema import TunerConfig


def test_a_tps_regex_with_backslashes_and_quotes_is_accepted() -> None:
    args = ["--tps-regex", r"generation: (?P<tps>[\d.]+) \"tok/s\""]
    assert TunerConfig(sweep_args=args).sweep_args == args


@pytest.mark.parametrize(
    ("arg", "phrase"),
    [("--api-key=sk-abcdefabcdefabcdefabcdef", "secret"), ("--seed\n1", "control character")],
)
def test_secrets_and_control_characters_are_refused(arg: str, phrase: str) -> None:
    with pytest.raises(ValidationError, match=phrase):
        TunerConfig(sweep_args=[arg])
