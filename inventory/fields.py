"""Pydantic field types for every user value that reaches a file on a host, a unit, a command
line or a path (shared by the inventory schema and the models file). Each type *refuses* what
cannot be right; nothing is escaped or repaired. The unit-text checks themselves live in
:mod:`tuning.core.checks`.

:class:`StrictModel` is the base of every user-file model: unknown keys, control characters in
any string, booleans where a number is meant (YAML's ``true`` is not 1 W) and non-finite
numbers (``.inf``, ``.nan``) are refused for every field, so a new field is safe by
construction.
"""

from __future__ import annotations

import copy
import ipaddress
import posixpath
import re
import typing
from collections.abc import Container, Sequence
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
)

from tuning.core.checks import gpu_id_problem, secret_arg_problem, text_problem
from tuning.core.strict import StrictModel, control_problem

__all__ = [
    "BindAddress",
    "CommandArg",
    "DebianPackage",
    "EngineArg",
    "GpuId",
    "GpuRef",
    "LoginName",
    "ServicePort",
    "ServiceUser",
    "SshHost",
    "StrictModel",
    "TargetPath",
    "UnitText",
    "control_problem",
    "without_bad_keys",
]

#: Lowest port a serving unit may listen on: below 1024 needs root (CAP_NET_BIND_SERVICE),
#: which the units never get (IANA "system ports", RFC 6335 §6).
MIN_SERVICE_PORT = 1024
#: Highest TCP port (a 16-bit field, RFC 793).
MAX_PORT = 65535

#: RFC 1123 §2.1 host name: labels of letters, digits and '-', not starting or ending with
#: '-', at most 63 characters each and 253 in all.
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
#: POSIX portable user name (IEEE 1003.1 §3.437: [A-Za-z0-9._-], not starting with '-'), at
#: most 32 characters (Linux utmp's UT_NAMESIZE).
_LOGIN_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}$")
#: Debian's adduser NAME_REGEX default for a system account (adduser.conf(5)), 32 at most.
_SERVICE_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
#: Debian Policy §5.6.1 (package names: lower-case letters, digits, '+', '-', '.', at least
#: two characters, starting with an alphanumeric), optionally ``:arch`` and ``=version``
#: (§5.6.12: ``[0-9A-Za-z.+~:-]``, starting with a digit after an optional epoch).
_DEBIAN_PACKAGE = re.compile(
    r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?(=([0-9]+:)?[0-9][0-9A-Za-z.+~-]*(-[0-9A-Za-z.+~]+)?)?$"
)
#: Characters a target path may hold: it lands in units (``ExecStart=``, where ``%`` is a
#: specifier and whitespace splits words) and shell commands.
_TARGET_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")


M = typing.TypeVar("M", bound=BaseModel)


def without_bad_keys(
    model: type[M], data: Any, errors: Sequence[Any], skip: Container[object] = ()
) -> tuple[M | None, list[tuple[str | int, ...]]]:
    """``data`` validated again with only the keys pydantic complained about removed, and the
    locations removed; ``(None, [])`` when that does not give a valid model (an error on a
    whole item or section). So a typo in one section does not silence the cross-field checks
    of the others. ``skip``: pydantic union tags to leave out of locations."""
    repaired = copy.deepcopy(data)
    removed: list[tuple[str | int, ...]] = []
    for err in errors:
        loc = tuple(part for part in err["loc"] if part not in skip)
        if len(loc) < 2 or not isinstance(loc[-1], str):
            return None, []
        parent: Any = repaired
        for part in loc[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                return None, []
        if not isinstance(parent, dict):
            return None, []
        parent.pop(loc[-1], None)
        removed.append(loc)
    try:
        return model.model_validate(repaired), removed
    except ValidationError:
        return None, []


def _unit_text(value: str) -> str:
    # Copied into a systemd unit: a newline would inject directives, a quote break quoting.
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _gpu_id(value: str) -> str:
    problem = gpu_id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _gpu_ref(value: str) -> str:
    problem = gpu_id_problem(value, strict=False)
    if problem:
        raise ValueError(problem)
    return value


def _engine_arg(value: str) -> str:
    problem = text_problem(value) or secret_arg_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _command_arg(value: str) -> str:
    problem = text_problem(value, quotes=False) or secret_arg_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _target_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute path on the target (start with '/')")
    if not _TARGET_PATH.match(value):
        bad = next(c for c in value if not re.match(r"[A-Za-z0-9._/+-]", c))
        raise ValueError(
            f"{value!r} contains {bad!r}; a target path may hold letters, digits and . _ / + - "
            "only (it is written into units and shell commands)"
        )
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = normal[1:]
    if normal != value or "/../" in f"{value}/" or "/./" in f"{value}/":
        raise ValueError(f"{value!r} is not a normalised path; write {normal!r}")
    return value


def _ssh_host(value: str) -> str:
    try:
        # An IPv6 scope id (fe80::1%eth0) is refused like any '%': it is no RFC 1123 name.
        ipaddress.ip_address(value.replace("%", "/"))
    except ValueError:
        pass
    else:
        return value
    labels = value.rstrip(".").split(".") if len(value) <= 253 else []
    if not labels or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(
            f"{value!r} is neither an IP address nor an RFC 1123 host name (letters, digits, "
            "'-' and '.'; no leading '-', no scope id)"
        )
    return value


def _bind_address(value: str) -> str:
    if "%" in value:
        raise ValueError(
            f"{value!r} carries an IPv6 scope id, which the serving units cannot pass to the "
            "engines' --host; bind a global or loopback address (::1, 127.0.0.1)"
        )
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (e.g. 127.0.0.1)") from None
    return value


def _listen_address(value: str) -> str:
    address, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not MIN_SERVICE_PORT <= int(port) <= MAX_PORT:
        raise ValueError(
            f"{value!r} is not IP:PORT with a port in {MIN_SERVICE_PORT}-{MAX_PORT} "
            "(e.g. 127.0.0.1:9835, [::1]:9835)"
        )
    _bind_address(address[1:-1] if address.startswith("[") and address.endswith("]") else address)
    return value


def _login_name(value: str) -> str:
    if not _LOGIN_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a POSIX user name (letters, digits, '.', '_', '-'; not starting "
            "with '-'; at most 32 characters)"
        )
    return value


def _service_user(value: str) -> str:
    if not _SERVICE_USER.match(value):
        raise ValueError(
            f"{value!r} is not a system user name (lower-case letters, digits, '_', '-', "
            "starting with a letter or '_'; at most 32 characters), e.g. 'rigforge'"
        )
    if value == "root":
        raise ValueError(
            "'root' would run the serving and tuning units with every privilege (and the base "
            "deploy would lock root's shell); use an unprivileged user such as 'rigforge'"
        )
    return value


def _debian_package(value: str) -> str:
    if not _DEBIAN_PACKAGE.match(value):
        hint = " (an apt option is not a package)" if value.startswith("-") else ""
        raise ValueError(
            f"{value!r} is not a Debian package name{hint}: lower-case letters, digits, '+', "
            "'-', '.', optionally ':arch' and '=version' (Debian Policy 5.6.1)"
        )
    return value


#: Text copied into a unit (model names, weights): no control characters, quotes or backslashes.
UnitText = Annotated[str, AfterValidator(_unit_text)]
#: A GPU UUID or PCI bus id.
GpuId = Annotated[str, AfterValidator(_gpu_id)]
#: A GPU UUID, PCI bus id or a simulated/MIG device id (``GPU-…``, ``MIG-…``).
GpuRef = Annotated[str, AfterValidator(_gpu_ref)]
#: One engine command-line argument: unit-safe text that is not a secret.
EngineArg = Annotated[str, AfterValidator(_engine_arg)]
#: One argument of a command the deploy runs through a shell, each argument ``shlex.quote``d
#: (``tuner.sweep_args``): no control characters, no secrets; quotes and backslashes are fine
#: (``--tps-regex 'gen: (?P<tps>[\d.]+)'``).
CommandArg = Annotated[str, AfterValidator(_command_arg)]
#: An absolute, normalised path on the target, in a charset units and shells take verbatim.
TargetPath = Annotated[str, AfterValidator(_target_path)]
#: An IP address or an RFC 1123 host name.
SshHost = Annotated[str, Field(min_length=1), AfterValidator(_ssh_host)]
#: An IP address without an IPv6 scope id.
BindAddress = Annotated[str, AfterValidator(_bind_address)]
#: ``IP:PORT`` (``[v6]:PORT``) a service listens on: a bind address and a service port.
ListenAddress = Annotated[str, AfterValidator(_listen_address)]
#: A POSIX login name (the SSH user).
LoginName = Annotated[str, AfterValidator(_login_name)]
#: An unprivileged system user name (never root).
ServiceUser = Annotated[str, AfterValidator(_service_user)]
#: A Debian package name (``apt-get install`` argument, never an option).
DebianPackage = Annotated[str, AfterValidator(_debian_package)]
#: A port a serving unit listens on.
ServicePort = Annotated[int, Field(ge=MIN_SERVICE_PORT, le=MAX_PORT)]
