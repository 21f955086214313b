"""What may reach a serving unit's text: the checks shared by the inventory schema, the models
file, plan loading and the unit renderer.

A systemd unit file is line-oriented: a newline inside a value starts a new directive (an
injected ``ExecStartPre=+/bin/sh -c …`` runs as root), and a ``"`` or ``\\`` inside a quoted
``Environment=`` value ends or bends the quoting. So every string that is copied from user
files into a unit — model names, weights, engine arguments, GPU ids — is checked here, at
every door (validation, plan loading, rendering), and refused with a sentence naming the fix.

Secrets are refused as engine arguments: anything on ``ExecStart=`` is readable by every local
user (``ps``, ``/proc/<pid>/cmdline``) and by anyone who can read the unit file. Keys belong in
``serving.api_key_file`` / ``secrets.hf_token_file``.

Each ``*_problem`` function returns ``None`` when the value is fine, else one sentence; the
callers attach their own YAML path. This module imports only the standard library.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from tuning.core.limits import MAX_CPU_ID

__all__ = [
    "API_KEY_MIN_CHARS",
    "BUS_ID_RE",
    "DEVICE_REF_RE",
    "GPU_ID_HINT",
    "SECRET_VALUE_RE",
    "UUID_RE",
    "api_key_problem",
    "gpu_id_problem",
    "is_placeholder_secret",
    "placement_problems",
    "secret_arg_problem",
    "secret_args",
    "text_problem",
    "unit_name_collisions",
    "unit_slug",
]

#: A GPU UUID as ``nvidia-smi -L`` prints it.
UUID_RE = r"^GPU-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
#: A PCI bus id, with or without the domain (``00000000:41:00.0``, ``41:00.0``).
#: Bus 00–ff, device 00–1f (5 bits), function 0–7 (3 bits): PCI Local Bus Spec 3.0 §3.2.2.3.2.
BUS_ID_RE = r"^([0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[01][0-9a-fA-F]\.[0-7]$"
#: What a plan may name a device by: a UUID-shaped id (``GPU-…``, ``MIG-…``; letters, digits
#: and ``-`` only) or a PCI bus id. Looser than :data:`UUID_RE` (MIG devices, simulated rigs),
#: still nothing that could end a quoted ``Environment=`` value or add a device (no ``"``,
#: ``\``, ``,``, whitespace or control characters).
DEVICE_REF_RE = r"^(GPU|MIG)-[0-9A-Za-z-]{1,64}$"
GPU_ID_HINT = (
    "a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx; nvidia-smi -L prints them) or a "
    "PCI bus id (00000000:41:00.0)"
)
#: Values shaped like well-known tokens (Hugging Face, OpenAI-style, GitHub).
SECRET_VALUE_RE = re.compile(
    r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,})$"
)
#: Words in an option or variable name that say its value is a secret. Matched against whole
#: ``-``/``_`` separated words so ``--tokenizer`` or ``--max-num-batched-tokens`` pass.
_SECRET_WORDS = frozenset(
    {"key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials"}
)
_UUID = re.compile(UUID_RE)
_BUS_ID = re.compile(BUS_ID_RE)
_DEVICE_REF = re.compile(DEVICE_REF_RE)


def text_problem(value: object, *, quotes: bool = True) -> str | None:
    """Why ``value`` cannot be copied into a unit file, or ``None``.

    Refused: control characters (newline, carriage return, tab, NUL, DEL, C1 — Unicode
    category ``Cc``), line/paragraph separators, and with ``quotes`` also ``"`` and ``\\``.
    """
    text = str(value)
    for char in text:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return (
                f"contains the control character {char!r}; a unit file is line-based, so it "
                "could inject directives: remove it"
            )
        if quotes and char in '"\\':
            return f"contains {char!r}, which would break the unit's quoting: remove it"
    return None


def gpu_id_problem(value: object, *, strict: bool = True) -> str | None:
    """Why ``value`` is not a GPU UUID or PCI bus id, or ``None``.

    ``strict=False`` (plans, the renderer) also accepts :data:`DEVICE_REF_RE` ids.
    """
    text = str(value)
    if isinstance(value, str) and (
        _UUID.fullmatch(text)
        or _BUS_ID.fullmatch(text)
        or (not strict and _DEVICE_REF.fullmatch(text))
    ):
        return None
    return f"{text!r} is not {GPU_ID_HINT}"


def _secret_name(name: str) -> bool:
    return bool({w for w in re.split(r"[-_.\s]+", name.lower()) if w} & _SECRET_WORDS)


def secret_arg_problem(arg: object) -> str | None:
    """Why one engine argument looks like a secret (or the flag that takes one), or ``None``.

    Refused: an option whose name has a secret word (``--api-key``, ``--hf-token``,
    ``--token``, ``--api-key=…``, ``--api-key-file``), ``NAME=value`` where ``NAME`` has one
    (``HF_TOKEN=…``, ``api_key=…``), and token-shaped values (``hf_…``, ``sk-…``, ``ghp_…``).
    """
    text = str(arg).strip()
    hint = (
        "secrets on the command line are readable by every local user (ps, /proc); put the "
        "API key in serving.api_key_file and the Hugging Face token in secrets.hf_token_file"
    )
    if SECRET_VALUE_RE.match(text):
        return f"looks like an access token; {hint}"
    name = text.split("=", 1)[0]
    if text.startswith("-"):
        if _secret_name(name.lstrip("-")):
            return f"{name} passes a secret as an engine argument; {hint}"
    elif "=" in text and _secret_name(name):
        return f"{name}=… looks like a secret; {hint}"
    return None


def secret_args(args: Iterable[object]) -> list[tuple[int, str]]:
    """``(index, sentence)`` for every argument :func:`secret_arg_problem` refuses."""
    out = []
    for i, arg in enumerate(args):
        problem = secret_arg_problem(arg)
        if problem is not None:
            out.append((i, problem))
    return out


def unit_slug(model: str, replica: int = 0) -> str:
    """The part of the unit name a model and replica give: ``a/b`` → ``a-b``, replica 2 → ``-2``.

    Different names can give the same slug (``a/b`` and ``a-b``; ``m`` replica 1 and ``m-1``);
    :func:`unit_name_collisions` finds them.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", model)
    return f"{safe}-{replica}" if replica else safe


def unit_name_collisions(entries: Sequence[tuple[str, int]]) -> list[tuple[int, int, str]]:
    """``(first index, later index, slug)`` for entries (model, replica) sharing a unit name."""
    seen: dict[str, int] = {}
    out = []
    for i, (model, replica) in enumerate(entries):
        slug = unit_slug(model, replica)
        if slug in seen:
            out.append((seen[slug], i, slug))
        else:
            seen[slug] = i
    return out


_INT_FIELDS = (
    "replica",
    "tp",
    "pp",
    "port",
    "context",
    "max_sequences",
    "kv_cache_bits",
    "vram_mib",
)
_INT_TUPLES = ("gpu_indices", "cpu_list", "vram_free_mib")
#: Most compute threads a unit may ask an engine for: one per logical CPU Linux can have.
MAX_ENGINE_THREADS = MAX_CPU_ID + 1


def placement_problems(placement: Any) -> list[tuple[str, str]]:
    """``(field, sentence)`` for everything in a placement that must not reach a unit file.

    ``placement`` is a :class:`tuning.placement.Placement` (read by attribute). Checked:
    ``model``, ``weights`` and ``extra_args`` (no control characters, ``"`` or ``\\``; no
    secrets in ``extra_args``), ``engine`` and ``worst_link`` (no control characters),
    ``gpus`` (UUID-shaped id or PCI bus id), and that the numbers are integers (a string
    there would be copied into ``NUMAMask=``, ``CPUAffinity=`` or a comment verbatim).
    """
    out: list[tuple[str, str]] = []
    for name in ("model", "weights"):
        problem = text_problem(getattr(placement, name))
        if problem:
            out.append((name, problem))
    for name in ("engine", "worst_link"):
        problem = text_problem(getattr(placement, name), quotes=False)
        if problem:
            out.append((name, problem))
    gpus = placement.gpus
    if not gpus:
        out.append(("gpus", "lists no GPU"))
    for i, gpu in enumerate(gpus):
        problem = gpu_id_problem(gpu, strict=False)
        if problem:
            out.append((f"gpus[{i}]", problem))
    args = placement.extra_args
    for i, arg in enumerate(args):
        problem = text_problem(arg) if isinstance(arg, str) else f"{arg!r} is not a string"
        if problem:
            out.append((f"extra_args[{i}]", problem))
    out += [(f"extra_args[{i}]", problem) for i, problem in secret_args(args)]
    for name in _INT_FIELDS:
        if not _is_int(getattr(placement, name)):
            out.append((name, f"{getattr(placement, name)!r} is not an integer"))
    numa = placement.numa_node
    if numa is not None and not _is_int(numa):
        out.append(("numa_node", f"{numa!r} is not an integer"))
    threads = getattr(placement, "threads", None)
    if threads is not None and not (_is_int(threads) and 1 <= threads <= MAX_ENGINE_THREADS):
        out.append(("threads", f"{threads!r} is not a thread count 1-{MAX_ENGINE_THREADS}"))
    for name in _INT_TUPLES:
        values = getattr(placement, name)
        if not all(_is_int(v) for v in values):
            out.append((name, f"{list(values)!r} is not a list of integers"))
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Shortest API key accepted. Units: characters (``openssl rand -hex 32`` gives 64).
API_KEY_MIN_CHARS = 16
_API_KEY = re.compile(r"[!#%&(-\[\]-_a-~]+")


def api_key_problem(text: str) -> str | None:
    """Why the content of an ``api_key_file`` is not one usable raw key, or ``None``.

    The file holds the RAW key on one line (a trailing newline is fine): printable ASCII, no
    whitespace, quotes, ``\\``, ``$`` or backtick (it is written into a systemd
    ``EnvironmentFile=`` unquoted), at least :data:`API_KEY_MIN_CHARS` characters. A
    ``NAME=value`` line is refused too: systemd would read it, but the engines need their own
    variable names, which the deploy writes itself.
    """
    hint = "put only the raw key on one line (e.g. openssl rand -hex 32 > FILE; chmod 600 FILE)"
    lines = text.splitlines()
    if not text.strip():
        return f"is empty; an opened endpoint would run without authentication: {hint}"
    if len(lines) != 1:
        return f"has {len(lines)} lines; {hint}"
    key = lines[0]
    if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", key):
        return f"holds a NAME=value line; the deploy writes the variables itself: {hint}"
    if not _API_KEY.fullmatch(key):
        return f"holds whitespace, quotes, '\\', '$' or non-ASCII characters; {hint}"
    if len(key) < API_KEY_MIN_CHARS:
        return f"holds a key shorter than {API_KEY_MIN_CHARS} characters; {hint}"
    return None


def is_placeholder_secret(text: str) -> bool:
    """Whether a secret file holds a documented placeholder, not a secret.

    Placeholders are one line that starts with ``REPLACE-ME`` or contains the word
    ``placeholder`` (the committed example files do) and holds nothing token-shaped; a file
    with more than that line is a secret. git does not keep mode 0600, so the validator lets
    placeholders through at any mode; an opened endpoint still refuses a placeholder API key.
    """
    whole = text.strip()
    if "\n" in whole or "\r" in whole:
        return False  # the WHOLE content must be the placeholder: no second line with a key
    if any(SECRET_VALUE_RE.match(word) for word in re.split(r"[\s:=,;]+", whole)):
        return False  # "placeholder hf_…" still carries a token
    return whole.upper().startswith("REPLACE-ME") or "placeholder" in whole.lower()
