"""README.md is a front page that stays true; the reference pages in docs/ follow the code.

The README opens with the two commands CI and users run; its command table names commands
that exist; every link in it and in docs/ reaches a file (and a heading) that exists. The
inventory reference (docs/inventory.md) is the schema's, and docs/formats.md names every field
the profile and plan files carry.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from inventory import reference_doc
from tests.conftest import REPO_ROOT
from tuning.cli import cli
from tuning.core.plan import load_plan
from tuning.core.profile import CurvePoint, Profile, ProfileGpu, ProfileRig, Validation

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
INVENTORY_DOC = REPO_ROOT / reference_doc.REFERENCE_DOC
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def test_inventory_reference_matches_the_schema() -> None:
    text = INVENTORY_DOC.read_text()
    assert reference_doc.replace_block(text, reference_doc.render()) == text, (
        f"{reference_doc.REFERENCE_DOC}'s inventory reference is stale: run "
        "`python -m inventory.reference_doc --write`"
    )


def test_reference_lists_every_host_section() -> None:
    block = reference_doc.render()
    for section in ("ssh", "driver", "gpus", "psus", "circuits", "power", "serving", "kernel"):
        assert f"| `{section}` |" in block


def test_readme_opens_with_the_two_setup_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", README.read_text(), flags=re.S)
    assert blocks[0] == (
        'python3 -m venv .venv && .venv/bin/pip install -q -e ".[all]" && '
        ".venv/bin/rigforge loop --out out"
    )
    assert blocks[1] == "bash tests/run.sh"
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "bash tests/run.sh" in ci


def test_readme_is_a_front_page() -> None:
    """The reference material lives in docs/; the README links to each page."""
    text = README.read_text()
    assert reference_doc.START not in text, "the inventory reference belongs in docs/inventory.md"
    for page in sorted(DOCS.glob("*.md")):
        assert f"(docs/{page.name}" in text, f"README.md does not link docs/{page.name}"
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    for section in ("Deploy", "Tune", "Place", "Verify"):
        assert section in headings, f"README.md has no '## {section}' section"


def test_every_command_in_the_readme_table_exists() -> None:
    named = set(re.findall(r"^\| `rigforge (\w+)", README.read_text(), flags=re.M))
    assert {"loop", "sweep", "plan", "apply"} <= named
    runner = CliRunner()
    for name in sorted(named):
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, f"rigforge {name} --help failed: {result.output}"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as ``-``."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_link_reaches_a_file_and_heading(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an outside address
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name} links {target}: no such file"
        if anchor:
            assert anchor in _anchors(resolved), f"{page.name} links {target}: no such heading"


def test_formats_page_names_every_profile_field() -> None:
    text = (DOCS / "formats.md").read_text()
    for model in (Profile, ProfileGpu, ProfileRig, Validation, CurvePoint):
        for name in model.model_fields:
            assert f"`{name}`" in text or re.search(rf"[{{ ,]{name}[,}} ]", text), (
                f"docs/formats.md does not describe the profile's {model.__name__}.{name}"
            )


def test_formats_page_names_every_plan_key() -> None:
    """The keys a written plan carries (the CI target's plan, written back out)."""
    text = (DOCS / "formats.md").read_text()
    plan = load_plan(REPO_ROOT / "inventory/examples/host_data/ci-target/plan.yaml")
    document = plan.to_yaml()
    keys = set(document) | set(document["placements"][0])
    for key in sorted(keys):
        assert f"`{key}`" in text, f"docs/formats.md does not describe the plan's {key}"


def _named_paths(page: Path) -> list[tuple[str, str]]:
    """``(section folder, name)`` for each backticked name in a table's first column."""
    base, found = "", []
    for line in page.read_text().splitlines():
        heading = re.match(r"^## `([^`]+/)`", line)
        if heading:
            base = heading.group(1)
        elif line.startswith("## "):
            base = ""
        elif line.startswith("| `"):
            first = line.split("|")[1]
            found += [(base, name) for name in re.findall(r"`([^`]+)`", first)]
    return found


def _exists(path: str) -> bool:
    """A module may become a package and back (``x.py`` ↔ ``x/``) without the map lying."""
    if any(c in path for c in "*?"):
        return bool(list(REPO_ROOT.glob(path)))
    stem = path.rstrip("/").removesuffix(".py")
    return any((REPO_ROOT / p).exists() for p in (path, stem, f"{stem}.py"))


def test_layout_names_only_paths_that_exist() -> None:
    named = _named_paths(DOCS / "layout.md")
    assert len(named) > 40, "docs/layout.md lost its tables"
    missing = [base + name for base, name in named if not _exists(base + name)]
    assert not missing, f"docs/layout.md names paths that are gone: {missing}"


def test_what_you_will_see_is_what_rigforge_loop_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's stock-vs-tuned table is the summary of a fresh ``rigforge loop`` (its
    defaults: sim:reference, 30 simulated minutes, seed 0), row for row, and so are the
    figures its prose quotes."""
    from rich.console import Console

    from tuning.commands.loop import render_summary
    from tuning.loop import LoopConfig, run_loop

    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))
    result = run_loop(LoopConfig(out=tmp_path / "out", plots=False))
    console = Console(file=io.StringIO(), width=100, no_color=True)
    render_summary(result, console)
    printed = [ln.rstrip() for ln in console.file.getvalue().splitlines()]  # type: ignore[attr-defined]
    start = next(i for i, ln in enumerate(printed) if "stock vs tuned" in ln)
    end = next(i for i in range(start, len(printed)) if printed[i].startswith("└"))
    table = "\n".join(printed[start : end + 1])
    text = README.read_text()
    assert f"```\n{table}\n```" in text, f"README.md's summary is stale; it now reads:\n{table}"
    # the serving run of the plan (issue 12): its table and its two verdict lines, as printed
    first = next(i for i, ln in enumerate(printed) if ln.startswith("serving run: the plan"))
    last = next(i for i in range(first, len(printed)) if printed[i].startswith("└"))
    served = "\n".join(printed[first : last + 3])
    assert f"```\n{served}\n```" in text, (
        f"README.md's serving run is stale; it now reads:\n{served}"
    )
    prose = " ".join(text.split())
    stock, tuned = result.stock, result.tuned
    assert f"stock throttles {stock.throttle_events} times" in prose
    assert f"tuned has {tuned.throttle_events} throttle events" in prose
    gain_pct = round((tuned.tokens_per_joule / stock.tokens_per_joule - 1) * 100)
    assert f"{gain_pct} % more tokens per joule" in prose
