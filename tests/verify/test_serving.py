"""Serving: one unit per model the plan (or the hand list) serves, on its GPUs by UUID, bound
where the inventory says, unprivileged and hardened."""

from __future__ import annotations

import re

import pytest

from tests.verify import expect, read
from tests.verify.conftest import Expected

#: How each engine is told what to load and how wide to split it (the engines' CLI docs:
#: ``vllm serve MODEL --tensor-parallel-size N``, ``llama-server -m FILE``,
#: ``python -m sglang.launch_server --model-path M --tp-size N``).
WEIGHTS_FLAG = {"vllm": "serve", "llama.cpp": "-m", "sglang": "--model-path"}
TP_FLAG = {"vllm": "--tensor-parallel-size", "sglang": "--tp-size"}


def served_or_skip(expected: Expected) -> list[expect.Served]:
    __tracebackhide__ = True
    served = expect.served(expected.config)
    if not served:
        pytest.skip("no serving in the inventory (serving.plan or serving.models)")
    return served


def _unit_text(host, served: expect.Served) -> str:
    __tracebackhide__ = True
    f = host.file(f"{expect.UNIT_DIR}/{served.unit}")
    assert f.exists, f"{f.path} is missing: the inventory serves {served.model}"
    return f.content_string


def test_serving_units_run_the_planned_engine_weights_and_binding(host, expected: Expected) -> None:
    """Each unit runs the engine the inventory names on the weights and split it names, bound
    to the NUMA node and CPUs the plan gives (values read from the plan, not rendered)."""
    for served in served_or_skip(expected):
        text = _unit_text(host, served)
        command = read.exec_start(text)
        flag = WEIGHTS_FLAG[served.engine]
        assert re.search(
            rf'(^|\s){re.escape(flag)}\s+"?{re.escape(served.weights)}"?(\s|$)', command
        ), f"{served.unit} does not run {served.engine} on {served.weights}: {command}"
        if served.engine in TP_FLAG:
            assert re.search(rf"{TP_FLAG[served.engine]}\s+{served.tp}(\s|$)", command), (
                f"{served.unit} is not split tp={served.tp}: {command}"
            )
        lines = text.splitlines()
        if served.numa_node is not None:
            assert "NUMAPolicy=bind" in lines, served.unit
            assert f"NUMAMask={served.numa_node}" in lines, served.unit
        if served.cpus:
            affinity = [
                ln.removeprefix("CPUAffinity=") for ln in lines if ln.startswith("CPUAffinity=")
            ]
            assert affinity, f"{served.unit} has no CPUAffinity="
            pinned = expect.cpu_set(",".join(affinity[-1].replace(",", " ").split()))
            assert pinned == frozenset(served.cpus), f"{served.unit} runs on CPUs {affinity[-1]}"


def test_serving_units_select_gpus_by_uuid(host, expected: Expected) -> None:
    for served in served_or_skip(expected):
        lines = read.config_lines(host, f"{expect.UNIT_DIR}/{served.unit}")
        assert 'Environment="CUDA_DEVICE_ORDER=PCI_BUS_ID"' in lines, served.unit
        # Read the GPUs from the unit on the host, not from the inventory: an index there
        # ("0,1") would pick other cards than the inventory means.
        visible = read.environment(lines, "CUDA_VISIBLE_DEVICES")
        assert visible is not None, f"{served.unit} sets no CUDA_VISIBLE_DEVICES"
        on_host = visible.split(",")
        assert all(g.startswith("GPU-") for g in on_host), f"{served.unit}: {visible} not by UUID"
        assert on_host == list(served.gpus), f"{served.unit} runs on {visible}, not {served.gpus}"


def test_serving_units_listen_on_the_inventory_address(host, expected: Expected) -> None:
    serving = expected.config.serving
    for served in served_or_skip(expected):
        text = _unit_text(host, served)
        # What the engine on the host is told, not what the inventory says it should be.
        match = re.search(r'--host\s+"?([^\s"]+)"?\s+--port\s+"?(\d+)', text)
        assert match, f"{served.unit} gives its engine no --host/--port"
        bind, port = match.group(1), int(match.group(2))
        assert (bind, port) == (serving.bind, served.port), (
            f"{served.unit} listens on {bind}:{port}, not {serving.bind}:{served.port}; redeploy"
        )
        if not serving.open:
            assert bind in expect.LOOPBACK, (
                f"{served.unit} binds {bind}; a closed stack binds loopback"
            )
        # An API key on the command line is readable by every local user (ps, /proc).
        assert "--api-key" not in text, f"{served.unit} has an API key on its command line"


def test_serving_units_run_as_the_service_user(host, expected: Expected) -> None:
    user = expected.config.base.service_user
    for served in served_or_skip(expected):
        lines = read.config_lines(host, f"{expect.UNIT_DIR}/{served.unit}")
        assert f"User={user}" in lines, served.unit
        assert f"Group={user}" in lines, served.unit


def test_serving_units_are_hardened(host, expected: Expected) -> None:
    for served in served_or_skip(expected):
        lines = read.config_lines(host, f"{expect.UNIT_DIR}/{served.unit}")
        missing = [h for h in expect.HARDENING if h not in lines]
        assert not missing, f"{served.unit} lacks {missing}"


def test_serving_units_enabled(host, expected: Expected) -> None:
    for served in served_or_skip(expected):
        assert read.unit_enabled(host, served.unit), f"{served.unit} is not enabled"


def _loaded_environment(host, unit: str) -> tuple[list[str], list[str]]:
    """``(EnvironmentFiles, Environment)`` as systemd loaded them for ``unit``, drop-ins included.

    ``systemctl show UNIT -p EnvironmentFiles -p Environment`` prints one
    ``EnvironmentFiles=PATH (ignore_errors=no)`` line per file and one ``Environment=`` line of
    space-separated ``NAME=value`` words (systemd.exec(5); ``systemctl show`` in systemctl(1)).
    """
    __tracebackhide__ = True
    out = host.run(f"systemctl show {unit} -p EnvironmentFiles -p Environment")
    assert out.rc == 0, f"systemctl show {unit}: rc {out.rc}: {out.stderr.strip()}"
    files, variables = [], []
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "EnvironmentFiles" and value:
            files.append(value.split(" (", 1)[0])
        elif key == "Environment":
            variables += value.split()
    return files, variables


def _wildcard_listeners(host, port: int) -> list[str]:
    """The wildcard addresses (every interface) something listens on ``port`` at."""
    __tracebackhide__ = True
    return [w for w in ("0.0.0.0", "::") if host.socket(f"tcp://{w}:{port}").is_listening]


def test_serving_units_read_the_api_key_only_when_open(host, expected: Expected) -> None:
    """Opened (``serving.open``): each unit reads the root-only key file (``EnvironmentFile=``,
    in the file and in what systemd loaded). Bound to loopback: the opposite, so the check
    runs both ways — no key file read, no ``--api-key``/``--api-key-file`` and no key
    variable (:data:`~tests.verify.expect.API_KEY_VARIABLES`) given to the engine, drop-ins
    included, and nothing of a running unit listening on a wildcard address."""
    is_open = expected.config.serving.open
    for served in served_or_skip(expected):
        lines = read.config_lines(host, f"{expect.UNIT_DIR}/{served.unit}")
        files, variables = _loaded_environment(host, served.unit)
        names = {v.split("=", 1)[0] for v in variables}
        if is_open:
            assert f"EnvironmentFile={expect.API_KEY_ENV_FILE}" in lines, served.unit
            assert expect.API_KEY_ENV_FILE in files, (
                f"systemd does not load {expect.API_KEY_ENV_FILE} for {served.unit}: {files}"
            )
            continue
        assert expect.API_KEY_ENV_FILE not in files, (
            f"{served.unit} reads the API key file, but serving is bound to loopback"
        )
        assert not any(ln.startswith("EnvironmentFile=") and "api-key" in ln for ln in lines), (
            f"{served.unit} reads an API key file, but serving is bound to loopback"
        )
        assert not names & set(expect.API_KEY_VARIABLES), (
            f"{served.unit} gives its engine {sorted(names & set(expect.API_KEY_VARIABLES))}"
        )
        assert "--api-key" not in read.exec_start("\n".join(lines)), (
            f"{served.unit} passes an API key (or key file) to a loopback-bound engine"
        )
        if read.unit_active(host, served.unit):
            assert not _wildcard_listeners(host, served.port), (
                f"{served.unit}: port {served.port} is open on "
                f"{_wildcard_listeners(host, served.port)}, beyond this machine"
            )


def test_running_services_listen_on_loopback_only(host, expected: Expected) -> None:
    serving = expected.config.serving
    running = [s for s in served_or_skip(expected) if read.unit_active(host, s.unit)]
    if not running:
        pytest.skip("no serving unit is running here (not started, or no systemd: CI target)")
    for served in running:
        if serving.open:
            assert host.socket(f"tcp://{serving.bind}:{served.port}").is_listening
            continue
        assert host.socket(f"tcp://{serving.bind}:{served.port}").is_listening, (
            f"{served.unit} runs but nothing listens on {serving.bind}:{served.port}"
        )
        wildcard = _wildcard_listeners(host, served.port)
        assert not wildcard, f"port {served.port} is open on {wildcard}, beyond this machine"
