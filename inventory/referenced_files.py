"""Stage 5 of :mod:`inventory.validate`: the files a host entry references, checked.

They exist (relative paths start at the inventory file's folder) and are regular files inside
the inventory tree; secret files are mode 0600 (placeholders excepted) and the API key file
holds one raw key; the tuner profile's caps fit each GPU's range and the PSU budget, its UUIDs
and rig fingerprint match the listed GPUs; the plan names only listed GPUs and nothing that
could inject unit directives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inventory.host_checks import Issue, check_budget, check_cap, check_placements
from inventory.positions import read_yaml
from inventory.schema import HostConfig
from tuning.core.checks import api_key_problem, is_placeholder_secret
from tuning.core.plan import parse_plan
from tuning.core.profile import parse_profile, profile_mismatch
from tuning.core.rig import GpuInfo
from tuning.core.yamlsafe import YamlDocument
from tuning.errors import ConfigError, located

LOCAL_PATHS: tuple[tuple[str, str], ...] = (
    ("ssh", "key"),
    ("ssh", "known_hosts"),
    ("power", "profile"),
    ("serving", "plan"),
    ("serving", "api_key_file"),
    ("serving", "llama_server"),
    ("secrets", "hf_token_file"),
    ("tuner", "sim_rig"),
)


def file_checks(prefix: str, cfg: HostConfig, base_dir: Path, check_ssh_files: bool) -> list[Issue]:
    issues: list[Issue] = []
    for section, key in LOCAL_PATHS:
        if section == "ssh" and not check_ssh_files:
            continue
        value = getattr(getattr(cfg, section), key)
        if value is None:
            continue
        path = base_dir / Path(value).expanduser()
        special = (
            _special_file_issue(f"{prefix}.{section}.{key}", value, path, base_dir)
            if path.is_symlink() or (path.exists() and not path.is_file())
            else []
        )
        if special:
            issues += special
        elif not path.is_file():
            issues.append(
                Issue(
                    f"{prefix}.{section}.{key}",
                    f"file {value} does not exist (looked for {path}; relative paths start at "
                    "the inventory file's folder)",
                )
            )
        elif section == "power":
            issues += _profile_checks(f"{prefix}.power.profile", cfg, path)
        elif section == "serving" and key == "plan":
            issues += _plan_checks(f"{prefix}.serving.plan", cfg, path)
        elif (section, key) in _SECRET_FILES:
            issues += _secret_file_checks(
                f"{prefix}.{section}.{key}", value, path, api_key=key == "api_key_file", cfg=cfg
            )
    return issues


def _special_file_issue(label: str, value: str, path: Path, base_dir: Path) -> list[Issue]:
    """A referenced path that is a symlink, a directory, a FIFO or a device: a symlink to a
    regular file inside the inventory's folder is fine; anything else gets its own sentence
    (and never advice to chmod a target outside the inventory)."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return [Issue(label, f"{value} is a symlink to nothing (dangling); point it at a file")]
    if target.parts[1:2] and target.parts[1] in ("proc", "sys", "dev"):
        return [Issue(label, f"{value} points to {target}, a kernel interface; name a file")]
    if target.is_dir():
        return [Issue(label, f"{value} is a directory ({target}); name the file in it")]
    if not target.is_file():
        return [
            Issue(label, f"{value} is not a regular file ({target}); name a file that holds it")
        ]
    if path.is_symlink() and not target.is_relative_to(base_dir):
        return [
            Issue(
                label,
                f"{value} is a symlink out of the inventory's folder (to {target}); copy the "
                "file into the inventory tree (mode 0600 for a secret) and reference it there",
            )
        ]
    return []


#: Files that hold a secret: refused when group/other may read them.
_SECRET_FILES = frozenset({("serving", "api_key_file"), ("secrets", "hf_token_file")})


def _secret_file_checks(
    label: str, value: str, path: Path, *, api_key: bool, cfg: HostConfig
) -> list[Issue]:
    """A secret file: mode 0600 (or a placeholder); the API key file holds one raw key."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode & 0o777
    except (OSError, UnicodeDecodeError) as exc:
        return [Issue(label, f"cannot read {value}: {exc}")]
    issues: list[Issue] = []
    placeholder = is_placeholder_secret(text)
    if mode & 0o077 and not placeholder:
        issues.append(
            Issue(
                label,
                f"{value} is readable by group/other (mode {mode:04o}); a secret file must be "
                f"private: chmod 600 {path}",
            )
        )
    if api_key:
        problem = api_key_problem(text)
        if problem:
            issues.append(Issue(label, f"{value} {problem}"))
        elif placeholder and cfg.serving.open:
            issues.append(
                Issue(
                    label,
                    f"{value} holds the example placeholder, a key everyone knows, and "
                    "serving.open is true; put a real key there (openssl rand -hex 32)",
                )
            )
    return issues


def _read_side_file(
    path_label: str, path: Path, what: str
) -> tuple[dict[str, Any] | None, YamlDocument | None, list[Issue]]:
    """``(data, parsed document for line numbers, issues)`` of a referenced YAML file."""
    data, positions, issues = read_yaml(path, what)
    if issues:
        return (
            None,
            None,
            [Issue(path_label, f"{what} {path}: {i.render(path.name)}") for i in issues],
        )
    if not isinstance(data, dict):
        return None, None, [Issue(path_label, f"{what} {path} is not a YAML mapping")]
    return data, positions.doc, []


def _profile_checks(label: str, cfg: HostConfig, path: Path) -> list[Issue]:
    """The tuner profile is one (the one loader) and fits the listed GPUs: caps in range,
    budgets, and the one stale-profile check (UUIDs, fingerprint)."""
    data, doc, issues = _read_side_file(label, path, "profile")
    if data is None:
        return issues
    try:
        profile = parse_profile(data, path.name, doc)
    except ConfigError as error:
        return [Issue(label, f"profile {line}") for line in str(error).splitlines()]
    if cfg.gpus == "discover":
        return []
    gpus = cfg.gpu_list
    caps: dict[int, float] = {}
    for i, entry in enumerate(profile.gpus):
        gpu = cfg.gpu(entry.uuid)
        if gpu is None:
            continue  # named by the stale-profile check below
        caps[gpus.index(gpu)] = entry.cap_w
        for issue in check_cap(label, entry.cap_w, gpu):
            where = f"gpus[{i}].cap_w"
            issues.append(
                Issue(label, f"{located(path.name, doc, where)}: {where}: {issue.message}")
            )
    if caps:
        issues += check_budget(
            label.rsplit(".power", 1)[0], cfg, caps, f"profile caps from {path.name}"
        )
    listed = [
        GpuInfo(
            index=i,
            uuid=g.uuid,
            name=g.name,
            pci_bus_id=g.pci_bus_id,
            memory_total_mib=g.memory_total_mib,
        )
        for i, g in enumerate(gpus)
    ]
    problem = profile_mismatch(profile, listed)
    if problem:
        issues.append(Issue(label, f"profile {path.name} {problem}; re-run rigforge sweep"))
    return issues


def _plan_checks(label: str, cfg: HostConfig, path: Path) -> list[Issue]:
    """The placement plan references only listed GPUs and distinct ports."""
    data, doc, issues = _read_side_file(label, path, "plan")
    if data is None:
        return issues
    placements = data.get("placements")
    if not isinstance(placements, list):
        return [Issue(label, f"plan {path.name} has no placements list")]
    rows = [p if isinstance(p, dict) else {} for p in placements]
    issues = [
        Issue(label, f"{located(path.name, doc, i.path)}: {i.path}: {i.message}")
        for i in check_placements("placements", cfg, rows, "placements")
    ]
    if not issues:
        try:  # what the deploy will read: the one plan loader must accept it too
            parse_plan(data, path.name, doc)
        except ConfigError as error:
            issues = [Issue(label, line) for line in str(error).splitlines()]
    return issues
