"""What the inventory says is there, checked on the host (testinfra; hosts parametrised)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from deploys.cuda import FORBIDDEN, toolkit_packages
from deploys.facts.irq import IrqAffinity
from deploys.facts.pcie import AspmPolicy, PciLinks
from deploys.gpu_settings import caps_w
from deploys.nvidia_driver import UNATTENDED_BLACKLIST, driver_packages
from deploys.serving import secret_files
from inventory.schema import HostConfig
from tests.verify.conftest import Expected
from tuning.placement import load_plan
from tuning.serving import API_KEY_ENV_FILE, render_serving_units, unit_name

BASE_PACKAGES = ("numactl", "pciutils", "lm-sensors")
UNIT_DIR = "/etc/systemd/system"
SECRETS_DIR = "/etc/rigforge/secrets"
#: Addresses only this machine reaches.
LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: Hardening every serving unit carries (templates/etc/systemd/system/rigforge-serve-common).
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=",
    "DevicePolicy=closed",
    "RestrictNamespaces=yes",
    "UMask=0077",
)


def _config_lines(host, path: str) -> list[str]:
    """The non-comment, non-blank lines of a file on the host."""
    __tracebackhide__ = True
    f = host.file(path)
    assert f.exists, f"{path} is missing"
    return [ln for ln in f.content_string.splitlines() if ln.strip() and not ln.startswith("#")]


def _unit_enabled(host, unit: str) -> bool:
    __tracebackhide__ = True
    # 0: enabled/static; 1: disabled or missing. Works without a running systemd.
    out = host.run(f"systemctl is-enabled {unit}")
    return out.stdout.strip() in ("enabled", "static")


def _unit_active(host, unit: str) -> bool:
    """Whether systemd runs ``unit`` now (``False`` where systemd itself is not running)."""
    __tracebackhide__ = True
    # rc 0: active; 3: inactive/failed; 1 or 4 (with "System has not been booted with
    # systemd" on stderr): no systemd to ask — the CI target.
    return host.run(f"systemctl is-active {unit}").stdout.strip() == "active"


def _environment(lines: list[str], name: str) -> str | None:
    """The value a unit's ``Environment="NAME=value"`` line gives ``name``, else ``None``."""
    for line in lines:
        match = re.fullmatch(rf'Environment="?{re.escape(name)}=([^"]*)"?', line)
        if match:
            return match.group(1)
    return None


def _fact(host, fact_cls: type, **kwargs: Any) -> Any:
    """Run one of the deploy's own facts over testinfra: same shell command, same parser."""
    __tracebackhide__ = True
    fact = fact_cls()
    out = host.run(fact.command(**kwargs))
    assert out.rc == 0, f"{fact_cls.__name__}: rc {out.rc}: {out.stderr}"
    return fact.process(out.stdout.splitlines())


@dataclass(frozen=True)
class Served:
    """One model the inventory serves: its unit name, port and GPUs (UUIDs)."""

    unit: str
    port: int
    gpus: tuple[str, ...]


def _served(config: HostConfig) -> list[Served]:
    """What the inventory serves: the plan's placements, else the hand-listed models."""
    if config.serving.plan:
        return [
            Served(unit_name(p), p.port, tuple(p.gpus))
            for p in load_plan(config.serving.plan).placements
        ]
    return [
        # Hand models are replica 0; unit_name reads only .model and .replica.
        Served(unit_name(SimpleNamespace(model=m.model, replica=0)), m.port, tuple(m.gpus))
        for m in config.serving.models
    ]


def _served_or_skip(config: HostConfig) -> list[Served]:
    __tracebackhide__ = True
    served = _served(config)
    if not served:
        pytest.skip("no serving in the inventory (serving.plan or serving.models)")
    return served


def test_base_packages_installed(host, expected: Expected) -> None:
    for name in BASE_PACKAGES:
        assert host.package(name).is_installed, f"{name} is not installed"


def test_service_user_is_a_system_account_without_login(host, expected: Expected) -> None:
    user = host.user(expected.config.base.service_user)
    assert user.exists
    assert user.shell in ("/usr/sbin/nologin", "/bin/false", "/sbin/nologin")
    assert user.uid < 1000, f"{user.name} has uid {user.uid}; a system account is below 1000"


def test_config_dir_is_0750_root_service_group(host, expected: Expected) -> None:
    d = host.file("/etc/rigforge")
    assert d.is_directory
    assert d.mode == 0o750
    assert (d.user, d.group) == ("root", expected.config.base.service_user)


def test_driver_userspace_on_the_pinned_branch(host, expected: Expected) -> None:
    branch = expected.config.driver.branch
    for name in driver_packages(expected.config).userspace:
        pkg = host.package(name)
        assert pkg.is_installed, f"{name} is not installed"
        assert pkg.version.startswith(f"{branch}."), f"{name} {pkg.version} is not branch {branch}"


def test_driver_branch_is_pinned(host, expected: Expected) -> None:
    cfg = expected.config
    if cfg.driver.source == "cuda-repo":
        assert host.package(f"nvidia-driver-pinning-{cfg.driver.branch}").is_installed
    else:
        pref = host.file("/etc/apt/preferences.d/rigforge-nvidia-driver.pref")
        assert pref.exists
        assert f"Pin: version {cfg.driver.branch}.*" in pref.content_string
        assert "Pin-Priority: 1001" in pref.content_string


def test_apt_sources_are_signed(host, expected: Expected) -> None:
    # Every deb822 stanza in the sources rigforge writes names the one key it trusts.
    cfg = expected.config
    patterns = []
    if cfg.driver.source == "cuda-repo" or cfg.cuda is not None:
        patterns.append("cuda-*.sources")
    if cfg.container_toolkit.enabled:
        patterns.append("nvidia-container-toolkit.sources")
    if not patterns:
        pytest.skip("this inventory adds no apt repository (driver and user space from the distro)")
    for pattern in patterns:
        listing = host.run(f"ls /etc/apt/sources.list.d/{pattern} 2>/dev/null").stdout.split()
        assert listing, f"no /etc/apt/sources.list.d/{pattern}"
        for path in listing:
            text = host.file(path).content_string
            for stanza in filter(None, (s.strip() for s in text.split("\n\n"))):
                if not re.search(r"^(Types|URIs):", stanza, re.M):
                    continue
                match = re.search(r"^Signed-By:\s*(\S+)", stanza, re.M)
                assert match, f"{path} has a stanza without Signed-By"
                keyring = host.file(match.group(1))
                assert keyring.exists, f"{path}: keyring {keyring.path} missing"


def test_cuda_toolkit_without_driver_meta_packages(host, expected: Expected) -> None:
    cuda = expected.config.cuda
    if cuda is None:
        pytest.skip("no CUDA toolkit in the inventory (cuda: null)")
    for name in toolkit_packages(cuda.version):
        assert host.package(name).is_installed, f"{name} is not installed"
    # The driver deploy may install cuda-drivers itself (cuda-repo, proprietary modules);
    # anything else from this list got here through the toolkit and dragged a driver along.
    drv = driver_packages(expected.config)
    chosen = set(drv.modules) if expected.config.driver.install_kernel_modules else set()
    for name in sorted((FORBIDDEN | {"cuda"}) - chosen):
        assert not host.package(name).is_installed, f"{name} pulls a driver; it must not be here"
    profile = host.file("/etc/profile.d/rigforge-cuda.sh").content_string
    assert f"/usr/local/cuda-{cuda.version}/bin" in profile


def test_container_toolkit_installed(host, expected: Expected) -> None:
    if not expected.config.container_toolkit.enabled:
        pytest.skip("container_toolkit.enabled is false")
    assert host.package("nvidia-container-toolkit").is_installed


def test_nvidia_packages_kept_out_of_unattended_upgrades(host, expected: Expected) -> None:
    conf = host.file("/etc/apt/apt.conf.d/51rigforge-nvidia-unattended")
    assert "Unattended-Upgrade::Package-Blacklist" in conf.content_string
    for pattern in UNATTENDED_BLACKLIST:
        assert f'"{pattern}";' in conf.content_string


def test_nouveau_blacklisted(host, expected: Expected) -> None:
    text = host.file("/etc/modprobe.d/blacklist-nouveau.conf").content_string
    assert re.search(r"^blacklist nouveau$", text, re.M)
    assert re.search(r"^options nouveau modeset=0$", text, re.M)


def test_persistenced_dropin_turns_persistence_on(host, expected: Expected) -> None:
    lines = _config_lines(
        host, "/etc/systemd/system/nvidia-persistenced.service.d/rigforge-persistence.conf"
    )
    assert "ExecStart=" in lines, "the packaged ExecStart must be reset first"
    assert any(ln.startswith("ExecStart=/") and "--persistence-mode" in ln for ln in lines)
    assert not any("--no-persistence-mode" in ln for ln in lines)
    assert _unit_enabled(host, "nvidia-persistenced.service")


def test_grub_fragment_sets_aspm_policy(host, expected: Expected) -> None:
    if expected.config.pcie.aspm != "performance":
        pytest.skip(f"pcie.aspm is {expected.config.pcie.aspm}")
    text = "\n".join(_config_lines(host, "/etc/default/grub.d/rigforge-pcie.cfg"))
    assert re.search(r"^GRUB_CMDLINE_LINUX_DEFAULT=.*pcie_aspm\.policy=performance", text, re.M)
    assert "pcie_aspm=off" not in text


def test_irqbalance_keeps_off_gpu_irqs(host, expected: Expected) -> None:
    if not expected.config.affinity.irqbalance_ban:
        pytest.skip("affinity.irqbalance_ban is false")
    env = host.file("/etc/default/irqbalance-rigforge").content_string
    match = re.search(r'--policyscript=(\S+?)"', env)
    assert match, "IRQBALANCE_ARGS has no --policyscript"
    script = host.file(match.group(1))
    assert script.exists, f"{script.path} is missing"
    assert script.mode & 0o111, f"{script.path} is not executable"
    dropin = host.file("/etc/systemd/system/irqbalance.service.d/rigforge.conf").content_string
    assert "EnvironmentFile=-/etc/default/irqbalance-rigforge" in dropin


def test_irq_pinning_unit_installed(host, expected: Expected) -> None:
    if not expected.config.affinity.pin_irqs:
        pytest.skip("affinity.pin_irqs is false")
    assert _unit_enabled(host, "rigforge-irq-affinity.service")


def _runtime_or_skip(config: HostConfig) -> str:
    __tracebackhide__ = True
    if not config.kernel.apply_runtime:
        pytest.skip("kernel.apply_runtime is false: the running kernel is not managed")
    return config.kernel.root


def test_runtime_aspm_policy_is_performance(host, expected: Expected) -> None:
    if expected.config.pcie.aspm != "performance":
        pytest.skip(f"pcie.aspm is {expected.config.pcie.aspm}")
    policy = _fact(host, AspmPolicy, root=_runtime_or_skip(expected.config))
    if policy is None:
        pytest.skip("this kernel has no pcie_aspm policy (no CONFIG_PCIEASPM)")
    assert policy["active"] == "performance", f"ASPM policy is {policy['active']}"


def test_runtime_aspm_off_on_every_gpu_link(host, expected: Expected) -> None:
    if expected.config.pcie.aspm != "performance":
        pytest.skip(f"pcie.aspm is {expected.config.pcie.aspm}")
    links = _fact(host, PciLinks, root=_runtime_or_skip(expected.config))
    with_files = {bus: link["aspm"] for bus, link in links.items() if link["aspm"]}
    if not with_files:
        pytest.skip("no NVIDIA GPU link exposes link/*aspm here (kernel < 5.5 or no GPU)")
    for bus_id, states in with_files.items():
        assert not any(states.values()), f"{bus_id}: ASPM states still on: {states}"


def test_runtime_gpu_irqs_on_local_cpus(host, expected: Expected) -> None:
    from tuning.captures.values import parse_cpu_list

    if not expected.config.affinity.pin_irqs:
        pytest.skip("affinity.pin_irqs is false")
    root = _runtime_or_skip(expected.config)
    links = _fact(host, PciLinks, root=root)
    devices = _fact(host, IrqAffinity, root=root)["devices"]
    checked = 0
    for bus_id, irqs in devices.items():
        local = (links.get(bus_id) or {}).get("local_cpulist")
        if not local:
            continue
        for irq, cpus in irqs.items():
            checked += 1
            assert parse_cpu_list(cpus or "") == parse_cpu_list(local), (
                f"IRQ {irq} of {bus_id} runs on {cpus}, not the GPU's local CPUs {local}"
            )
    if not checked:
        pytest.skip("no NVIDIA GPU IRQ with a local_cpulist on this host")


def test_gpu_settings_unit_holds_the_caps_per_uuid(host, expected: Expected) -> None:
    caps = caps_w(expected.config)
    if not caps:
        pytest.skip("no caps in the inventory or profile")
    unit = host.file("/etc/systemd/system/rigforge-gpu-settings.service").content_string
    assert re.search(r"^After=.*nvidia-persistenced\.service", unit, re.M)
    assert re.search(r"^Type=oneshot$", unit, re.M)
    match = re.search(r'^Environment="RIGFORGE_CAPS_W=([^"]*)"', unit, re.M)
    assert match, "the unit does not carry RIGFORGE_CAPS_W"
    found = dict(pair.split("=", 1) for pair in match.group(1).split())
    assert {k: float(v) for k, v in found.items()} == {k: float(v) for k, v in caps}
    assert _unit_enabled(host, "rigforge-gpu-settings.service")


def test_secrets_are_0600_owned_by_the_service_user(host, expected: Expected) -> None:
    secrets = secret_files(expected.config, "/etc/rigforge/secrets")
    if not secrets:
        pytest.skip("no secrets in the inventory")
    user = expected.config.base.service_user
    for path in secrets:
        f = host.file(path)
        assert f.exists, f"{path} is missing"
        assert f.mode == 0o600, f"{path} has mode {f.mode:o}"
        assert f.user == user, f"{path} is owned by {f.user}"


def test_secrets_dir_is_0750_root_service_group(host, expected: Expected) -> None:
    if not secret_files(expected.config, SECRETS_DIR):
        pytest.skip("no secrets in the inventory")
    d = host.file(SECRETS_DIR)
    assert d.is_directory
    assert d.mode == 0o750, f"{SECRETS_DIR} has mode {d.mode:o}"
    assert (d.user, d.group) == ("root", expected.config.base.service_user)


def test_serving_units_are_what_the_inventory_renders(host, expected: Expected) -> None:
    _served_or_skip(expected.config)
    wanted = render_serving_units(expected.config.serving, host_config=expected.config)
    for path, text in wanted.items():
        f = host.file(path)
        assert f.exists, f"{path} is missing"
        assert f.content_string == text, f"{path} differs from the plan's rendering; redeploy"


def test_serving_units_select_gpus_by_uuid(host, expected: Expected) -> None:
    for served in _served_or_skip(expected.config):
        lines = _config_lines(host, f"{UNIT_DIR}/{served.unit}")
        assert 'Environment="CUDA_DEVICE_ORDER=PCI_BUS_ID"' in lines, served.unit
        # Read the GPUs from the unit on the host, not from the inventory: an index there
        # ("0,1") would pick other cards than the inventory means.
        visible = _environment(lines, "CUDA_VISIBLE_DEVICES")
        assert visible is not None, f"{served.unit} sets no CUDA_VISIBLE_DEVICES"
        on_host = visible.split(",")
        assert all(g.startswith("GPU-") for g in on_host), f"{served.unit}: {visible} not by UUID"
        assert on_host == list(served.gpus), f"{served.unit} runs on {visible}, not {served.gpus}"


def test_serving_units_listen_on_the_inventory_address(host, expected: Expected) -> None:
    serving = expected.config.serving
    for served in _served_or_skip(expected.config):
        text = host.file(f"{UNIT_DIR}/{served.unit}").content_string
        # What the engine on the host is told, not what the inventory says it should be.
        match = re.search(r'--host\s+"?([^\s"]+)"?\s+--port\s+"?(\d+)', text)
        assert match, f"{served.unit} gives its engine no --host/--port"
        bind, port = match.group(1), int(match.group(2))
        assert (bind, port) == (serving.bind, served.port), (
            f"{served.unit} listens on {bind}:{port}, not {serving.bind}:{served.port}; redeploy"
        )
        if not serving.open:
            assert bind in LOOPBACK, f"{served.unit} binds {bind}; a closed stack binds loopback"
        # An API key on the command line is readable by every local user (ps, /proc).
        assert "--api-key" not in text, f"{served.unit} has an API key on its command line"


def test_serving_units_run_as_the_service_user(host, expected: Expected) -> None:
    user = expected.config.base.service_user
    for served in _served_or_skip(expected.config):
        lines = _config_lines(host, f"{UNIT_DIR}/{served.unit}")
        assert f"User={user}" in lines, served.unit
        assert f"Group={user}" in lines, served.unit


def test_serving_units_are_hardened(host, expected: Expected) -> None:
    for served in _served_or_skip(expected.config):
        lines = _config_lines(host, f"{UNIT_DIR}/{served.unit}")
        missing = [h for h in HARDENING if h not in lines]
        assert not missing, f"{served.unit} lacks {missing}"


def test_serving_units_enabled(host, expected: Expected) -> None:
    for served in _served_or_skip(expected.config):
        assert _unit_enabled(host, served.unit), f"{served.unit} is not enabled"


def test_open_serving_reads_its_key_from_a_file(host, expected: Expected) -> None:
    serving = expected.config.serving
    if not serving.open:
        pytest.skip("serving is bound to loopback (serving.open is false): no API key needed")
    # systemd (root) reads the EnvironmentFile before dropping to the service user: root-owned.
    env = host.file(API_KEY_ENV_FILE)
    assert env.exists, f"{API_KEY_ENV_FILE} is missing"
    assert env.mode == 0o600, f"{API_KEY_ENV_FILE} has mode {env.mode:o}"
    assert (env.user, env.group) == ("root", "root"), f"{API_KEY_ENV_FILE}: {env.user}:{env.group}"
    # systemd ignores a line without '=': a raw key there would leave the endpoint open.
    values = dict(
        ln.split("=", 1) for ln in env.content_string.splitlines() if "=" in ln and ln[:1] != "#"
    )
    for name in ("VLLM_API_KEY", "LLAMA_API_KEY"):
        assert values.get(name, "").strip(), f"{API_KEY_ENV_FILE} has no non-empty {name}="
    for served in _served_or_skip(expected.config):
        lines = _config_lines(host, f"{UNIT_DIR}/{served.unit}")
        assert f"EnvironmentFile={API_KEY_ENV_FILE}" in lines, served.unit


def test_running_services_listen_on_loopback_only(host, expected: Expected) -> None:
    serving = expected.config.serving
    running = [s for s in _served_or_skip(expected.config) if _unit_active(host, s.unit)]
    if not running:
        pytest.skip("no serving unit is running here (not started, or no systemd: CI target)")
    for served in running:
        if serving.open:
            assert host.socket(f"tcp://{serving.bind}:{served.port}").is_listening
            continue
        assert host.socket(f"tcp://{serving.bind}:{served.port}").is_listening, (
            f"{served.unit} runs but nothing listens on {serving.bind}:{served.port}"
        )
        for wildcard in ("0.0.0.0", "::"):
            assert not host.socket(f"tcp://{wildcard}:{served.port}").is_listening, (
                f"port {served.port} is open on {wildcard}, beyond this machine"
            )


# -- needs a GPU on the host ------------------------------------------------------------------


def _smi(host, query: str) -> list[list[str]]:
    __tracebackhide__ = True
    out = host.run(f"nvidia-smi --query-gpu=uuid,{query} --format=csv,noheader,nounits")
    if out.rc != 0:
        pytest.skip(f"nvidia-smi cannot reach a GPU on this host (rc {out.rc})")
    return [[c.strip() for c in line.split(",")] for line in out.stdout.strip().splitlines()]


@pytest.mark.gpu
def test_gpu_power_limits_equal_the_caps(host, expected: Expected) -> None:
    rows = {r[0]: float(r[1]) for r in _smi(host, "power.limit")}
    for key, cap_w in caps_w(expected.config):
        if key.startswith("GPU-"):
            assert rows.get(key) == pytest.approx(cap_w, abs=1), key


@pytest.mark.gpu
def test_gpu_persistence_on(host, expected: Expected) -> None:
    for uuid, mode in _smi(host, "persistence_mode"):
        assert mode == "Enabled", f"{uuid}: persistence {mode}"


@pytest.mark.gpu
def test_gpu_links_at_max_gen_under_load(host, expected: Expected) -> None:
    # Idle GPUs drop their link speed to save power; read it while the GPU is busy.
    rows = _smi(host, "pcie.link.gen.current,pcie.link.gen.max,utilization.gpu")
    busy = [r for r in rows if r[3].isdigit() and int(r[3]) >= 50]
    if not busy:
        pytest.skip("no GPU under load right now; run this while a model is serving")
    for uuid, current, maximum, _ in busy:
        assert current == maximum, f"{uuid}: link gen {current} under load, max {maximum}"
