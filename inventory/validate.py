"""Validate an inventory file: every error, each with file, line and YAML path, before any host
is touched.

    python -m inventory.validate inventory/examples/reference.yaml   # prints every error, exit 1

:func:`load_inventory` is what the pyinfra loader calls: it returns the validated hosts (local
paths resolved against the inventory's folder) or raises one
:class:`~tuning.errors.ConfigError` whose message lists ``file:line: path: message`` lines.

Stages, each collecting every issue it finds:

1. YAML syntax (file, line, column), duplicate keys (:mod:`inventory.positions`).
2. Secrets written inline (a key that names a token/password/API key with a literal value,
   or a value shaped like a known token) — they belong in a file referenced by ``*_file``.
3. Types, ranges and unknown keys (pydantic, per host; unknown keys get a did-you-mean).
4. Cross-field checks (:func:`inventory.host_checks.check_host`), skipped only for sections that
   already failed stage 3.
5. Files (:mod:`inventory.referenced_files`): they exist; secret files are mode 0600
   (placeholders excepted) and the API key file holds one raw key; the tuner profile's caps
   fit each GPU's range and the PSU budget, its UUIDs and rig fingerprint match the listed
   GPUs; the plan names only listed GPUs and nothing that could inject unit directives.

No pyinfra import, no network.
"""

from __future__ import annotations

import difflib
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from inventory.fields import without_bad_keys
from inventory.host_checks import Issue, check_host
from inventory.positions import read_yaml
from inventory.referenced_files import LOCAL_PATHS, file_checks
from inventory.schema import UNION_TAGS, HostConfig
from tuning.errors import ConfigError, yaml_path

#: Key names that hold a secret when their value is written inline.
SECRET_KEY_RE = re.compile(
    r"(token|api[_-]?key|apikey|password|passwd|secret|private[_-]?key|credential)", re.I
)
#: Values shaped like well-known tokens (Hugging Face, OpenAI-style, GitHub), wherever they are.
SECRET_VALUE_RE = re.compile(
    r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,})$"
)
#: Keys whose value is a file reference or a section, never a secret itself.
_SECRET_KEY_OK = re.compile(r"(_file|_files|_path)$|^secrets$")

#: Sections whose cross-field checks read each other; one broken section silences the group.
_SECTION_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"gpus", "psus", "circuits", "power", "serving"}),
    frozenset({"driver", "distro", "cuda"}),
    frozenset({"ssh"}),
)


@dataclass(frozen=True)
class LoadedInventory:
    """A validated inventory: the file and its hosts (local paths made absolute)."""

    path: Path
    hosts: dict[str, HostConfig] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Stage 2: inline secrets
# --------------------------------------------------------------------------------------------


def find_inline_secrets(data: Any, path: str = "") -> list[Issue]:
    """Keys that name a secret but hold a literal value, and values shaped like tokens."""
    issues: list[Issue] = []
    if isinstance(data, dict):
        for key, value in data.items():
            child = f"{path}.{key}" if path else str(key)
            key_text = str(key)
            if (
                SECRET_KEY_RE.search(key_text)
                and not _SECRET_KEY_OK.search(key_text)
                and isinstance(value, str | int)
                and not isinstance(value, bool)
                and str(value).strip()
            ):
                issues.append(
                    Issue(
                        child,
                        "a secret is written inline; put it in a file (mode 0600, outside git) "
                        f"and reference it as {key_text}_file: PATH",
                    )
                )
            else:
                issues += find_inline_secrets(value, child)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            issues += find_inline_secrets(item, f"{path}[{i}]")
    elif isinstance(data, str) and SECRET_VALUE_RE.match(data.strip()):
        issues.append(
            Issue(
                path,
                "this value looks like an access token; keep it in a file referenced by *_file",
            )
        )
    return issues


# --------------------------------------------------------------------------------------------
# Stage 3: pydantic errors → paths and sentences
# --------------------------------------------------------------------------------------------


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The first pydantic model inside an annotation (through list/dict/Optional/Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    current: type[BaseModel] | None = root
    for elem in loc:
        if current is None:
            return None
        if isinstance(elem, int) or elem in UNION_TAGS:
            continue
        info = current.model_fields.get(elem)
        if info is None:
            return None
        current = _inner_model(info.annotation)
    return current


def loc_to_path(prefix: str, loc: Sequence[str | int]) -> str:
    """``('gpus', 'gpu-list', 2, 'power_cap_w')`` → ``prefix.gpus[2].power_cap_w``."""
    return yaml_path(loc, prefix=prefix, skip=UNION_TAGS) if prefix or loc else ""


_PATTERN_HINTS = {
    "uuid": "is not a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx; "
    "nvidia-smi --query-gpu=uuid --format=csv prints them)",
    "pci_bus_id": "is not a PCI bus id (like 00000000:01:00.0 or 01:00.0)",
    "branch": "is not a driver branch (three digits, e.g. '570')",
    "version": "is not a CUDA version (major.minor, e.g. '12.8')",
    "codename": "is not a release codename (lower-case letters, e.g. bookworm)",
    "name": "is not a valid name (letters, digits, '.', '_', '-')",
    "service_user": "is not a valid user name",
}


def _describe(error: Any, root: type[BaseModel]) -> str:
    kind = error["type"]
    loc = error["loc"]
    value = error.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        model = _model_at(root, loc[:-1])
        known = list(model.model_fields) if model else []
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {key!r}{hint} (allowed: {', '.join(known)})"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        field_name = str(loc[-1]) if loc else ""
        return f"{value!r} " + _PATTERN_HINTS.get(field_name, f"does not match {error['msg']}")
    if kind == "literal_error":
        hint = (
            " (YAML reads on/off/yes/no as booleans; quote the word)"
            if isinstance(value, bool)
            else ""
        )
        return f"{value!r} is not allowed; expected {error['ctx']['expected']}{hint}"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    msg = str(error["msg"])
    msg = msg[0].lower() + msg[1:] if msg else msg
    if kind.startswith(("greater", "less")) or kind.endswith(("_type", "_parsing")):
        return f"{value!r}: {msg}"
    return msg


def pydantic_issues(prefix: str, exc: ValidationError, root: type[BaseModel]) -> list[Issue]:
    """Every pydantic error as an :class:`Issue` with a YAML path and a sentence."""
    return [
        Issue(loc_to_path(prefix, err["loc"]), _describe(err, root))
        for err in exc.errors(include_url=False)
    ]


# --------------------------------------------------------------------------------------------
# Stages 3–5 per host
# --------------------------------------------------------------------------------------------


def resolve_paths(cfg: HostConfig, base_dir: Path) -> HostConfig:
    """The same host with every control-machine path made absolute against ``base_dir``."""
    data = cfg.model_dump(mode="json")
    for section, key in LOCAL_PATHS:
        value = data[section].get(key)
        if value:
            data[section][key] = str((base_dir / Path(value).expanduser()).resolve())
    return HostConfig.model_validate(data)


#: Where ``rigforge sweep --host NAME`` / ``rigforge plan --host NAME`` write back, relative to
#: the inventory file's folder; used when the host entry names no profile / plan of its own.
HOST_PROFILE = "host_data/{name}/profile.yaml"
HOST_PLAN = "host_data/{name}/plan.yaml"


def default_host_files(name: str, raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """``raw`` with ``power.profile`` / ``serving.plan`` defaulted to the host's written-back data.

    A default applies only when the file exists, the entry sets no profile (and no hand caps
    in ``gpus[].power_cap_w``) / no plan (and no hand ``serving.models``), and the section is
    a mapping or absent; otherwise ``raw`` is returned unchanged.
    """
    out = dict(raw)
    gpus = raw.get("gpus")
    hand_caps = isinstance(gpus, list) and any(
        isinstance(g, dict) and g.get("power_cap_w") is not None for g in gpus
    )
    for section, key, rel, blocked in (
        ("power", "profile", HOST_PROFILE, hand_caps),
        ("serving", "plan", HOST_PLAN, "models" in (raw.get("serving") or {})),
    ):
        current = raw.get(section)
        if current is None:
            current = {}
        if not isinstance(current, dict) or current.get(key) is not None or blocked:
            continue
        rel_path = rel.format(name=name)
        if (base_dir / rel_path).is_file():
            out[section] = {**current, key: rel_path}
    return out


def validate_host(
    name: str, raw: Any, base_dir: Path, *, check_ssh_files: bool = True
) -> tuple[HostConfig | None, list[Issue]]:
    """Validate one host entry; return the host (paths resolved) or ``None``, and every issue."""
    prefix = f"hosts.{name}"
    if not isinstance(raw, dict):
        return None, [Issue(prefix, f"must be a mapping of sections, got {type(raw).__name__}")]
    raw = default_host_files(name, raw, base_dir)
    issues: list[Issue] = []
    broken: set[str] = set()
    cfg: HostConfig | None = None
    removed: list[str] = []
    try:
        cfg = HostConfig.model_validate(raw)
    except ValidationError as exc:
        issues += pydantic_issues(prefix, exc, HostConfig)
        cfg, removed_locs = without_bad_keys(HostConfig, raw, exc.errors(), UNION_TAGS)
        removed = [loc_to_path(prefix, loc) for loc in removed_locs]
        if cfg is None:
            broken = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
            cfg = _without_bad_sections(raw, broken)
            if cfg is None:
                return None, issues
            for group in _SECTION_GROUPS:
                if group & broken:
                    broken |= group
            removed = [f"{prefix}.{section}" for section in broken]
    checks = check_host(name, cfg) + file_checks(prefix, cfg, base_dir, check_ssh_files)
    issues += [i for i in checks if not _under_any(i.path, removed)]
    return (resolve_paths(cfg, base_dir) if not issues else None), issues


def _under_any(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p or path.startswith((p + ".", p + "[")) for p in prefixes)


def _without_bad_sections(raw: dict[str, Any], broken: set[str]) -> HostConfig | None:
    repaired = {k: v for k, v in raw.items() if k not in broken and k in HostConfig.model_fields}
    repaired.setdefault("ssh", {"host": "unknown.invalid"})
    try:
        return HostConfig.model_validate(repaired)
    except ValidationError:
        return None


# --------------------------------------------------------------------------------------------
# The whole file
# --------------------------------------------------------------------------------------------


def collect_issues(
    path: Path, *, check_ssh_files: bool = True
) -> tuple[dict[str, HostConfig], list[Issue]]:
    """Validate ``path``; return the valid hosts and every issue (positions filled in)."""
    data, pos, issues = read_yaml(path, "inventory")
    if issues:
        return {}, issues
    hosts: dict[str, HostConfig] = {}
    hosts_seen: dict[str, Any] = {}
    if not isinstance(data, dict):
        issues.append(Issue("", "the inventory must be a mapping with a 'hosts' key"))
    else:
        issues += find_inline_secrets(data)
        secret_paths = {i.path for i in issues}
        for key in data:
            if key != "hosts":
                close = difflib.get_close_matches(str(key), ["hosts"], n=1)
                hint = "; did you mean 'hosts'?" if close else ""
                issues.append(Issue(str(key), f"unknown key {key!r}{hint} (allowed: hosts)"))
        raw_hosts = data.get("hosts")
        if not isinstance(raw_hosts, dict) or not raw_hosts:
            issues.append(Issue("hosts", "must map at least one host name to its settings"))
        else:
            base_dir = path.resolve().parent
            for name, raw in raw_hosts.items():
                if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", str(name)):
                    issues.append(Issue(f"hosts.{name}", "is not a valid host name"))
                    continue
                cfg, host_issues = validate_host(
                    str(name), raw, base_dir, check_ssh_files=check_ssh_files
                )
                # An inline secret is also an unknown key; one message per path is enough.
                issues += [i for i in host_issues if i.path not in secret_paths]
                if cfg is not None:
                    hosts[str(name)] = cfg
                if isinstance(raw, dict):
                    hosts_seen[str(name)] = raw
    issues += cross_host_issues(hosts_seen)
    placed = []
    for issue in issues:
        if issue.line is None and issue.path:
            line, column = pos.lookup(issue.path)
            issue = Issue(issue.path, issue.message, line, column)
        placed.append(issue)
    return hosts, placed


def cross_host_issues(raw_hosts: dict[str, Any]) -> list[Issue]:
    """Identities two hosts cannot share: a GPU UUID (one card is in one box) and the SSH
    endpoint ``ssh.host:ssh.port`` (one deploy would hit the same box twice, with two
    different descriptions of it). Reads the raw entries so a host that failed validation
    elsewhere is still compared."""
    issues: list[Issue] = []
    endpoints: dict[tuple[str, int], str] = {}
    uuids: dict[str, str] = {}
    for name, raw in raw_hosts.items():
        ssh = raw.get("ssh")
        if isinstance(ssh, dict) and isinstance(ssh.get("host"), str):
            port = ssh.get("port", 22)
            key = (ssh["host"].lower().rstrip("."), port if isinstance(port, int) else -1)
            if key in endpoints:
                issues.append(
                    Issue(
                        f"hosts.{name}.ssh.host",
                        f"{ssh['host']}:{key[1]} is also hosts.{endpoints[key]}'s SSH endpoint; "
                        "two entries would deploy to one machine: merge them or fix the address",
                    )
                )
            else:
                endpoints[key] = name
        gpus = raw.get("gpus")
        for i, gpu in enumerate(gpus if isinstance(gpus, list) else []):
            uuid = gpu.get("uuid") if isinstance(gpu, dict) else None
            if not isinstance(uuid, str):
                continue
            other = uuids.get(uuid.lower())
            if other is not None and other != name:
                issues.append(
                    Issue(
                        f"hosts.{name}.gpus[{i}].uuid",
                        f"{uuid} is also listed under hosts.{other}; a GPU is in one box: "
                        "remove it from the host that does not have it",
                    )
                )
            uuids.setdefault(uuid.lower(), name)
    return issues


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def render_issues(path: Path, issues: Sequence[Issue]) -> list[str]:
    """``file:line: path: message`` lines, in file order."""
    shown = _display(path)
    ordered = sorted(issues, key=lambda i: (i.line or 0, i.column or 0, i.path))
    return [i.render(shown) for i in ordered]


def load_inventory(path: str | Path, *, check_ssh_files: bool = True) -> LoadedInventory:
    """Validate an inventory file and return its hosts, or raise one :class:`ConfigError`.

    The error message has one ``file:line: path: message`` line per issue, every issue.
    ``check_ssh_files=False`` skips the existence check of ``ssh.key``/``ssh.known_hosts``
    (for validating an inventory on a machine that will never connect).
    """
    path = Path(path)
    hosts, issues = collect_issues(path, check_ssh_files=check_ssh_files)
    if issues:
        lines = render_issues(path, issues)
        raise ConfigError(
            f"{_display(path)}: {len(lines)} problem(s) in the inventory; nothing was "
            "contacted:\n" + "\n".join(lines)
        )
    return LoadedInventory(path=path.resolve(), hosts=hosts)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inventory.validate FILE... [--no-ssh-files]``: print every error; exit 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    check_ssh = "--no-ssh-files" not in args
    files = [a for a in args if a != "--no-ssh-files"]
    if not files or any(a in ("-h", "--help") for a in files):
        print(main.__doc__, file=sys.stderr)
        return 2
    status = 0
    for name in files:
        try:
            loaded = load_inventory(name, check_ssh_files=check_ssh)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            status = 1
        else:
            names = ", ".join(loaded.hosts)
            print(f"{_display(Path(name))}: OK ({len(loaded.hosts)} host(s): {names})")
    return status


if __name__ == "__main__":
    sys.exit(main())
