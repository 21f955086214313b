"""``rigforge exporter``: serve this box's power, heat, links, caps, Xid events and serving health
to Prometheus (``--listen 127.0.0.1:9835``), or write one scrape (``--once``, ``--textfile``).

Read-only: it never changes a GPU. ``--profile`` adds the expected cap per GPU (cap drift) and
the GPUs that must be there; ``--plan`` the model labels and the serving units to probe;
``--budget`` or ``--inventory --host`` the PSUs and circuits (a simulated rig has its own). The
metric list is ``docs/monitoring.md``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import click

from tuning.apply.actuator import Actuator
from tuning.apply.state import state_dir
from tuning.backends import open_rig
from tuning.backends.base import Rig
from tuning.backends.sim import SimRig
from tuning.budget import RigBudget
from tuning.commands.budget_opts import budget_options, resolve_budget
from tuning.commands.options import host_option, rig_option
from tuning.core.power import BudgetModel
from tuning.core.profile import Profile, load_profile
from tuning.errors import ConfigError
from tuning.exporter.collector import ExpectedGpu, RigCollector, ServingTarget, exposition
from tuning.exporter.sim_driver import SimDriver
from tuning.exporter.xid import open_kernel_log
from tuning.placement import Plan, load_plan

#: The exporter's default listen address: utkuozdemir/nvidia_gpu_exporter's default port
#: (``--web.listen-address=:9835``, its docs/CONFIGURE.md), the exporter rigforge's replaces
#: on such a box, bound to localhost.
DEFAULT_LISTEN = "127.0.0.1:9835"
#: Where the cap-enforcement timer writes what it re-applied (read here, never written).
ENFORCEMENT_STATE_NAME = "enforce.json"

log = logging.getLogger("rigforge.exporter")


def parse_listen(text: str) -> tuple[str, int]:
    """``IP:PORT`` (IPv6 as ``[::1]:PORT``) → (address, port), by the inventory's one rule
    (:data:`inventory.fields.ListenAddress`); :class:`click.BadParameter` otherwise."""
    from pydantic import TypeAdapter, ValidationError

    from inventory.fields import ListenAddress

    try:
        TypeAdapter(ListenAddress).validate_python(text)
    except ValidationError as error:
        reason = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise click.BadParameter(reason, param_hint="--listen") from None
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def expected_gpus(
    profile: Profile | None, inventory_gpus: Sequence[ExpectedGpu]
) -> list[ExpectedGpu]:
    """The GPUs that must be on the bus: the profile's (by UUID) and the inventory's."""
    found: list[ExpectedGpu] = []
    seen: set[str] = set()
    candidates = [
        *(ExpectedGpu(g.uuid, g.pci_bus_id, g.name) for g in (profile.gpus if profile else ())),
        *inventory_gpus,
    ]
    for gpu in candidates:
        key = gpu.uuid or gpu.pci_bus_id or ""
        if key and key not in seen:
            seen.add(key)
            found.append(gpu)
    return found


def serving_targets(plan: Plan | None) -> list[ServingTarget]:
    """One target per placed replica, named like its unit (``rigforge-serve-….service``)."""
    if plan is None:
        return []
    from tuning.serving import unit_name

    return [
        ServingTarget(model=p.model, unit=unit_name(p), engine=p.engine, port=p.port)
        for p in plan.placements
    ]


def models_by_gpu(plan: Plan | None) -> dict[str, str]:
    """``{uuid: "model-a,model-b"}`` from the plan's placements."""
    names: dict[str, list[str]] = {}
    for placement in plan.placements if plan else ():
        for uuid in placement.gpus:
            names.setdefault(uuid, []).append(placement.model)
    return {uuid: ",".join(sorted(set(models))) for uuid, models in names.items()}


def _inventory_gpus(inventory_path: Path | None, host_name: str | None) -> list[ExpectedGpu]:
    if inventory_path is None or host_name is None:
        return []
    from inventory.validate import load_inventory

    hosts = load_inventory(inventory_path, check_ssh_files=False).hosts
    host = hosts.get(host_name)
    if host is None:
        raise ConfigError(f"{inventory_path}: no host {host_name!r} (hosts: {', '.join(hosts)})")
    return [ExpectedGpu(g.uuid, g.pci_bus_id, g.name) for g in host.gpu_list]


@click.command("exporter")
@rig_option("nvml (this machine), sim:NAME or a rig YAML file.")
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    help="IP:PORT to serve /metrics on (localhost unless the inventory opens it).",
)
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(path_type=Path),
    default=None,
    help="tuning profile: the expected cap per GPU and the GPUs that must be present.",
)
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(path_type=Path),
    default=None,
    help="placement plan: model labels per GPU and the serving units to probe.",
)
@host_option("the --inventory host to report on.")
@budget_options
@click.option(
    "--kernel-log",
    default=None,
    metavar="auto|kmsg|journal|none|PATH",
    help="where Xid events come from (default: auto on nvml, none on a simulated rig).",
)
@click.option(
    "--enforcement-state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"the cap-enforcement timer's record (default: STATE_DIR/{ENFORCEMENT_STATE_NAME}).",
)
@click.option(
    "--sim-workload",
    default=None,
    help="simulated rig only: run this workload (decode|prefill|batched) on every GPU.",
)
@click.option("--sim-ambient-c", type=float, default=None, help="simulated rig: room air, °C.")
@click.option(
    "--sim-speed",
    type=click.FloatRange(0.0, 3600.0),
    default=1.0,
    show_default=True,
    help="simulated rig: virtual seconds per wall second.",
)
@click.option(
    "--sim-control",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='simulated rig: JSON file {"workload": …, "ambient_c": …} re-read each scrape.',
)
@click.option("--once", is_flag=True, help="print one scrape to stdout and exit.")
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write one scrape to this .prom file (node-exporter textfile collector) and exit.",
)
def command(
    rig_spec: str,
    listen: str,
    profile_path: Path | None,
    plan_path: Path | None,
    host_name: str | None,
    budget_path: Path | None,
    inventory_path: Path | None,
    no_budget: bool,
    kernel_log: str | None,
    enforcement_state: Path | None,
    sim_workload: str | None,
    sim_ambient_c: float | None,
    sim_speed: float,
    sim_control: Path | None,
    once: bool,
    textfile: Path | None,
) -> None:
    """Serve the rig's metrics to Prometheus (read-only)."""
    address, port = parse_listen(listen)
    profile = load_profile(profile_path) if profile_path is not None else None
    plan = load_plan(plan_path) if plan_path is not None else None
    budget = resolve_budget(
        rig_spec,
        budget_path=budget_path,
        inventory_path=inventory_path,
        host_name=host_name,
        no_budget=no_budget,
        required=False,
        log=lambda message: click.echo(message, err=True),
    )
    inventory_gpus = _inventory_gpus(inventory_path, host_name)
    rig = open_rig(rig_spec, budget=budget if rig_spec == "nvml" else None)
    driver = None
    if isinstance(rig, SimRig):
        # The actuator only re-reads, before each scrape, the caps other runs left on the
        # simulated "hardware" (an unreadable state file is an error metric, not a crash);
        # the exporter never sets one.
        driver = SimDriver(rig, Actuator(rig, rig_spec), speed=sim_speed)
        driver.set_load(sim_workload, sim_ambient_c)
        driver.control = sim_control
    elif sim_workload or sim_ambient_c is not None or sim_control:
        raise click.UsageError("--sim-* options apply to a simulated rig only")
    model = (
        budget.model(rig.gpus)
        if budget is not None and rig_spec != "nvml"
        else BudgetModel.from_rig(rig)
    )
    log_spec = kernel_log or ("auto" if rig_spec == "nvml" else "none")
    bus_ids = [g.pci_bus_id for g in rig.gpus]
    try:
        kernel = open_kernel_log(log_spec, bus_ids)
    except OSError as error:
        raise ConfigError(
            f"--kernel-log {log_spec}: cannot read it ({error}); give journal, none or a file"
        ) from None
    collector = RigCollector(
        rig,
        spec=rig_spec,
        caps_w=profile.caps_w() if profile else None,
        profile_fingerprint=profile.rig.fingerprint if profile else "",
        models_of=models_by_gpu(plan),
        expected=expected_gpus(profile, inventory_gpus),
        budget=model,
        kernel_log=kernel,
        serving=serving_targets(plan),
        enforcement_state=enforcement_state or _default_record(),
        before_scrape=driver,
        reopen=_reopener(rig_spec, budget),
    )
    try:
        if once or textfile is not None:
            text = exposition(collector)
            if textfile is not None:
                _write_textfile(textfile, text)
            else:
                click.echo(text.decode(), nl=False)
            return
        _serve(collector, address, port)
    finally:
        if kernel is not None:
            kernel.source.close()
        collector.rig.close()  # the rig in use (re-opened after a driver reload)


def _default_record() -> Path | None:
    """``STATE_DIR/enforce.json``; ``None`` (with a line on stderr) where there is no state dir."""
    try:
        return state_dir() / ENFORCEMENT_STATE_NAME
    except OSError as error:
        click.echo(f"rigforge: exporter: no state dir ({error}); no enforcement record", err=True)
        return None


def _reopener(rig_spec: str, budget: RigBudget | None) -> Callable[[], Rig] | None:
    """Real GPUs are re-enumerated after a failed read; a simulated rig never fails so."""
    if rig_spec != "nvml":
        return None
    return lambda: open_rig(rig_spec, budget=budget)


def _write_textfile(path: Path, text: bytes) -> None:
    """Replace ``path`` atomically (node-exporter must never read half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(text)
    tmp.replace(path)


def _serve(collector: RigCollector, address: str, port: int) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    logging.basicConfig(level=logging.INFO, format="rigforge exporter: %(message)s")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _thread = start_http_server(port, addr=address, registry=registry)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("serving http://%s:%d/metrics for %s", address, port, collector.spec)
    stop.wait()
    server.shutdown()
