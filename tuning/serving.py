"""Render a placement plan into systemd serving units (one per placed model replica).

``render_serving_units(plan)`` returns ``{absolute target path: unit text}``; the ``serving``
deploy puts the files and restarts a service only when its file changed. Templates live in
``templates/etc/systemd/system/rigforge-serve-<engine>.service.j2`` (the path they land on,
minus the model name) and share ``rigforge-serve-common.service.j2``.

Every unit: ``CUDA_VISIBLE_DEVICES`` by UUID with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; NUMA
binding (``NUMAPolicy=bind``, ``NUMAMask=``, ``CPUAffinity=``); ``NCCL_P2P_DISABLE=1`` and
``--disable-custom-all-reduce`` where the GPU set has no P2P path; bound to 127.0.0.1 unless
opened, and an opened unit reads its API key from a root-owned 0600 ``EnvironmentFile=`` that
the deploy writes from the raw key in ``serving.api_key_file`` (engines read it from their own
variable: ``VLLM_API_KEY``, ``LLAMA_API_KEY``) so the key is never on the command line or in
the unit; a dedicated unprivileged user; systemd hardening.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from tuning.core.checks import (
    api_key_problem,
    placement_problems,
    unit_name_collisions,
    unit_slug,
)
from tuning.core.plan import Placement, Plan, load_plan, parse_placements
from tuning.errors import ConfigError
from tuning.render.environment import TEMPLATES, environment
from tuning.render.unit_text import UnsafeUnitValue, unit_setting, unit_word

#: Where the serving templates live, relative to the renderer's ``templates/``.
TEMPLATE_FOLDER = "etc/systemd/system"
TEMPLATES_DIR = TEMPLATES / TEMPLATE_FOLDER
UNIT_DIR = "/etc/systemd/system"
#: The ``EnvironmentFile=`` of opened units: written by the ``serving`` deploy (root:root 0600,
#: read by systemd before it drops to the service user) from the raw key in
#: ``serving.api_key_file`` — see :func:`api_key_env_text`.
API_KEY_ENV_FILE = "/etc/rigforge/secrets/api-key.env"
#: Where the ``serving`` deploy puts ``secrets.hf_token_file`` (0600). Units load it with
#: ``LoadCredential=`` and point ``HF_TOKEN_PATH`` (read by huggingface_hub) at the copy in
#: ``$CREDENTIALS_DIRECTORY`` (``%d``), so the token is never in the environment or argv.
HF_TOKEN_FILE = "/etc/rigforge/secrets/hf-token"
#: Kept for callers of the old name; the unit reads the environment file above.
DEFAULT_API_KEY_FILE = API_KEY_ENV_FILE
#: Executables per engine (override with ``engine_bins=``).
ENGINE_BINS: Mapping[str, str] = {
    "vllm": "/opt/rigforge/vllm/bin/vllm",
    "sglang": "/opt/rigforge/sglang/bin/python3",
    "llama.cpp": "/usr/local/bin/llama-server",
}
TEMPLATE_OF_ENGINE: Mapping[str, str] = {
    "vllm": "rigforge-serve-vllm.service.j2",
    "sglang": "rigforge-serve-sglang.service.j2",
    "llama.cpp": "rigforge-serve-llama-cpp.service.j2",
}
#: Engines that read the API key from the environment (variable name) — the others refuse
#: to be opened, because their key would have to sit on the command line.
API_KEY_ENV: Mapping[str, str] = {"vllm": "VLLM_API_KEY", "llama.cpp": "LLAMA_API_KEY"}
_LLAMA_KV_TYPES = {4: "q4_0", 8: "q8_0", 32: "f32"}
_SERVICE_USER = re.compile(r"^[a-z_][a-z0-9_-]*$")
_CREDENTIAL_PATH = re.compile(r"/[A-Za-z0-9_./-]+")


#: ``ExecStart=`` argument quoting is the renderer's one unit-text writer (kept by this name).
systemd_quote = unit_word


def read_api_key(path: str | Path) -> str:
    """The raw API key in ``path`` (one line; see :func:`~tuning.core.checks.api_key_problem`).

    Raises :class:`ConfigError` naming the file when it is unreadable, empty, has several
    lines or characters an ``EnvironmentFile=`` cannot carry unquoted.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"serving.api_key_file {path}: cannot read it ({error})") from error
    problem = api_key_problem(text)
    if problem:
        raise ConfigError(f"serving.api_key_file {path} {problem}")
    return text.strip()


def api_key_env_text(key: str) -> str:
    """The ``EnvironmentFile=`` content for ``key``: one ``NAME=key`` line per engine variable.

    systemd ignores a line without ``=``, so writing the raw key there would leave the
    endpoint open without authentication; this is why the deploy writes the file itself.
    """
    problem = api_key_problem(key)
    if problem:
        raise ConfigError(f"API key {problem}")
    names = sorted(set(API_KEY_ENV.values()))
    return "".join(f"{name}={key.strip()}\n" for name in names)


def cpu_ranges(cpus: Sequence[int]) -> str:
    """``(0,1,2,3,8,9)`` → ``"0-3 8-9"`` (systemd's ``CPUAffinity=`` syntax)."""
    values = sorted(set(cpus))
    parts: list[str] = []
    start = prev = None
    for cpu in values:
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:  # type: ignore[operator]
            prev = cpu
        else:
            parts.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = cpu
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else str(start))
    return " ".join(parts)


def unit_name(placement: Placement) -> str:
    """``rigforge-serve-<model>[-<replica>].service`` (other characters become ``-``)."""
    return f"rigforge-serve-{unit_slug(placement.model, placement.replica)}.service"


#: Free unit text (``Description=``, comments): the writer's :func:`unit_setting`.
unit_line_text = unit_setting


def _is_loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError as error:
        raise UnsafeUnitValue(f"serving bind address {bind!r} is not an IP address") from error


def render_unit(
    placement: Placement,
    *,
    service_user: str = "rigforge",
    bind: str = "127.0.0.1",
    api_key_file: str | None = None,
    engine_bins: Mapping[str, str] | None = None,
    egress: bool = True,
    requires_gpu_settings: bool = False,
    hf_token_file: str | None = None,
    env: jinja2.Environment | None = None,
    compute: str = "gpu",
) -> str:
    """The unit text for one placement (see :func:`render_serving_units` for the options)."""
    if placement.engine not in TEMPLATE_OF_ENGINE:
        raise ConfigError(
            f"model {placement.model!r}: no serving template for engine {placement.engine!r}; "
            f"use one of {', '.join(TEMPLATE_OF_ENGINE)}"
        )
    problems = placement_problems(placement)
    if problems:
        raise UnsafeUnitValue(
            f"model {placement.model!r} cannot be rendered into a unit: "
            + "; ".join(f"{where}: {why}" for where, why in problems)
        )
    if hf_token_file is not None and not _CREDENTIAL_PATH.fullmatch(hf_token_file):
        raise UnsafeUnitValue(f"hf_token_file {hf_token_file!r} is not an absolute plain path")
    if not _SERVICE_USER.fullmatch(service_user):
        raise UnsafeUnitValue(f"service user {service_user!r} is not a valid user name")
    if compute not in ("gpu", "cpu"):
        raise ConfigError(f"serving.compute is {compute!r}; use gpu or cpu")
    if compute == "cpu" and placement.engine != "llama.cpp":
        raise ConfigError(
            f"model {placement.model!r}: serving.compute is cpu but {placement.engine} serves "
            "on GPUs only; place it with engine llama.cpp or set compute: gpu"
        )
    opened = not _is_loopback(bind)
    if opened:
        if not api_key_file:
            raise ConfigError(
                f"serving binds {bind}, beyond this machine: set serving.api_key_file so every "
                "request needs the key, or bind 127.0.0.1"
            )
        if placement.engine not in API_KEY_ENV:
            raise ConfigError(
                f"model {placement.model!r}: {placement.engine} reads its API key only from the "
                "command line, where every local user can see it; serve it on 127.0.0.1 behind a "
                "proxy that checks the key"
            )
    bins = {**ENGINE_BINS, **(engine_bins or {})}
    jinja = env or environment()
    k = len(placement.gpus)
    template = f"{TEMPLATE_FOLDER}/{TEMPLATE_OF_ENGINE[placement.engine]}"
    return jinja.get_template(template).render(
        p=placement,
        user=service_user,
        group=service_user,
        bind=bind,
        api_key_file=api_key_file if opened else None,
        bin=bins[placement.engine],
        cpu_affinity=cpu_ranges(placement.cpu_list),
        state_dir="/var/lib/rigforge",
        cache_dir="/var/cache/rigforge",
        egress=egress,
        requires_gpu_settings=requires_gpu_settings,
        hf_token_file=hf_token_file,
        devices=",".join(f"CUDA{i}" for i in range(k)),
        cpu=compute == "cpu",
        tensor_split=",".join("1" for _ in range(k)),
        kv_type=_LLAMA_KV_TYPES.get(placement.kv_cache_bits, "f16"),
    )


def render_serving_units(
    plan: Plan | str | Path | Mapping[str, Any] | Any,
    *,
    service_user: str | None = None,
    bind: str | None = None,
    api_key_file: str | None = None,
    engine_bins: Mapping[str, str] | None = None,
    egress: bool = True,
    host_config: Any = None,
    requires_gpu_settings: bool | None = None,
    hf_token_file: str | None = None,
    compute: str | None = None,
) -> dict[str, str]:
    """``{"/etc/systemd/system/rigforge-serve-<model>.service": text}`` for every placement.

    ``plan``: a :class:`Plan`, a plan YAML path, or the inventory's serving section (an object
    with ``plan`` — a path — or hand-written ``models``, plus ``bind``/``open``/
    ``api_key_file``). ``service_user`` defaults to the inventory's ``base.service_user`` or
    ``rigforge``. A non-loopback ``bind`` needs ``api_key_file``: the target path of the
    ``EnvironmentFile=`` the deploy writes (:data:`API_KEY_ENV_FILE`, root-owned 0600, with
    ``VLLM_API_KEY=`` / ``LLAMA_API_KEY=`` lines from :func:`api_key_env_text`); from an
    inventory serving section it is set whenever ``serving.api_key_file`` is. ``egress=False``
    confines the service to loopback (weights must already be in the cache).

    ``requires_gpu_settings`` (default: whether ``host_config`` has caps, see
    :func:`host_has_caps`) adds ``Requires=rigforge-gpu-settings.service``: with the
    ``After=`` every unit has, a serving unit does not start when the caps failed to apply
    (a GPU over its cap can trip the PSU or circuit budget the caps were sized for).

    ``hf_token_file`` (default: :data:`HF_TOKEN_FILE` when ``host_config`` sets
    ``secrets.hf_token_file``) adds ``LoadCredential=hf-token:<file>`` and
    ``HF_TOKEN_PATH=%d/hf-token``.

    ``compute`` (default: the serving section's ``compute``, else ``gpu``): ``cpu`` renders
    llama.cpp units with ``-dev none -ngl 0`` (a CPU build of llama-server); other engines
    refuse it.
    """
    placements, config_bind, config_key = _placements_of(plan)
    if compute is None:
        compute = str(getattr(plan, "compute", None) or "gpu")
    if service_user is None:
        base = getattr(host_config, "base", None)
        service_user = getattr(base, "service_user", None) or "rigforge"
    bind = bind or config_bind or "127.0.0.1"
    api_key_file = api_key_file or config_key
    if requires_gpu_settings is None:
        requires_gpu_settings = host_config is not None and host_has_caps(host_config)
    if hf_token_file is None and getattr(
        getattr(host_config, "secrets", None), "hf_token_file", None
    ):
        hf_token_file = HF_TOKEN_FILE
    clashes = unit_name_collisions([(p.model, p.replica) for p in placements])
    if clashes:
        first, later, slug = clashes[0]
        raise ConfigError(
            f"models {placements[first].model!r} and {placements[later].model!r} (replicas "
            f"{placements[first].replica}, {placements[later].replica}) would share the unit "
            f"rigforge-serve-{slug}.service; rename one"
        )
    env = environment()
    units: dict[str, str] = {}
    for placement in placements:
        path = f"{UNIT_DIR}/{unit_name(placement)}"
        units[path] = render_unit(
            placement,
            service_user=service_user,
            bind=bind,
            api_key_file=api_key_file,
            engine_bins=engine_bins,
            egress=egress,
            requires_gpu_settings=requires_gpu_settings,
            hf_token_file=hf_token_file,
            env=env,
            compute=compute,
        )
    return units


def host_has_caps(host_config: Any) -> bool:
    """Whether the GPU-settings deploy installs ``rigforge-gpu-settings.service`` for this host.

    True when a listed GPU has a hand ``power_cap_w`` or the host names a ``power.profile``:
    a valid profile holds a cap for every GPU it lists (:mod:`tuning.core.profile`), and an
    invalid one is refused by the deploy — starting uncapped is the failure this guards against.
    """
    gpus = getattr(host_config, "gpu_list", None) or ()
    if any(getattr(g, "power_cap_w", None) is not None for g in gpus):
        return True
    return bool(getattr(getattr(host_config, "power", None), "profile", None))


def _placements_of(source: Any) -> tuple[tuple[Placement, ...], str | None, str | None]:
    """Placements plus the bind address and key file a serving config carries, if any."""
    if isinstance(source, Plan):
        return source.placements, None, None
    if isinstance(source, str | Path):
        return load_plan(source).placements, None, None
    if isinstance(source, Mapping):
        try:
            placed = parse_placements(source.get("placements"))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"malformed plan entry ({error})") from error
        return placed, None, None
    bind = getattr(source, "bind", None)
    opened = getattr(source, "open", False)
    key = API_KEY_ENV_FILE if getattr(source, "api_key_file", None) else None
    if bind and not opened and not _is_loopback(bind):
        raise ConfigError(f"serving.bind is {bind} but serving.open is false; bind 127.0.0.1")
    plan_path = getattr(source, "plan", None)
    if plan_path:
        return load_plan(plan_path).placements, bind, key
    hand = getattr(source, "models", None) or ()
    return tuple(_from_hand(m) for m in hand), bind, key


def _from_hand(model: Any) -> Placement:
    """A hand-written inventory entry (model, engine, gpus, tp, pp, numa_node, port, args).

    Nothing is known about its links, so P2P is assumed absent (safe, maybe slower).
    """
    return Placement(
        model=str(model.model),
        replica=0,
        engine=str(model.engine),
        weights=str(model.model),
        gpus=tuple(model.gpus),
        gpu_indices=(),
        tp=int(model.tp),
        pp=int(model.pp),
        numa_node=model.numa_node,
        cpu_list=(),
        vram_mib=0,
        vram_free_mib=(),
        port=int(model.port),
        p2p=len(model.gpus) == 1,
        worst_link="?",
        throughput=0.0,
        gpu_memory_utilization=0.9,
        context=0,
        max_sequences=1,
        kv_cache_bits=16,
        shared=False,
        extra_args=tuple(model.args),
    )
