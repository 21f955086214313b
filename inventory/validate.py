"""Validate an inventory file: every error, each with file, line and YAML path, before any host
is touched.

    python -m inventory.validate inventory/examples/reference.yaml   # prints every error, exit 1

:func:`load_inventory` is what the pyinfra loader calls: it returns the validated hosts (local
paths resolved against the inventory's folder) or raises one
:class:`~tuning.errors.ConfigError` whose message lists ``file:line: path: message`` lines.

Stages, each collecting every issue it finds:

1. YAML syntax (file, line, column), duplicate keys.
2. Secrets written inline (a key that names a token/password/API key with a literal value,
   or a value shaped like a known token) — they belong in a file referenced by ``*_file``.
3. Types, ranges and unknown keys (pydantic, per host; unknown keys get a did-you-mean).
4. Cross-field checks (:func:`inventory.host_checks.check_host`), skipped only for sections that
   already failed stage 3.
5. Files: they exist; secret files are mode 0600 (placeholders excepted) and the API key
   file holds one raw key; the tuner profile's caps fit each GPU's range and the PSU budget,
   its UUIDs and rig fingerprint match the listed GPUs; the plan names only listed GPUs and
   nothing that could inject unit directives.

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
from inventory.host_checks import Issue, check_budget, check_cap, check_host, check_placements
from inventory.schema import UNION_TAGS, HostConfig
from tuning.core.checks import api_key_problem, is_placeholder_secret
from tuning.core.plan import parse_plan
from tuning.core.profile import parse_profile, profile_mismatch
from tuning.core.rig import GpuInfo
from tuning.core.yamlsafe import YamlDocument, YamlRefused, parse_yaml, read_text_file
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
# Stage 1: YAML with positions
# --------------------------------------------------------------------------------------------


class _Positions:
    """Line/column (1-based) of each YAML path, for error messages."""

    def __init__(self, doc: YamlDocument | None = None) -> None:
        self.doc = doc

    def lookup(self, path: str) -> tuple[int | None, int | None]:
        """Position of ``path`` or of its nearest ancestor that has one."""
        position = self.doc.position_of(path) if self.doc is not None and path else None
        return position if position is not None else (None, None)


def _refusal_issues(exc: YamlRefused) -> list[Issue]:
    return [Issue(p.path, p.reason, p.line, p.column) for p in exc.problems]


def load_yaml(text: str | bytes, source: str = "<yaml>") -> tuple[Any, _Positions, list[Issue]]:
    """Parse YAML through the one safe loader (:mod:`tuning.core.yamlsafe`); return ``(data,
    positions, issues)``. Refusals (syntax, duplicate keys, alias bombs, tags…) carry line and
    column; ``data`` is ``None`` when there are any."""
    try:
        doc = parse_yaml(text, source)
    except YamlRefused as exc:
        return None, _Positions(), _refusal_issues(exc)
    return doc.data, _Positions(doc), []


def read_yaml(path: Path, what: str) -> tuple[Any, _Positions, list[Issue]]:
    """:func:`load_yaml` of a file read through :func:`tuning.core.yamlsafe.read_text_file`
    (a regular UTF-8 file of bounded size)."""
    try:
        text = read_text_file(path, what)
    except YamlRefused as exc:
        return None, _Positions(), _refusal_issues(exc)
    return load_yaml(text, str(path))


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

_LOCAL_PATHS: tuple[tuple[str, str], ...] = (
    ("ssh", "key"),
    ("ssh", "known_hosts"),
    ("power", "profile"),
    ("serving", "plan"),
    ("serving", "api_key_file"),
    ("serving", "llama_server"),
    ("secrets", "hf_token_file"),
    ("tuner", "sim_rig"),
)


def resolve_paths(cfg: HostConfig, base_dir: Path) -> HostConfig:
    """The same host with every control-machine path made absolute against ``base_dir``."""
    data = cfg.model_dump(mode="json")
    for section, key in _LOCAL_PATHS:
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
    checks = check_host(name, cfg) + _file_checks(prefix, cfg, base_dir, check_ssh_files)
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


def _file_checks(
    prefix: str, cfg: HostConfig, base_dir: Path, check_ssh_files: bool
) -> list[Issue]:
    issues: list[Issue] = []
    for section, key in _LOCAL_PATHS:
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
) -> tuple[dict[str, Any] | None, list[Issue]]:
    data, _, issues = read_yaml(path, what)
    if issues:
        return None, [Issue(path_label, f"{what} {path}: {i.render(path.name)}") for i in issues]
    if not isinstance(data, dict):
        return None, [Issue(path_label, f"{what} {path} is not a YAML mapping")]
    return data, []


def _profile_checks(label: str, cfg: HostConfig, path: Path) -> list[Issue]:
    """The tuner profile is one (the one loader) and fits the listed GPUs: caps in range,
    budgets, and the one stale-profile check (UUIDs, fingerprint)."""
    data, issues = _read_side_file(label, path, "profile")
    if data is None:
        return issues
    try:
        profile = parse_profile(data, path.name)
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
            issues.append(Issue(label, f"{path.name} gpus[{i}].cap_w: {issue.message}"))
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
    data, issues = _read_side_file(label, path, "plan")
    if data is None:
        return issues
    placements = data.get("placements")
    if not isinstance(placements, list):
        return [Issue(label, f"plan {path.name} has no placements list")]
    rows = [p if isinstance(p, dict) else {} for p in placements]
    issues = [
        Issue(label, f"{path.name} {i.path}: {i.message}")
        for i in check_placements("placements", cfg, rows, "placements")
    ]
    if not issues:
        try:  # what the deploy will read: the one plan loader must accept it too
            parse_plan(data, path.name)
        except ConfigError as error:
            issues = [Issue(label, line) for line in str(error).splitlines()]
    return issues


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
