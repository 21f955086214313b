"""What the inventory says is there, checked on the host (testinfra; hosts parametrised)."""

from __future__ import annotations

import re

import pytest

from deploys.gpu_settings import caps_w
from deploys.nvidia_driver import UNATTENDED_BLACKLIST, driver_packages
from deploys.serving import secret_files
from tests.verify.conftest import Expected

BASE_PACKAGES = ("numactl", "pciutils", "lm-sensors")


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
    listing = host.run("ls /etc/apt/sources.list.d/*.sources 2>/dev/null")
    for path in listing.stdout.split():
        text = host.file(path).content_string
        for stanza in filter(None, (s.strip() for s in text.split("\n\n"))):
            if not re.search(r"^(Types|URIs):", stanza, re.M):
                continue
            match = re.search(r"^Signed-By:\s*(\S+)", stanza, re.M)
            assert match, f"{path} has a stanza without Signed-By"
            if match.group(1).startswith("/"):
                assert host.file(match.group(1)).exists, f"{path}: keyring {match.group(1)} missing"


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


def test_serving_units_select_gpus_by_uuid(host, expected: Expected) -> None:
    units = host.run("ls /etc/systemd/system/rigforge-serve-*.service 2>/dev/null").stdout.split()
    if not (expected.config.serving.plan or expected.config.serving.models):
        pytest.skip("no serving in the inventory")
    assert units, "no rigforge-serve-*.service units"
    for path in units:
        text = host.file(path).content_string
        assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in text, path
        assert re.search(r"CUDA_VISIBLE_DEVICES=[^\n]*GPU-", text), f"{path}: GPUs not by UUID"


def test_serving_bound_to_the_inventory_address(host, expected: Expected) -> None:
    serving = expected.config.serving
    ports = [m.port for m in serving.models]
    if not ports or serving.open:
        pytest.skip("no hand-listed serving ports, or serving is open by choice")
    for port in ports:
        for wildcard in ("0.0.0.0", "::"):
            assert not host.socket(f"tcp://{wildcard}:{port}").is_listening


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
