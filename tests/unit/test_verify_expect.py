"""The verify suite's oracle (``tests/verify/expect.py``) against the example inventories'
literal values, and its serving checks against units the renderer writes.

The checks in ``tests/verify`` need a deployed host (the target tier gives them one); what they
expect is plain data derived from the inventory, so it is checked here, in the default tier,
against values read off the YAML files by hand. The serving checks read only files, so they
also run here against a scratch tree holding the rendered units — and must fail on a unit that
puts a model on the wrong GPU or split. The running-kernel checks read ``kernel.root``, so they
run here with testinfra's local backend against a scratch sysfs/procfs tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from inventory.validate import load_inventory
from tests.conftest import REPO_ROOT
from tests.verify import expect
from tests.verify import test_driver as driver_checks
from tests.verify import test_gpu_settings as gpu_settings_checks
from tests.verify import test_irqs as irq_checks
from tests.verify import test_pcie as pcie_checks
from tests.verify import test_serving as serving_checks
from tests.verify.conftest import Expected
from tuning.serving import render_serving_units

EXAMPLES = REPO_ROOT / "inventory" / "examples"
GPU_1 = "GPU-c1000000-0000-4000-8000-000000000001"
GPU_2 = "GPU-c1000000-0000-4000-8000-000000000002"


def host_config(file: str, name: str) -> Expected:
    hosts = load_inventory(EXAMPLES / file, check_ssh_files=False).hosts
    return Expected(name=name, config=hosts[name])


def test_ci_target_caps_are_the_hand_caps() -> None:
    """ci.yaml lists ``power_cap_w: 280`` and ``250`` on its two fake RTX 3090s."""
    assert expect.caps_w(host_config("ci.yaml", "ci-target").config) == {
        GPU_1: 280.0,
        GPU_2: 250.0,
    }


def test_ws_a_caps_come_from_its_profile() -> None:
    """ci-two.yaml's ws-a lists no caps; host_data/ws-a/profile.yaml has ``cap_w: 239.0`` and
    ``241.0`` for the same two UUIDs."""
    assert expect.caps_w(host_config("ci-two.yaml", "ws-a").config) == {
        GPU_1: 239.0,
        GPU_2: 241.0,
    }


def test_ci_target_serves_the_two_planned_models() -> None:
    """host_data/ci-target/plan.yaml: llama.cpp on GPU 1 port 8000 and on GPU 2 port 8001,
    each from its tiny GGUF, both on the NUMA node 0 CPUs 0-1."""
    served = expect.served(host_config("ci.yaml", "ci-target").config)
    assert [(s.unit, s.engine, s.port, s.gpus, s.tp, s.numa_node, s.cpus) for s in served] == [
        ("rigforge-serve-tiny-llama-a.service", "llama.cpp", 8000, (GPU_1,), 1, 0, (0, 1)),
        ("rigforge-serve-tiny-llama-b.service", "llama.cpp", 8001, (GPU_2,), 1, 0, (0, 1)),
    ]
    assert served[0].weights == "/var/cache/rigforge/models/tiny-llama-a.gguf"
    assert served[1].weights == "/var/cache/rigforge/models/tiny-llama-b.gguf"


def test_ci_target_units_are_persistenced_irqs_caps_and_two_engines() -> None:
    """ci.yaml: a driver (nvidia-persistenced), ``affinity.pin_irqs: true``, hand caps on both
    GPUs, and the plan's two llama.cpp models: five units, boot oneshots before serving."""
    assert expect.units(host_config("ci.yaml", "ci-target").config) == (
        "nvidia-persistenced.service",
        "rigforge-irq-affinity.service",
        "rigforge-gpu-settings.service",
        "rigforge-serve-tiny-llama-a.service",
        "rigforge-serve-tiny-llama-b.service",
    )


def test_reference_box_expects_the_cuda_repo_open_driver_and_toolkit() -> None:
    """reference.yaml's ws1: ``driver: {source: cuda-repo, branch: "570"}`` on Ubuntu, CUDA 12.8."""
    cfg = host_config("reference.yaml", "ws1").config
    assert cfg.distro.id == "ubuntu"
    assert expect.driver_userspace(cfg) == (
        "nvidia-utils-570",
        "libnvidia-compute-570",
        "nvidia-persistenced",
    )
    assert expect.cuda_toolkit_package(cfg.cuda.version) == "cuda-toolkit-12-8"
    # flavour: open, install_kernel_modules: true → NVIDIA's open-module meta-package.
    assert expect.driver_meta_package(cfg) == "nvidia-open"
    assert [s.port for s in expect.served(cfg)] == [8000, 8001, 8002, 8003]


def test_ci_target_secrets_are_the_hf_token() -> None:
    cfg = host_config("ci.yaml", "ci-target").config
    secrets = expect.secret_files(cfg)
    assert list(secrets) == ["/etc/rigforge/secrets/hf-token"]
    assert secrets["/etc/rigforge/secrets/hf-token"].resolve() == (
        EXAMPLES / "secrets" / "ci-hf-token"
    )


def test_debian_driver_user_space() -> None:
    cfg = host_config("ci.yaml", "ci-target").config
    assert expect.driver_userspace(cfg) == ("nvidia-smi", "libnvidia-ml1", "nvidia-persistenced")
    assert expect.driver_meta_package(cfg) is None  # install_kernel_modules: false


def test_cpu_set_reads_the_kernels_cpulist_format() -> None:
    assert expect.cpu_set("0-3,8,10-11") == {0, 1, 2, 3, 8, 10, 11}
    assert expect.cpu_set("") == frozenset()


# -- the serving checks against a scratch tree of rendered units -------------------------------


@dataclass(frozen=True)
class _File:
    path: str
    tree: dict[str, str]

    @property
    def exists(self) -> bool:
        return self.path in self.tree

    @property
    def content_string(self) -> str:
        return self.tree[self.path]


@dataclass(frozen=True)
class FileHost:
    """A testinfra host double that has files, and answers the commands the file checks run:
    ``systemctl is-enabled`` (every unit enabled, as ``systemctl enable`` leaves it),
    ``systemctl is-active`` (nothing runs in a tree of files: ``inactive``, rc 3),
    ``systemctl show UNIT -p EnvironmentFiles -p Environment`` (what systemd loads from the
    unit's ``EnvironmentFile=``/``Environment=`` lines, printed as systemd 252 prints them) and
    ``dpkg-query`` (the ``installed`` packages, in dpkg's ``${Status}|${Package}`` shape)."""

    tree: dict[str, str]
    installed: tuple[str, ...] = ()

    def file(self, path: str) -> _File:
        return _File(path, self.tree)

    def run(self, command: str) -> SimpleNamespace:
        if command.startswith("systemctl is-enabled "):
            return SimpleNamespace(rc=0, stdout="enabled\n", stderr="")
        if command.startswith("systemctl is-active "):
            return SimpleNamespace(rc=3, stdout="inactive\n", stderr="")
        if command.startswith("systemctl show ") and command.endswith(
            " -p EnvironmentFiles -p Environment"
        ):
            unit = command.split()[2]
            lines = self.tree[f"{expect.UNIT_DIR}/{unit}"].splitlines()
            words = [
                ln.removeprefix("Environment=").strip('"')
                for ln in lines
                if ln.startswith("Environment=")
            ]
            files = [
                f"EnvironmentFiles={ln.removeprefix('EnvironmentFile=')} (ignore_errors=no)"
                for ln in lines
                if ln.startswith("EnvironmentFile=")
            ]
            out = "".join(f"{ln}\n" for ln in files) + f"Environment={' '.join(words)}\n"
            return SimpleNamespace(rc=0, stdout=out, stderr="")
        if command.startswith("dpkg-query -W"):
            rows = "".join(f"install ok installed|{name}\n" for name in self.installed)
            return SimpleNamespace(rc=0, stdout=rows, stderr="")
        raise AssertionError(f"the host double does not run {command!r}")


FILE_CHECKS = (
    serving_checks.test_serving_units_run_the_planned_engine_weights_and_binding,
    serving_checks.test_serving_units_select_gpus_by_uuid,
    serving_checks.test_serving_units_listen_on_the_inventory_address,
    serving_checks.test_serving_units_run_as_the_service_user,
    serving_checks.test_serving_units_are_hardened,
)


@pytest.fixture(scope="module")
def ci_target() -> tuple[Expected, dict[str, str]]:
    expected = host_config("ci.yaml", "ci-target")
    units = render_serving_units(expected.config.serving, host_config=expected.config)
    return expected, units


#: Every example host that serves something: the CI targets and the reference box.
SERVING_HOSTS = [("ci.yaml", "ci-target"), ("ci-two.yaml", "ws-a"), ("reference.yaml", "ws1")]


@pytest.mark.parametrize("check", FILE_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("file", "name"), SERVING_HOSTS, ids=[n for _, n in SERVING_HOSTS])
def test_serving_checks_pass_on_the_rendered_units(file: str, name: str, check) -> None:
    expected = host_config(file, name)
    assert expect.served(expected.config), f"{name} serves nothing"
    units = render_serving_units(expected.config.serving, host_config=expected.config)
    check(FileHost(dict(units)), expected)


#: The units the mutations below edit: the CI target's first llama.cpp unit, and ws-a's vLLM
#: unit (pp=2 over both GPUs; the CI target serves llama.cpp only, which is what runs there).
LLAMA_UNIT = ("ci.yaml", "ci-target", "rigforge-serve-tiny-llama-a.service")
VLLM_UNIT = ("ci-two.yaml", "ws-a", "rigforge-serve-qwq-32b-awq.service")


@pytest.mark.parametrize(
    ("where", "check", "old", "new"),
    [
        (LLAMA_UNIT, FILE_CHECKS[1], GPU_1, GPU_2),
        (LLAMA_UNIT, FILE_CHECKS[0], "models/tiny-llama-a.gguf", "models/tiny-llama-b.gguf"),
        (LLAMA_UNIT, FILE_CHECKS[0], "NUMAMask=0", "NUMAMask=1"),
        (LLAMA_UNIT, FILE_CHECKS[0], "CPUAffinity=0-1", "CPUAffinity=0"),
        (LLAMA_UNIT, FILE_CHECKS[2], "--port 8000", "--port 8080"),
        (LLAMA_UNIT, FILE_CHECKS[2], "--host 127.0.0.1", "--host 0.0.0.0"),
        (LLAMA_UNIT, FILE_CHECKS[4], "ProtectSystem=strict", "ProtectSystem=full"),
        (VLLM_UNIT, FILE_CHECKS[1], GPU_2, GPU_1),
        (VLLM_UNIT, FILE_CHECKS[0], "--tensor-parallel-size 1", "--tensor-parallel-size 2"),
        (VLLM_UNIT, FILE_CHECKS[0], "serve qwq-32b-awq", "serve qwq-32b"),
        (VLLM_UNIT, FILE_CHECKS[2], "--port 8000", "--port 8080"),
        (VLLM_UNIT, FILE_CHECKS[4], "NoNewPrivileges=yes", "NoNewPrivileges=no"),
    ],
    ids=[
        "llama-wrong-gpu",
        "llama-wrong-weights",
        "llama-wrong-numa",
        "llama-wrong-cpus",
        "llama-wrong-port",
        "llama-wildcard",
        "llama-weaker",
        "vllm-wrong-gpu",
        "vllm-wrong-split",
        "vllm-wrong-weights",
        "vllm-wrong-port",
        "vllm-weaker",
    ],
)
def test_serving_checks_fail_on_a_unit_the_plan_does_not_describe(
    where: tuple[str, str, str], check, old: str, new: str
) -> None:
    file, name, unit = where
    expected = host_config(file, name)
    units = render_serving_units(expected.config.serving, host_config=expected.config)
    path = f"{expect.UNIT_DIR}/{unit}"
    assert old in units[path]
    tree = {**units, path: units[path].replace(old, new)}
    with pytest.raises(AssertionError):
        check(FileHost(tree), expected)


KEY_CHECK = serving_checks.test_serving_units_read_the_api_key_only_when_open


@pytest.mark.parametrize(("file", "name"), SERVING_HOSTS, ids=[n for _, n in SERVING_HOSTS])
def test_api_key_check_passes_on_the_rendered_units(file: str, name: str) -> None:
    """Loopback hosts (all three examples: reference.yaml's ws1 has a key file but
    ``open: false``) render no key file and no key variable into their units."""
    expected = host_config(file, name)
    units = render_serving_units(expected.config.serving, host_config=expected.config)
    KEY_CHECK(FileHost(dict(units)), expected)


@pytest.mark.parametrize(
    "line",
    [
        f"EnvironmentFile={expect.API_KEY_ENV_FILE}",
        "EnvironmentFile=-/etc/rigforge/api-key",
        'Environment="LLAMA_API_KEY=sk-test"',
    ],
    ids=["key-env-file", "other-key-file", "key-variable"],
)
def test_api_key_check_fails_when_a_loopback_unit_reads_a_key(ci_target, line: str) -> None:
    """ci.yaml binds 127.0.0.1 (``open`` false): a unit that reads a key anyway is not the host."""
    expected, units = ci_target
    path = f"{expect.UNIT_DIR}/rigforge-serve-tiny-llama-a.service"
    marker = 'Environment="CUDA_DEVICE_ORDER=PCI_BUS_ID"'
    assert marker in units[path]
    tree = {**units, path: units[path].replace(marker, f"{line}\n{marker}")}
    with pytest.raises(AssertionError):
        KEY_CHECK(FileHost(tree), expected)


def test_api_key_check_fails_when_a_loopback_unit_passes_a_key_file(ci_target) -> None:
    expected, units = ci_target
    path = f"{expect.UNIT_DIR}/rigforge-serve-tiny-llama-a.service"
    tree = {**units, path: units[path].replace("--metrics", "--metrics --api-key-file /k")}
    with pytest.raises(AssertionError, match="passes an API key"):
        KEY_CHECK(FileHost(tree), expected)


def _opened(expected: Expected) -> Expected:
    """``expected`` with its serving opened on 10.0.0.5 with a key file (ci.yaml otherwise)."""
    serving = expected.config.serving.model_copy(
        update={"open": True, "bind": "10.0.0.5", "api_key_file": "secrets/ci-api-key"}
    )
    return Expected(expected.name, expected.config.model_copy(update={"serving": serving}))


def test_api_key_check_passes_on_opened_units(ci_target) -> None:
    opened = _opened(ci_target[0])
    units = render_serving_units(opened.config.serving, host_config=opened.config)
    assert all(f"EnvironmentFile={expect.API_KEY_ENV_FILE}" in text for text in units.values())
    KEY_CHECK(FileHost(dict(units)), opened)


def test_api_key_check_fails_when_an_opened_unit_reads_no_key(ci_target) -> None:
    """The same units under ``serving.open: true`` (bind 10.0.0.5) lack the key file."""
    expected, units = ci_target
    with pytest.raises(AssertionError, match="EnvironmentFile"):
        KEY_CHECK(FileHost(dict(units)), _opened(expected))


def test_serving_checks_fail_when_a_unit_is_missing(ci_target) -> None:
    expected, units = ci_target
    tree = {p: t for p, t in units.items() if "tiny-llama-b" not in p}
    with pytest.raises(AssertionError, match="missing"):
        FILE_CHECKS[0](FileHost(tree), expected)


def test_rendered_unit_paths_are_the_expected_units(ci_target) -> None:
    """Two derivations of the unit names — the renderer's and the oracle's — agree."""
    expected, units = ci_target
    assert sorted(units) == sorted(
        f"{expect.UNIT_DIR}/{s.unit}" for s in expect.served(expected.config)
    )


def test_every_verify_module_is_one_concern() -> None:
    """The suite is one file per concern (README: verify), each a check of a deployed host."""
    here = REPO_ROOT / "tests" / "verify"
    assert sorted(p.name for p in here.glob("test_*.py")) == [
        "test_cpu.py",
        "test_driver.py",
        "test_gpu_settings.py",
        "test_irqs.py",
        "test_links.py",
        "test_packages.py",
        "test_pcie.py",
        "test_secrets.py",
        "test_serving.py",
    ]
    for path in here.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import) deploys\b", text, re.M), (
            f"{path.name} imports deploy code; the suite derives what it expects from the inventory"
        )


# -- the runtime checks against a scratch sysfs/procfs tree, read by real shell ----------------


def _kernel_tree(root: Path, *, aspm: str, l1_aspm: str, irq_cpus: str) -> None:
    """One NVIDIA GPU at 0000:41:00.0 with local CPUs 0-1 and IRQs 130, 131 (the layout of
    a real sysfs: ``msi_irqs/`` holds one entry per IRQ; ``/proc/irq/N/smp_affinity_list``)."""
    dev = root / "sys/bus/pci/devices/0000:41:00.0"
    audio = root / "sys/bus/pci/devices/0000:41:00.1"  # the card's HDMI audio: not a GPU
    files = {
        dev / "vendor": "0x10de",
        dev / "class": "0x030000",
        dev / "local_cpulist": "0-1",
        dev / "link/l1_aspm": l1_aspm,
        dev / "link/l0s_aspm": "0",
        dev / "msi_irqs/130": "msi",
        dev / "msi_irqs/131": "msi",
        audio / "vendor": "0x10de",
        audio / "class": "0x040300",
        audio / "local_cpulist": "0-1",
        audio / "link/l1_aspm": "1",
        root / "sys/module/pcie_aspm/parameters/policy": aspm,
        root / "proc/irq/130/smp_affinity_list": "0-1",
        root / "proc/irq/131/smp_affinity_list": irq_cpus,
    }
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n")


def _rooted(root: Path) -> Expected:
    expected = host_config("ci.yaml", "ci-target")
    kernel = expected.config.kernel.model_copy(update={"root": str(root)})
    return Expected(expected.name, expected.config.model_copy(update={"kernel": kernel}))


@pytest.fixture
def local_host():
    import testinfra

    return testinfra.get_host("local://")


RUNTIME_CHECKS = (
    pcie_checks.test_runtime_aspm_policy_is_performance,
    pcie_checks.test_runtime_aspm_off_on_every_gpu_link,
    irq_checks.test_runtime_gpu_irqs_on_their_units_or_local_cpus,
)


@pytest.mark.parametrize("check", RUNTIME_CHECKS, ids=lambda c: c.__name__)
def test_runtime_checks_pass_on_a_deployed_kernel(tmp_path: Path, local_host, check) -> None:
    _kernel_tree(
        tmp_path, aspm="default [performance] powersave powersupersave", l1_aspm="0", irq_cpus="0,1"
    )
    check(local_host, _rooted(tmp_path))


@pytest.mark.parametrize(
    ("check", "tree", "message"),
    [
        (RUNTIME_CHECKS[0], {"aspm": "[default] performance powersave"}, "ASPM policy is default"),
        (RUNTIME_CHECKS[1], {"l1_aspm": "1"}, "ASPM states still on"),
        (RUNTIME_CHECKS[2], {"irq_cpus": "2-3"}, "IRQ 131 of 0000:41:00.0 runs on 2-3"),
    ],
    ids=["policy-default", "l1-on", "irq-elsewhere"],
)
def test_runtime_checks_fail_on_an_undeployed_kernel(
    tmp_path: Path, local_host, check, tree: dict[str, str], message: str
) -> None:
    values = {"aspm": "performance", "l1_aspm": "0", "irq_cpus": "0-1", **tree}
    _kernel_tree(tmp_path, **values)
    with pytest.raises(AssertionError, match=message):
        check(local_host, _rooted(tmp_path))


# -- the driver, PCIe and GPU-settings file checks against the files the deploy renders --------

#: A Debian bookworm 535 user-space install: the three packages ci.yaml's driver asks for plus
#: support packages of Debian's nvidia-graphics-drivers source (estimate: names from the
#: archive, the exact Depends closure is not a capture).
DEBIAN_535_INSTALLED = (
    "nvidia-smi",
    "libnvidia-ml1",
    "nvidia-persistenced",
    "nvidia-alternative",
    "nvidia-kernel-common",
    "nvidia-support",
    "libnvidia-cfg1",
)


def _deployed_files(expected: Expected, caps: list[tuple[str, float]]) -> dict[str, str]:
    from deploys.nvidia_driver import PIN_PATTERNS, UNATTENDED_BLACKLIST
    from tuning.render import files

    config = expected.config
    specs = [
        files.settings_unit(config, caps, use_tuner=False),
        files.grub_fragment(),
        files.nouveau_blacklist(),
        files.persistenced_dropin(config.base.service_user),
        files.unattended_blacklist(UNATTENDED_BLACKLIST),
        files.driver_pin(PIN_PATTERNS, config.driver.branch, config.driver.source),
    ]
    return {spec.dest: spec.render() for spec in specs}


DEPLOYED_FILE_CHECKS = (
    gpu_settings_checks.test_gpu_settings_unit_holds_the_caps_per_uuid,
    pcie_checks.test_grub_fragment_sets_aspm_policy,
    driver_checks.test_nouveau_blacklisted,
    driver_checks.test_persistenced_dropin_turns_persistence_on,
    driver_checks.test_nvidia_packages_kept_out_of_unattended_upgrades,
    driver_checks.test_driver_branch_is_pinned,
)


@pytest.mark.parametrize("check", DEPLOYED_FILE_CHECKS, ids=lambda c: c.__name__)
def test_file_checks_pass_on_the_deployed_files(check) -> None:
    expected = host_config("ci.yaml", "ci-target")
    tree = _deployed_files(expected, [(GPU_1, 280.0), (GPU_2, 250.0)])
    check(FileHost(tree, DEBIAN_535_INSTALLED), expected)


def test_caps_check_fails_on_a_unit_with_other_caps() -> None:
    """ci.yaml asks 280 W and 250 W; a unit holding 300 W for the first GPU is not the host."""
    expected = host_config("ci.yaml", "ci-target")
    tree = _deployed_files(expected, [(GPU_1, 300.0), (GPU_2, 250.0)])
    with pytest.raises(AssertionError):
        DEPLOYED_FILE_CHECKS[0](FileHost(tree), expected)


def test_unattended_check_fails_on_a_driver_package_it_does_not_hold() -> None:
    expected = host_config("ci.yaml", "ci-target")
    tree = _deployed_files(expected, [(GPU_1, 280.0), (GPU_2, 250.0)])
    path = "/etc/apt/apt.conf.d/51rigforge-nvidia-unattended"
    tree[path] = tree[path].replace('"^libnvidia-";', "")
    with pytest.raises(AssertionError, match=r"libnvidia-\S+ is not held back"):
        DEPLOYED_FILE_CHECKS[4](FileHost(tree, DEBIAN_535_INSTALLED), expected)
