"""Provisioning templates and package choices: rendered locally, asserted line by line."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploys.cuda import FORBIDDEN, toolkit_packages
from deploys.nvidia_driver import (
    PIN_PATTERNS,
    UNATTENDED_BLACKLIST,
    cuda_repo_uri,
    driver_packages,
)
from deploys.util import render
from inventory.schema import HostConfig
from tuning.core.power import POWER_LIMIT_TOLERANCE_W
from tuning.render.files import cap_script
from tuning.serving_checks import systemd_exposure


def _cfg(**driver: object) -> HostConfig:
    distro = driver.pop("distro", {"id": "debian", "codename": "bookworm"})
    return HostConfig.model_validate(
        {"ssh": {"host": "127.0.0.1"}, "distro": distro, "driver": driver}
    )


def _lines(text: str) -> list[str]:
    return [
        ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "//"))
    ]


def test_gpu_settings_unit_orders_after_persistenced_and_lists_caps() -> None:
    unit = render(
        "etc/systemd/system/rigforge-gpu-settings.service.j2",
        caps_w=[("GPU-a", 280.0), ("GPU-b", 250.5)],
        use_tuner=False,
        venv="/opt/rigforge/venv",
        profile="/etc/rigforge/profile.yaml",
        script="/usr/local/libexec/rigforge-gpu-settings",
    )
    lines = _lines(unit)
    assert "After=nvidia-persistenced.service" in lines
    assert "Type=oneshot" in lines
    assert 'Environment="RIGFORGE_CAPS_W=GPU-a=280 GPU-b=250.5"' in lines
    assert "ExecStart=/usr/local/libexec/rigforge-gpu-settings" in lines


def test_gpu_settings_unit_uses_rigforge_apply_with_the_tuner() -> None:
    unit = render(
        "etc/systemd/system/rigforge-gpu-settings.service.j2",
        caps_w=[("GPU-a", 280.0)],
        use_tuner=True,
        venv="/opt/rigforge/venv",
        profile="/etc/rigforge/profile.yaml",
        script="/x",
        rig=None,
    )
    apply = "ExecStart=/opt/rigforge/venv/bin/rigforge apply /etc/rigforge/profile.yaml\n"
    assert apply in unit


def test_gpu_settings_unit_applies_to_the_simulated_rig_of_a_gpu_less_host() -> None:
    """``tuner.sim_rig`` (a host without GPUs, like CI): the boot unit applies the profile to
    the rig it was swept on (``rigforge apply --rig FILE``), not to NVML."""
    unit = render(
        "etc/systemd/system/rigforge-gpu-settings.service.j2",
        caps_w=[("GPU-a", 280.0)],
        use_tuner=True,
        venv="/opt/rigforge/venv",
        profile="/etc/rigforge/profile.yaml",
        script="/x",
        rig="/etc/rigforge/tune-rig.yaml",
    )
    assert (
        "ExecStart=/opt/rigforge/venv/bin/rigforge apply /etc/rigforge/profile.yaml"
        " --rig /etc/rigforge/tune-rig.yaml\n"
    ) in unit


def test_cap_script_clamps_reads_back_and_fails_loudly() -> None:
    script = cap_script(retries=3, retry_delay_s=2).render()
    # the read-back tolerance is the one the actuator uses, not a number of the script's own
    assert f"-v t={POWER_LIMIT_TOLERANCE_W}" in script
    assert "power.min_limit,power.max_limit" in script
    assert 'nvidia-smi -i "$gpu" -pl "$cap"' in script
    assert "--query-gpu=power.limit" in script
    assert "for attempt in $(seq 1 3)" in script
    assert re.search(r"FAILED.*\n\s*exit 1", script)


def test_persistenced_dropin_resets_execstart_then_enables_persistence() -> None:
    text = render(
        "etc/systemd/system/nvidia-persistenced.service.d/rigforge-persistence.conf.j2",
        daemon="/usr/bin/nvidia-persistenced",
        user="nvpd",
    )
    lines = _lines(text)
    assert lines[lines.index("ExecStart=") + 1] == (
        "ExecStart=/usr/bin/nvidia-persistenced --user nvpd --persistence-mode --verbose"
    )


def test_grub_fragment_uses_policy_performance_not_aspm_off() -> None:
    text = render("etc/default/grub.d/rigforge-pcie.cfg.j2", cmdline="pcie_aspm.policy=performance")
    assert _lines(text) == [
        'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT pcie_aspm.policy=performance"'
    ]


def test_pin_holds_every_pattern_on_the_branch() -> None:
    text = render(
        "etc/apt/preferences.d/rigforge-nvidia-driver.pref.j2",
        patterns=PIN_PATTERNS,
        branch="535",
        source="debian",
    )
    stanzas = [s for s in text.split("\n\n") if "Package:" in s]
    assert len(stanzas) == len(PIN_PATTERNS)
    for stanza, pattern in zip(stanzas, PIN_PATTERNS, strict=True):
        assert f"Package: {pattern}" in stanza
        assert "Pin: version 535.*" in stanza
        assert "Pin-Priority: 1001" in stanza


def test_unattended_blacklist_lists_every_nvidia_pattern() -> None:
    text = render(
        "etc/apt/apt.conf.d/51rigforge-nvidia-unattended.j2", patterns=UNATTENDED_BLACKLIST
    )
    assert text.count('";') == len(UNATTENDED_BLACKLIST)
    assert '"^nvidia-";' in text


def test_cuda_sources_is_deb822_with_signed_by() -> None:
    uri = cuda_repo_uri(
        _cfg(source="cuda-repo", branch="570"),
        "https://developer.download.nvidia.com/compute/cuda/repos",
        "x86_64",
    )
    assert uri.endswith("/debian12/x86_64/")
    text = render("etc/apt/sources.list.d/cuda.sources.j2", uri=uri, keyring="/k.gpg")
    assert "Signed-By: /k.gpg" in _lines(text)
    assert f"URIs: {uri}" in _lines(text)


@pytest.mark.parametrize(
    ("driver", "userspace", "modules", "pin"),
    [
        (
            {"source": "debian", "branch": "535", "flavour": "proprietary"},
            ("nvidia-smi", "libnvidia-ml1", "nvidia-persistenced"),
            "nvidia-kernel-dkms",
            (),
        ),
        (
            {"source": "cuda-repo", "branch": "570", "flavour": "open"},
            ("nvidia-smi", "libnvidia-ml1", "nvidia-persistenced"),
            "nvidia-open",
            ("nvidia-driver-pinning-570",),
        ),
        (
            {
                "source": "ubuntu",
                "branch": "570",
                "flavour": "open",
                "distro": {"id": "ubuntu", "codename": "noble"},
            },
            ("nvidia-utils-570-server", "libnvidia-compute-570-server", "nvidia-persistenced"),
            "nvidia-driver-570-server-open",
            (),
        ),
    ],
)
def test_driver_packages_per_source(driver, userspace, modules, pin) -> None:
    pkgs = driver_packages(_cfg(**driver))
    assert pkgs.userspace == userspace
    assert modules in pkgs.modules
    assert pkgs.pin == pin


def test_toolkit_never_pulls_a_driver() -> None:
    assert toolkit_packages("12.8") == ["cuda-toolkit-12-8"]
    assert not FORBIDDEN.intersection(toolkit_packages("12.8"))


def test_irq_script_reads_local_cpulist_under_the_kernel_root() -> None:
    script = render("usr/local/libexec/rigforge-irq-affinity.sh.j2")
    assert 'root="${RIGFORGE_KERNEL_ROOT:-/}"' in script
    assert "local_cpulist" in script
    assert "smp_affinity_list" in script


def test_paths_in_root_units_are_one_literal_word_each() -> None:
    unit = render(
        "etc/systemd/system/rigforge-gpu-settings.service.j2",
        caps_w=[("GPU-a", 280.0)],
        use_tuner=True,
        venv="/opt/my venv$HOME%h",
        profile='/etc/rig "forge"/p.yaml',
        script="/x",
    )
    # systemd.service(5): "$$" is a literal $, "%%" a literal %, \" a quote inside quotes.
    assert (
        'ExecStart="/opt/my venv$$HOME%%h/bin/rigforge" apply "/etc/rig \\"forge\\"/p.yaml"' in unit
    )
    irq = render(
        "etc/systemd/system/rigforge-irq-affinity.service.j2",
        script="/usr/local/lib exec/pin",
        kernel_root="/srv/scratch tree$1",
    )
    # Environment= does not expand $VAR, so $ stays single there.
    assert 'Environment="RIGFORGE_KERNEL_ROOT=/srv/scratch tree$1"' in irq
    assert 'ExecStart="/usr/local/lib exec/pin"' in irq


GPU_UNIT = {
    "template": "etc/systemd/system/rigforge-gpu-settings.service.j2",
    "caps_w": [("GPU-a", 280.0)],
    "use_tuner": True,
    "venv": "/opt/rigforge/venv",
    "profile": "/etc/rigforge/profile.yaml",
    "script": "/x",
}
IRQ_UNIT = {
    "template": "etc/systemd/system/rigforge-irq-affinity.service.j2",
    "script": "/usr/local/libexec/rigforge-irq-affinity",
    "kernel_root": "/",
}
#: Exposure ceilings (systemd-analyze security, 0 safe .. 10 unsafe); both were 9.6 unhardened.
MAX_EXPOSURE = {"rigforge-gpu-settings.service": 6.0, "rigforge-irq-affinity.service": 5.0}


def _unit(spec: dict) -> str:
    context = {k: v for k, v in spec.items() if k != "template"}
    return render(spec["template"], **context)


def test_root_oneshots_keep_what_they_need() -> None:
    gpu = _lines(_unit(GPU_UNIT))
    irq = _lines(_unit(IRQ_UNIT))
    for lines in (gpu, irq):
        for setting in ("ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes"):
            assert setting in lines
        assert "ProtectSystem=full" in lines
    # rigforge apply journals to /var/lib/rigforge/state; NVML needs /dev/nvidia*.
    assert "StateDirectory=rigforge" in gpu
    assert not any(
        ln.startswith(("PrivateDevices=", "DeviceAllow=", "ProtectClock=")) for ln in gpu
    )
    # The IRQ unit writes /proc/irq, which ProtectKernelTunables= makes read-only.
    assert not any(ln.startswith("ProtectKernelTunables=") for ln in irq)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
@pytest.mark.parametrize("spec", [GPU_UNIT, IRQ_UNIT], ids=["gpu-settings", "irq-affinity"])
def test_root_oneshot_exposure(spec: dict, tmp_path: Path) -> None:
    name = spec["template"].rsplit("/", 1)[-1].removesuffix(".j2")
    path = tmp_path / name
    path.write_text(_unit(spec))
    exposure = systemd_exposure(path)
    assert exposure is not None, "systemd-analyze printed no exposure"
    print(f"{name}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE[name]


def _run_cap_script(tmp_path: Path, caps: str, limits: str = "100.00, 350.00") -> list[str]:
    """The rendered script run against a stand-in ``nvidia-smi`` (the hardware boundary) that
    answers the range query with ``limits`` and reads back whatever ``-pl`` last set; returns
    the ``-pl`` arguments it was given."""
    script = tmp_path / "caps.sh"
    script.write_text(cap_script(retries=1, retry_delay_s=0).render())
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    log = tmp_path / "pl.log"
    fake.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *-pl*) echo "$4" >> {log}; echo "$4" > {tmp_path}/now ;;\n'
        f'  *power.min_limit*) echo "{limits}" ;;\n'
        f"  *power.limit*) cat {tmp_path}/now ;;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "RIGFORGE_CAPS_W": caps}
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return log.read_text().split()


def test_cap_script_keeps_fractional_caps_and_clamps(tmp_path: Path) -> None:
    """250.5 W reaches nvidia-smi as 250.5 (not 250); 400 W is clamped to the 350 W max."""
    assert _run_cap_script(tmp_path, "GPU-a=250.5") == ["250.5"]


def test_cap_script_clamps_to_the_cards_range(tmp_path: Path) -> None:
    assert _run_cap_script(tmp_path, "GPU-a=400") == ["350"]
