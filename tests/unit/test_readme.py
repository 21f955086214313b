"""README.md stays true: its inventory reference is the schema's, its commands exist."""

from __future__ import annotations

import re

from click.testing import CliRunner

from inventory import reference_doc
from tests.conftest import REPO_ROOT
from tuning.cli import cli

README = REPO_ROOT / "README.md"


def test_inventory_reference_in_readme_matches_the_schema() -> None:
    text = README.read_text()
    assert reference_doc.replace_block(text, reference_doc.render()) == text, (
        "README.md's inventory reference is stale: run "
        "`python -m inventory.reference_doc --write README.md`"
    )


def test_reference_lists_every_host_section() -> None:
    block = reference_doc.render()
    for section in ("ssh", "driver", "gpus", "psus", "circuits", "power", "serving", "kernel"):
        assert f"| `{section}` |" in block


def test_readme_opens_with_the_two_setup_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", README.read_text(), flags=re.S)
    assert "rigforge" in blocks[0]
    assert blocks[1] == "bash tests/run.sh"
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "bash tests/run.sh" in ci


def test_every_command_in_the_readme_table_exists() -> None:
    named = set(re.findall(r"^\| `rigforge (\w+)", README.read_text(), flags=re.M))
    runner = CliRunner()
    for name in sorted(named):
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, f"rigforge {name} --help failed: {result.output}"
