"""Every bad file of every kind, through every command that reads that kind: a clear refusal
(non-zero exit, the file named, the YAML path and the expected sentence), never a traceback,
never a connection.

Corpora (one file per case, same ``# expect:`` header as ``bad/``; a capture, which has no
comment syntax, keeps its header in ``NAME.expect`` beside it):

- ``bad/`` — inventories (``python -m inventory.validate``; ``test_bad_corpus.py`` also runs
  them through the pyinfra loader);
- ``bad-models/`` — models files (``rigforge plan --models``, ``rigforge loop --models``);
- ``bad-rig/`` — simulated rig files (``inspect``, ``sweep``, ``plan``, ``loop``, ``apply``
  with ``--rig FILE``);
- ``bad-profile/`` — tuning profiles (``rigforge apply``, ``rigforge plan --profile`` and an
  inventory's ``power.profile``);
- ``bad-plan/`` — placement plans (an inventory's ``serving.plan``);
- ``bad-budget/`` — power budgets (``rigforge sweep --budget``, ``rigforge apply --budget``);
- ``bad-captures/`` — captures (``rigforge inspect --from-captures``, alone in a folder);
- ``bad-workload/`` — workload files (``rigforge sweep --workload FILE.yaml``,
  docs/workload.md);
- ``bad-links/`` — ``links.yaml`` as ``rigforge links`` writes it. No command reads one back
  yet (the placement will), so it runs through the one loader,
  :func:`tuning.fabric.links_file.load_links_file`, and its refusal is printed the way the CLI
  prints a :class:`~tuning.errors.RigforgeError` (``links-file`` below).

Files that are not files (a symlink to ``/proc/self/mem``, a FIFO, a folder) are made here for
every kind, since git cannot hold them.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from inventory.validate import main as validate_main
from tests.entry_point import run_rigforge
from tuning.errors import RigforgeError
from tuning.fabric.links_file import load_links_file

HERE = Path(__file__).parent
GOOD_PROFILE_RIG = "sim:4x3090"
MODELS = str(HERE.parents[1] / "inventory" / "examples" / "models-reference.yaml")


@dataclass(frozen=True)
class Case:
    kind: str
    path: Path
    expect: tuple[str, ...]
    texts: tuple[str, ...]
    lines: tuple[str, ...]


def _header(path: Path) -> str:
    sidecar = path.with_name(path.name + ".expect")
    if sidecar.is_file():
        return sidecar.read_text(encoding="utf-8")
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16")
    return raw.decode("utf-8", "replace")


def _case(kind: str, path: Path) -> Case:
    found: dict[str, list[str]] = {"expect": [], "expect-text": [], "expect-line": []}
    for line in _header(path).splitlines():
        match = re.match(r"^#\s*(expect(?:-text|-line)?):\s*(.+?)\s*$", line)
        if match:
            found[match.group(1)].append(match.group(2))
    return Case(
        kind, path, tuple(found["expect"]), tuple(found["expect-text"]), tuple(found["expect-line"])
    )


KINDS = (
    "bad",
    "bad-models",
    "bad-rig",
    "bad-profile",
    "bad-plan",
    "bad-budget",
    "bad-captures",
    "bad-links",
    "bad-workload",
)
CASES = [
    _case(kind, path)
    for kind in KINDS
    for path in sorted((HERE / kind).iterdir())
    if path.is_file() and path.suffix != ".expect" and not path.name.startswith(".")
]


def _profile(tmp: Path) -> Path:
    """A valid profile of sim:4x3090 (a real sweep's output, trimmed to its caps)."""
    from tuning.core.profile import load_profile

    # The corpus' own base profile: every bad-profile case is this file with one fault.
    text = (HERE / "bad-profile" / "cap-infinite.yaml").read_text(encoding="utf-8")
    path = tmp / "good-profile.yaml"
    path.write_text(text.replace("cap_w: .inf", "cap_w: 241.0"), encoding="utf-8")
    load_profile(path)
    return path


def _inventory_with(tmp: Path, section: str, bad: Path) -> Path:
    inventory = tmp / "inventory.yaml"
    if section == "power":
        body = f"    power: {{profile: {bad}}}\n"
    else:
        body = (
            "    gpus: [{uuid: GPU-30900000-0000-4000-8000-000000000001}]\n"
            f"    serving: {{plan: {bad}}}\n"
        )
    inventory.write_text(f"hosts:\n  ws1:\n    ssh: {{host: 127.0.0.1}}\n{body}", encoding="utf-8")
    return inventory


#: kind → commands reading it: (label, argv builder (bad file, scratch dir) → argv). An argv
#: starting with "validate" runs ``python -m inventory.validate``, one starting with
#: "links-file" the links loader; the rest is ``rigforge …``.
Argv = Callable[[Path, Path], list[str]]
COMMANDS: dict[str, list[tuple[str, Argv]]] = {
    "bad": [
        ("validate", lambda f, t: ["validate", str(f)]),
        (
            "apply-inventory",
            lambda f, t: [
                "apply",
                str(_profile(t)),
                "--rig",
                GOOD_PROFILE_RIG,
                "--inventory",
                str(f),
                "--host",
                "ws1",
                "--dry-run",
            ],
        ),
    ],
    "bad-models": [
        ("plan", lambda f, t: ["plan", "--rig", "sim:4x3090", "--models", str(f)]),
        ("plan-json", lambda f, t: ["plan", "--rig", "sim:4x3090", "--models", str(f), "--json"]),
        ("loop", lambda f, t: ["loop", "--rig", "sim:4x3090", "--models", str(f), "--out", str(t)]),
    ],
    "bad-rig": [
        ("inspect", lambda f, t: ["inspect", "--rig", str(f)]),
        ("sweep", lambda f, t: ["sweep", "--rig", str(f), "--profile-out", str(t / "p.yaml")]),
        ("plan", lambda f, t: ["plan", "--rig", str(f), "--models", MODELS]),
        (
            "loop",
            lambda f, t: ["loop", "--rig", str(f), "--models", MODELS, "--out", str(t / "out")],
        ),
        ("apply", lambda f, t: ["apply", str(_profile(t)), "--rig", str(f), "--dry-run"]),
    ],
    "bad-profile": [
        ("apply", lambda f, t: ["apply", str(f), "--rig", GOOD_PROFILE_RIG, "--dry-run"]),
        (
            "plan",
            lambda f, t: [
                "plan",
                "--rig",
                GOOD_PROFILE_RIG,
                "--models",
                MODELS,
                "--profile",
                str(f),
            ],
        ),
        ("validate", lambda f, t: ["validate", str(_inventory_with(t, "power", f))]),
    ],
    "bad-plan": [
        ("validate", lambda f, t: ["validate", str(_inventory_with(t, "serving", f))]),
    ],
    "bad-budget": [
        (
            "sweep",
            lambda f, t: [
                "sweep",
                "--rig",
                GOOD_PROFILE_RIG,
                "--budget",
                str(f),
                "--profile-out",
                str(t / "p.yaml"),
            ],
        ),
        (
            "apply",
            lambda f, t: [
                "apply",
                str(_profile(t)),
                "--rig",
                GOOD_PROFILE_RIG,
                "--budget",
                str(f),
                "--dry-run",
            ],
        ),
    ],
    "bad-captures": [
        ("inspect", lambda f, t: ["inspect", "--from-captures", str(f.parent)]),
        ("inspect-json", lambda f, t: ["inspect", "--from-captures", str(f.parent), "--json"]),
    ],
    "bad-links": [("links-file", lambda f, t: ["links-file", str(f)])],
    "bad-workload": [
        (
            "sweep",
            lambda f, t: [
                "sweep",
                "--rig",
                GOOD_PROFILE_RIG,
                "--workload",
                str(f),
                "--profile-out",
                str(t / "p.yaml"),
            ],
        ),
    ],
}


def _load_links(path: str) -> int:
    """What a command reading ``links.yaml`` does with it: the one loader; a refusal printed as
    the CLI prints a :class:`~tuning.errors.RigforgeError`, exit 1."""
    try:
        load_links_file(Path(path))
    except RigforgeError as error:
        print(f"rigforge: error: {error}", file=sys.stderr)
        return 1
    return 0


def _run(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run one command in process; return (exit status, stdout + stderr). An exception other
    than SystemExit escapes: that is the traceback this test exists to catch."""
    if argv[0] not in ("validate", "links-file"):
        return run_rigforge(argv, monkeypatch, capsys)
    capsys.readouterr()
    status = validate_main(argv[1:]) if argv[0] == "validate" else _load_links(argv[1])
    out = capsys.readouterr()
    return status, out.out + out.err


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


PAIRS = [(case, label, argv) for case in CASES for label, argv in COMMANDS[case.kind]]


def test_corpora_cover_every_kind() -> None:
    counts = {kind: sum(1 for c in CASES if c.kind == kind) for kind in KINDS}
    print(f"\nbad-file corpora: {counts}, {len(CASES)} files, {len(PAIRS)} file×command runs")
    assert all(n >= 5 for n in counts.values()), counts


@pytest.mark.parametrize(
    ("case", "label", "argv"),
    PAIRS,
    ids=[f"{c.kind}/{c.path.name}/{label}" for c, label, _ in PAIRS],
)
def test_bad_file_is_refused_clearly_by_every_command(
    case: Case,
    label: str,
    argv: Argv,
    scratch: Path,
    no_connections: list[object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert case.expect or case.texts, f"{case.path.name} declares no expectation"
    path = case.path
    if case.kind == "bad-captures":  # alone in a folder
        (scratch / "captures").mkdir()
        path = scratch / "captures" / case.path.name
        shutil.copyfile(case.path, path)
    status, output = _run(argv(path, scratch), monkeypatch, capsys)
    assert status != 0, output
    assert "Traceback" not in output, output
    assert case.path.name in output or (case.kind == "bad-captures" and "captures" in output)
    for yaml_path in case.expect:
        assert f"{yaml_path}: " in output, f"{yaml_path} not in:\n{output}"
    for text in case.texts:
        assert text in output, f"{text!r} not in:\n{output}"
    for line in case.lines:
        assert f"{case.path.name}:{line}:" in output, output
    if case.kind in LINED:
        # Every YAML file kind: the refusal names the line it is about.
        assert re.search(rf"{re.escape(case.path.name)}:\d+", output), output
    assert no_connections == []


#: The kinds that are YAML, whose every refusal can point at a line (captures are not YAML).
LINED = frozenset(KINDS) - {"bad-captures"}


SPECIAL = ("symlink-to-proc-self-mem", "fifo", "directory")


def _special(kind: str, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{kind}.yaml"
    if kind == "symlink-to-proc-self-mem":
        path.symlink_to("/proc/self/mem")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    return path


SPECIAL_PAIRS = [
    (kind, special, label, argv)
    for kind in KINDS
    for special in SPECIAL
    for label, argv in COMMANDS[kind][:1]
]


@pytest.mark.parametrize(
    ("kind", "special", "label", "argv"),
    SPECIAL_PAIRS,
    ids=[f"{k}/{s}/{label}" for k, s, label, _ in SPECIAL_PAIRS],
)
def test_a_path_that_is_not_a_regular_file_is_refused(
    kind: str,
    special: str,
    label: str,
    argv: Argv,
    scratch: Path,
    no_connections: list[object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A FIFO would block a plain ``open()`` forever; ``/proc/self/mem`` raises EIO."""
    path = _special(special, scratch / "captures")
    status, output = _run(argv(path, scratch), monkeypatch, capsys)
    assert status != 0, output
    assert "Traceback" not in output, output
    # A folder given as a profile means FOLDER/profile.yaml (rigforge apply DIR), hence the last.
    refusal = r"kernel interface|not a regular file|is a directory|no GPU|profile.yaml: cannot read"
    assert re.search(refusal, output), output
    assert no_connections == []
