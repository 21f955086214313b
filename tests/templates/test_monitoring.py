"""Monitoring files a deploy writes: the exporter unit, the enforcement timer, Prometheus config.

Rendered from the inventory locally (the same FileSpecs the deploy puts), scored by the real
``systemd-analyze security`` and checked by the real ``promtool check config`` where present.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploys.monitoring import RULES_SOURCE
from inventory.schema import HostConfig
from tuning.render.files import (
    ENFORCE_INTERVAL_MIN,
    enforce_units,
    exporter_unit,
    node_exporter_default,
    prometheus_files,
    textfile_units,
)
from tuning.serving_checks import systemd_exposure

#: The exporter is an unprivileged network service: the same bar as the serving units.
MAX_EXPORTER_EXPOSURE = 3.0
#: The enforcement oneshot sets power limits as root, like rigforge-gpu-settings.service.
MAX_ENFORCE_EXPOSURE = 6.0
GPU = "GPU-e27a7f6a-39d3-e00c-de0c-68b2a056077b"


def host(monitoring: dict | None = None, **extra: object) -> HostConfig:
    return HostConfig.model_validate(
        {
            "ssh": {"host": "127.0.0.1"},
            "monitoring": {"exporter": True, **(monitoring or {})},
            **extra,
        }
    )


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def exec_args(unit: str) -> list[str]:
    (line,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_exporter_unit_listens_on_localhost_by_default() -> None:
    unit = exporter_unit(host(), profile=True, plan=False).render()
    assert exec_args(unit) == [
        "/opt/rigforge/venv/bin/rigforge",
        "exporter",
        "--rig",
        "nvml",
        "--listen",
        "127.0.0.1:9835",
        "--kernel-log",
        "journal",
        "--enforcement-state",
        "/var/lib/rigforge/state/enforce.json",
        "--profile",
        "/etc/rigforge/profile.yaml",
    ]
    body = lines(unit)
    assert "User=rigforge" in body
    assert "IPAddressDeny=any" in body
    assert "CapabilityBoundingSet=" in body
    assert "SupplementaryGroups=systemd-journal" in body


def test_opened_exporter_has_no_address_deny() -> None:
    config = host({"listen": "0.0.0.0:9835", "open": True})
    unit = exporter_unit(config, profile=False, plan=True).render()
    assert "--listen" in exec_args(unit)
    assert exec_args(unit)[exec_args(unit).index("--listen") + 1] == "0.0.0.0:9835"
    assert "--plan" in exec_args(unit)
    assert not any(ln.startswith("IPAddressDeny=") for ln in lines(unit))


def test_sim_exporter_runs_load_and_reads_a_control_file() -> None:
    unit = exporter_unit(host({"rig": "sim:reference"}), profile=False, plan=False).render()
    args = exec_args(unit)
    assert args[args.index("--rig") + 1] == "sim:reference"
    assert args[args.index("--sim-workload") + 1] == "decode"
    assert "--sim-control" in args


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
@pytest.mark.parametrize("opened", [False, True])
def test_exporter_exposure(opened: bool, tmp_path: Path) -> None:
    monitoring = {"listen": "0.0.0.0:9835", "open": True} if opened else {}
    path = tmp_path / "rigforge-exporter.service"
    path.write_text(exporter_unit(host(monitoring), profile=True, plan=True).render())
    exposure = systemd_exposure(path)
    assert exposure is not None, "systemd-analyze printed no exposure"
    print(f"rigforge-exporter.service (opened={opened}): exposure {exposure}")
    assert exposure <= MAX_EXPORTER_EXPOSURE


def _enforced(**monitoring: object) -> HostConfig:
    return host(monitoring, power={"profile": "profile.yaml", "enforce": True})


def test_enforcement_timer_reapplies_the_profile_with_a_record() -> None:
    service, timer = (spec.render() for spec in enforce_units(_enforced()))
    assert exec_args(service) == [
        "/opt/rigforge/venv/bin/rigforge",
        "apply",
        "/etc/rigforge/profile.yaml",
        "--rig",
        "nvml",
        "--record",
        "/var/lib/rigforge/state/enforce.json",
    ]
    assert "ConditionPathExists=/dev/nvidiactl" in lines(service)
    assert f"OnUnitActiveSec={ENFORCE_INTERVAL_MIN}min" in lines(timer)
    assert "WantedBy=timers.target" in lines(timer)


def test_enforcement_interval_is_shorter_than_the_cap_drift_alert() -> None:
    """The timer fixes a reverted cap before RigforgeGpuCapDrift's ``for`` runs out."""
    rules = yaml.safe_load(RULES_SOURCE.read_text())["groups"]
    drift = next(r for g in rules for r in g["rules"] if r["alert"] == "RigforgeGpuCapDrift")
    assert drift["for"].endswith("m")
    assert int(drift["for"].removesuffix("m")) > ENFORCE_INTERVAL_MIN


def test_sim_enforcement_has_no_nvidia_condition() -> None:
    service = enforce_units(_enforced(rig="sim:reference"))[0].render()
    assert not any(ln.startswith("ConditionPathExists=") for ln in lines(service))
    assert exec_args(service)[exec_args(service).index("--rig") + 1] == "sim:reference"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_enforcement_exposure(tmp_path: Path) -> None:
    path = tmp_path / "rigforge-enforce-caps.service"
    path.write_text(enforce_units(_enforced())[0].render())
    exposure = systemd_exposure(path)
    assert exposure is not None
    print(f"rigforge-enforce-caps.service: exposure {exposure}")
    assert exposure <= MAX_ENFORCE_EXPOSURE


def _plan(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "schema_version: 1\nplacements:\n"
        f"  - {{model: Qwen/Qwen3-32B, engine: vllm, gpus: [{GPU}], tp: 1, pp: 1, port: 8001}}\n"
    )
    return path


def test_prometheus_scrapes_the_exporter_and_each_engine(tmp_path: Path) -> None:
    config = host({"prometheus": True}, serving={"plan": str(_plan(tmp_path))})
    scrape, default = prometheus_files(config)
    doc = yaml.safe_load(scrape.render())
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert jobs["rigforge"]["static_configs"] == [{"targets": ["127.0.0.1:9835"]}]
    assert jobs["rigforge-engines"]["static_configs"] == [
        {
            "targets": ["127.0.0.1:8001"],
            "labels": {
                "model": "Qwen/Qwen3-32B",
                "unit": "rigforge-serve-Qwen-Qwen3-32B.service",  # unit_name: "/" becomes "-"
                "engine": "vllm",
            },
        }
    ]
    assert doc["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert doc["global"]["scrape_interval"] == "15s"
    assert 'ARGS="--web.listen-address=127.0.0.1:9090"' in lines(default.render())


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool absent (Debian prometheus)")
def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    config = host({"prometheus": True}, serving={"plan": str(_plan(tmp_path))})
    path = tmp_path / "prometheus.yml"
    path.write_text(prometheus_files(config)[0].render())
    result = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("engine", "flag"), [("llama.cpp", "--metrics"), ("sglang", "--enable-metrics")]
)
def test_engines_whose_metrics_are_off_by_default_turn_them_on(engine: str, flag: str) -> None:
    """llama-server (``--metrics``) and SGLang (``--enable-metrics``) serve /metrics only when
    asked; vLLM always does. The scrape config's rigforge-engines job needs them on."""
    from tuning.core.plan import Placement
    from tuning.serving import render_unit

    placement = Placement.from_yaml(
        {"model": "m", "engine": engine, "gpus": [GPU], "tp": 1, "pp": 1, "port": 8001}
    )
    unit = render_unit(placement).replace("\\\n", " ")  # join continuation lines
    (exec_line,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    assert flag in exec_line.split()


def test_prometheus_listens_where_the_inventory_says() -> None:
    """``monitoring.prometheus_listen`` reaches both the ARGS Debian's unit reads and the
    scrape config's own ``prometheus`` job (a second Prometheus on a shared box: port 19090)."""
    config = host({"prometheus": True, "prometheus_listen": "127.0.0.1:19090"})
    scrape, default = prometheus_files(config)
    jobs = {j["job_name"]: j for j in yaml.safe_load(scrape.render())["scrape_configs"]}
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["127.0.0.1:19090"]}]
    assert 'ARGS="--web.listen-address=127.0.0.1:19090"' in lines(default.render())


def test_a_host_whose_gpus_are_a_sim_rig_is_watched_on_it() -> None:
    """``tuner.sim_rig`` (CI): the boot unit applies the profile to /etc/rigforge/tune-rig.yaml,
    so the exporter (with the sim-only control file) and the enforcement timer use that rig;
    without it, ``monitoring.rig`` (nvml: no sim control)."""
    sim_rig = str(Path("inventory/examples/rigs/ci-2x3090.yaml").resolve())
    config = host(
        tuner={"install": True, "sim_rig": sim_rig},
        power={"profile": "p.yaml", "enforce": True},
    )
    exec_start = shlex.split(_exec_start(exporter_unit(config, profile=True, plan=False).render()))
    assert exec_start[exec_start.index("--rig") + 1] == "/etc/rigforge/tune-rig.yaml"
    assert "--sim-control" in exec_start
    service = enforce_units(config)[0].render()
    assert "--rig /etc/rigforge/tune-rig.yaml" in _exec_start(service)
    plain = shlex.split(_exec_start(exporter_unit(host(), profile=False, plan=False).render()))
    assert plain[plain.index("--rig") + 1] == "nvml"
    assert "--sim-control" not in plain


def _exec_start(unit_text: str) -> str:
    return next(ln for ln in unit_text.splitlines() if ln.startswith("ExecStart=")).split("=", 1)[1]


def test_textfile_service_writes_one_scrape_for_node_exporter() -> None:
    """``monitoring.textfile``: the same sources as the exporter unit, ``--textfile`` in place
    of ``--listen``, into Debian's textfile folder (``/var/lib/prometheus/node-exporter``, the
    package's ``--collector.textfile.directory``), the only place it may write."""
    config = host({"exporter": False, "textfile": True, "textfile_interval_s": 30})
    service, timer = (spec.render() for spec in textfile_units(config, profile=True, plan=True))
    assert exec_args(service) == [
        "/opt/rigforge/venv/bin/rigforge",
        "exporter",
        "--rig",
        "nvml",
        "--textfile",
        "/var/lib/prometheus/node-exporter/rigforge.prom",
        "--kernel-log",
        "journal",
        "--enforcement-state",
        "/var/lib/rigforge/state/enforce.json",
        "--profile",
        "/etc/rigforge/profile.yaml",
        "--plan",
        "/etc/rigforge/plan.yaml",
    ]
    body = lines(service)
    assert "ProtectSystem=strict" in body
    assert "ReadWritePaths=/var/lib/prometheus/node-exporter" in body
    assert "CapabilityBoundingSet=" in body
    assert "UMask=0022" in body  # node-exporter runs as user prometheus
    assert "OnUnitActiveSec=30s" in lines(timer)
    assert "AccuracySec=1s" in lines(timer)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_textfile_service_exposure(tmp_path: Path) -> None:
    """A root oneshot that writes one folder: no more exposed than the enforcement oneshot."""
    service = textfile_units(host({"textfile": True}), profile=False, plan=False)[0]
    path = tmp_path / "rigforge-textfile.service"
    path.write_text(service.render())
    exposure = systemd_exposure(path)
    assert exposure is not None
    print(f"rigforge-textfile.service exposure {exposure}")
    assert exposure <= MAX_ENFORCE_EXPOSURE


def test_node_exporter_listens_on_localhost_and_is_scraped() -> None:
    """Debian's node-exporter listens on every address (``:9100``) unless told; the deploy's
    ARGS bind it to ``monitoring.node_exporter_listen`` and name the textfile folder, and
    Prometheus scrapes it as job ``node``."""
    config = host({"prometheus": True, "node_exporter": True, "textfile": True})
    default = lines(node_exporter_default(config).render())
    assert default == [
        'ARGS="--web.listen-address=127.0.0.1:9100 '
        '--collector.textfile.directory=/var/lib/prometheus/node-exporter"'
    ]
    scrape = yaml.safe_load(prometheus_files(config)[0].render())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    assert jobs["node"]["static_configs"] == [{"targets": ["127.0.0.1:9100"]}]
    textfile_only = host({"exporter": False, "prometheus": True, "node_exporter": True})
    scrape = yaml.safe_load(prometheus_files(textfile_only)[0].render())
    assert {j["job_name"] for j in scrape["scrape_configs"]} == {"prometheus", "node"}
