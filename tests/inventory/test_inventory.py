"""The inventory: examples validate, the loader's host data, defaults, and the pyinfra path."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from inventory.host_checks import check_host
from inventory.loader import host_data, pyinfra_hosts
from inventory.schema import DATA_KEY, HostConfig, host_config, section_defaults
from inventory.validate import load_inventory
from tests.conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "inventory" / "examples"


def test_reference_example_is_valid_and_resolves_local_paths() -> None:
    loaded = load_inventory(EXAMPLES / "reference.yaml")
    ws1 = loaded.hosts["ws1"]
    assert len(ws1.gpu_list) == 6
    assert sum(g.memory_total_mib or 0 for g in ws1.gpu_list) >= 200 * 1024
    assert {g.memory_total_mib for g in ws1.gpu_list} == {49140, 24576, 24564}
    assert ws1.driver.source == "cuda-repo"
    assert ws1.driver.branch == "570"
    assert ws1.cuda is not None
    assert ws1.cuda.version == "12.8"
    assert ws1.power.profile == str(EXAMPLES / "host_data/ws1/profile.yaml")
    assert ws1.secrets.hf_token_file == str(EXAMPLES / "secrets/hf-token")


#: Default power limits of the reference cards (tuning/backends/presets.yaml).
DEFAULT_LIMIT_W = {
    "NVIDIA GeForce RTX 3090": 350,
    "NVIDIA RTX A6000": 300,
    "NVIDIA GeForce RTX 4090": 450,
    "NVIDIA RTX 6000 Ada Generation": 300,
}


def test_reference_defaults_do_not_fit_circuit_but_profile_does() -> None:
    """The article's point: default limits overload circuit-a; the profile's caps fit it."""
    ws1 = load_inventory(EXAMPLES / "reference.yaml").hosts["ws1"]
    at_default = [
        {**g.model_dump(mode="json"), "power_cap_w": DEFAULT_LIMIT_W[g.name or ""]}
        for g in ws1.gpu_list
    ]
    raw = {**ws1.model_dump(mode="json"), "gpus": at_default, "power": {"profile": None}}
    issues = check_host("ws1", HostConfig.model_validate(raw))
    assert [i.path for i in issues] == ["hosts.ws1.circuits[0]"]
    assert "1587 W" in issues[0].message


def test_reference_example_is_the_simulated_reference_rig() -> None:
    """UUIDs, bus ids, ranges and the profile's fingerprint match ``sim:reference``."""
    from tuning.backends import RIGS_DIR, open_rig

    if not (RIGS_DIR / "reference.yaml").is_file():
        pytest.skip("sim:reference not in this checkout")
    snapshot = open_rig("sim:reference").snapshot()
    ws1 = load_inventory(EXAMPLES / "reference.yaml").hosts["ws1"]
    listed = [(g.uuid, g.pci_bus_id, g.min_w, g.max_w) for g in ws1.gpu_list]
    simulated = [(g.uuid, g.pci_bus_id, g.power_min_w, g.power_max_w) for g in snapshot.gpus]
    assert listed == simulated
    profile = yaml.safe_load((EXAMPLES / "host_data/ws1/profile.yaml").read_text())
    assert profile["rig"]["fingerprint"] == snapshot.fingerprint()


def test_ci_example_is_valid_without_ssh_material() -> None:
    loaded = load_inventory(EXAMPLES / "ci.yaml", check_ssh_files=False)
    cfg = loaded.hosts["ci-target"]
    assert (cfg.ssh.host, cfg.ssh.port) == ("127.0.0.1", 2222)
    assert cfg.ssh.key == str(REPO_ROOT / ".target/ssh/id_ed25519")
    assert (cfg.driver.source, cfg.driver.branch) == ("debian", "535")
    assert cfg.cuda is None
    assert not cfg.container_toolkit.enabled
    assert all(g.power_cap_w for g in cfg.gpu_list)


def test_host_data_has_pyinfra_ssh_keys_and_one_rigforge_key() -> None:
    cfg = load_inventory(EXAMPLES / "ci.yaml", check_ssh_files=False).hosts["ci-target"]
    data = host_data(cfg)
    assert data["ssh_hostname"] == "127.0.0.1"
    assert data["ssh_port"] == 2222
    assert data["ssh_user"] == "root"
    assert data["ssh_key"].endswith(".target/ssh/id_ed25519")
    assert data["ssh_known_hosts_file"].endswith(".target/ssh/known_hosts")
    assert data["ssh_strict_host_key_checking"] == "yes"
    assert "_sudo" not in data
    assert [k for k in data if not k.startswith("ssh_")] == [DATA_KEY]
    # Round trip: what the deploy reads back is what was validated.
    assert host_config(SimpleNamespace(data=data, name="ci-target")) == cfg


def test_sudo_user_gets_sudo_data() -> None:
    cfg = HostConfig.model_validate({"ssh": {"host": "192.0.2.1", "user": "admin", "sudo": True}})
    assert host_data(cfg)["_sudo"] is True


def test_host_config_names_the_loader_when_data_is_missing() -> None:
    with pytest.raises(KeyError, match=r"inventory\.loader"):
        host_config(SimpleNamespace(data={}, name="x"))


def test_minimal_host_is_valid_with_every_default(tmp_path: Path) -> None:
    path = tmp_path / "min.yaml"
    path.write_text("hosts:\n  box:\n    ssh: {host: 127.0.0.1}\n")
    cfg = load_inventory(path).hosts["box"]
    dumped = cfg.model_dump(mode="json")
    assert dumped["gpus"] == "discover"
    assert {k: v for k, v in dumped.items() if k != "ssh"} == section_defaults()
    assert set(section_defaults()) == set(HostConfig.model_fields) - {"ssh"}


def test_yaml_numbers_for_branch_and_cuda_version_are_kept_as_text(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "hosts": {
                    "b": {
                        "ssh": {"host": "127.0.0.1"},
                        "driver": {"branch": 570},
                        "cuda": {"version": 12.8},
                    }
                }
            }
        )
    )
    cfg = load_inventory(path).hosts["b"]
    assert (cfg.driver.branch, cfg.cuda and cfg.cuda.version) == ("570", "12.8")


def test_cuda_version_12_10_is_not_read_as_12_1(tmp_path: Path) -> None:
    """YAML 1.1 reads ``12.10`` as the float 12.1; CUDA 12.10 is not CUDA 12.1."""
    path = tmp_path / "inv.yaml"
    path.write_text("hosts:\n  b:\n    ssh: {host: 127.0.0.1}\n    cuda: {version: 12.10}\n")
    cfg = load_inventory(path).hosts["b"]
    assert cfg.cuda is not None
    assert cfg.cuda.version == "12.10"


def test_missing_ssh_key_is_reported_when_ssh_files_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text("hosts:\n  b:\n    ssh: {host: 127.0.0.1, key: keys/none}\n")
    with pytest.raises(Exception, match=r"hosts\.b\.ssh\.key: file keys/none does not exist"):
        pyinfra_hosts(path)
    assert pyinfra_hosts(path, check_ssh_files=False)[0][0] == "b"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_pyinfra_cli_stops_at_validation_before_connecting(tmp_path: Path) -> None:
    """``pyinfra inventory/<bad>.py …`` prints the validation errors, not a connection error.

    The port has nothing listening: if pyinfra got as far as connecting, it would say so.
    """
    port = _free_port()
    (tmp_path / "bad.yaml").write_text(
        "hosts:\n  ws1:\n"
        f"    ssh: {{host: 127.0.0.1, port: {port}}}\n"
        "    gpus: [{uuid: GPU-30900000-0000-4000-8000-000000000001, max_w: 350,"
        " power_cap_w: 500}]\n"
    )
    (tmp_path / "bad.py").write_text(
        "from inventory.loader import hosts_or_exit\nhosts = hosts_or_exit(__file__, 'bad.yaml')\n"
    )
    pyinfra = Path(sys.executable).with_name("pyinfra")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [str(pyinfra), "-y", str(tmp_path / "bad.py"), "exec", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "hosts.ws1.gpus[0].power_cap_w: 500 is above this GPU's max 350" in output
    assert "Connect" not in output
    assert "connect" not in output.replace("contacted", "")
