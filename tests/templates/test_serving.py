"""Serving units rendered from a plan: key lines per engine, secrets, and systemd's own score."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.placements import GPU_A, GPU_B, placement
from tuning.errors import ConfigError
from tuning.serving import (
    API_KEY_ENV_FILE,
    HF_TOKEN_FILE,
    api_key_env_text,
    cpu_ranges,
    read_api_key,
    render_serving_units,
    render_unit,
    systemd_quote,
)
from tuning.serving_checks import systemd_exposure

MAX_EXPOSURE = 3.0


ENGINES = ("vllm", "llama.cpp", "sglang")


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_gets_gpus_numa_user_and_hardening(engine: str) -> None:
    unit = directives(render_unit(placement(engine)))
    env = unit["Environment"]
    assert f'"CUDA_VISIBLE_DEVICES={GPU_A},{GPU_B}"' in env
    assert '"CUDA_DEVICE_ORDER=PCI_BUS_ID"' in env
    assert '"NCCL_P2P_DISABLE=1"' in env
    assert unit["NUMAPolicy"] == ["bind"]
    assert unit["NUMAMask"] == ["1"]
    assert unit["CPUAffinity"] == ["16-19 48-49"]
    assert unit["User"] == ["rigforge"]
    assert unit["Group"] == ["rigforge"]
    assert unit["Restart"] == ["on-failure"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
        "SystemCallArchitectures": "native",
        "DevicePolicy": "closed",
        "CapabilityBoundingSet": "",
    }.items():
        assert unit[key] == [value], key
    assert "char-nvidia-frontend rw" in unit["DeviceAllow"]
    assert unit["ReadWritePaths"] == ["/var/cache/rigforge"]
    assert "EnvironmentFile" not in unit
    exec_start = unit["ExecStart"][0]
    assert re.search(r"--host 127\.0\.0\.1 --port 8001\b", exec_start)
    assert "--enable-prefix-caching" in exec_start


def test_vllm_flags() -> None:
    exec_start = directives(render_unit(placement("vllm")))["ExecStart"][0]
    assert exec_start.startswith("/opt/rigforge/vllm/bin/vllm serve Qwen/QwQ-32B")
    for flag in (
        "--tensor-parallel-size 2",
        "--pipeline-parallel-size 1",
        "--gpu-memory-utilization 0.90",
        "--max-model-len 32768",
        "--max-num-seqs 4",
        "--disable-custom-all-reduce",
    ):
        assert flag in exec_start


def test_vllm_with_p2p_keeps_custom_all_reduce_and_nccl_p2p() -> None:
    text = render_unit(placement("vllm", p2p=True, worst_link="PIX"))
    assert "NCCL_P2P_DISABLE" not in text
    assert "--disable-custom-all-reduce" not in text


def test_llama_cpp_flags_layer_split() -> None:
    text = render_unit(placement("llama.cpp", tp=1, pp=2, kv_cache_bits=8))
    exec_start = directives(text)["ExecStart"][0]
    assert "-sm layer" in exec_start
    assert "--tensor-split 1,1" in exec_start
    assert "-dev CUDA0,CUDA1" in exec_start
    assert "-c 131072 -np 4" in exec_start  # 4 slots × 32768 tokens
    assert "-ctk q8_0 -ctv q8_0" in exec_start


def test_llama_cpp_row_split_for_tp() -> None:
    exec_start = directives(render_unit(placement("llama.cpp")))["ExecStart"][0]
    assert "-sm row" in exec_start


def test_sglang_flags() -> None:
    exec_start = directives(render_unit(placement("sglang")))["ExecStart"][0]
    assert "-m sglang.launch_server --model-path Qwen/QwQ-32B" in exec_start
    assert "--tp-size 2 --pp-size 1" in exec_start
    assert "--mem-fraction-static 0.90" in exec_start


def test_opened_unit_reads_key_from_environment_file_only() -> None:
    text = render_unit(placement("vllm"), bind="0.0.0.0", api_key_file="/etc/rigforge/secrets/k")
    unit = directives(text)
    assert unit["EnvironmentFile"] == ["/etc/rigforge/secrets/k"]
    assert "--host 0.0.0.0" in unit["ExecStart"][0]
    assert "api-key" not in unit["ExecStart"][0]
    assert "API_KEY=" not in text


def test_opened_without_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="api_key_file"):
        render_unit(placement("vllm"), bind="0.0.0.0")


def test_sglang_cannot_be_opened() -> None:
    with pytest.raises(ConfigError, match="command line"):
        render_unit(placement("sglang"), bind="10.0.0.2", api_key_file="/k")


def test_no_egress_limits_to_loopback() -> None:
    unit = directives(render_unit(placement("vllm"), egress=False))
    assert unit["IPAddressDeny"] == ["any"]
    assert unit["IPAddressAllow"] == ["localhost"]


def test_unit_paths_per_model_and_replica() -> None:
    plan = {"placements": [placement().to_yaml(), placement(replica=1, port=8002).to_yaml()]}
    units = render_serving_units(plan, service_user="llm")
    assert sorted(units) == [
        "/etc/systemd/system/rigforge-serve-qwq-32b-1.service",
        "/etc/systemd/system/rigforge-serve-qwq-32b.service",
    ]
    assert all("User=llm\n" in text for text in units.values())


def test_quoting_escapes_systemd_specifiers() -> None:
    assert systemd_quote("a b") == '"a b"'
    assert systemd_quote("100%") == "100%%"
    assert systemd_quote("$HOME") == '"$$HOME"'


def test_cpu_ranges() -> None:
    assert cpu_ranges((0, 1, 2, 3, 8, 10, 11)) == "0-3 8 10-11"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
@pytest.mark.parametrize(
    ("engine", "opened"),
    # sglang is never opened: render_unit refuses it (its API key goes only on the command line).
    [(e, False) for e in ENGINES] + [(e, True) for e in ENGINES if e != "sglang"],
)
def test_systemd_analyze_security_exposure(engine: str, opened: bool, tmp_path: Path) -> None:
    kwargs: dict[str, object] = {"requires_gpu_settings": True, "hf_token_file": HF_TOKEN_FILE}
    if opened:
        kwargs.update(bind="0.0.0.0", api_key_file=API_KEY_ENV_FILE)
    path = tmp_path / f"rigforge-serve-{engine.replace('.', '-')}.service"
    path.write_text(render_unit(placement(engine), **kwargs))
    exposure = systemd_exposure(path)
    assert exposure is not None, "systemd-analyze printed no exposure"
    print(f"{path.name}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE


def test_minimal_hand_written_plan_renders(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "schema_version: 1\nplacements:\n"
        f"  - {{model: m, engine: vllm, gpus: [{GPU_A}], tp: 1, pp: 1, numa_node: 0, port: 8000}}\n"
    )
    (text,) = render_serving_units(path).values()
    assert "ExecStart=/opt/rigforge/vllm/bin/vllm serve m " in text
    assert "NUMAMask=0\n" in text


def test_plan_that_is_not_a_plan_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("placements: []\n")
    with pytest.raises(ConfigError, match="schema_version"):
        render_serving_units(path)


# -- unit-file injection (audit: a newline or quote in plan text reached root) ----------------

INJECTIONS = (
    "m\nExecStartPre=+/bin/sh -c id",
    "m\rExecStartPre=+/bin/sh -c id",
    "m\x00",
    "m\u2028x",
)


@pytest.mark.parametrize("text", INJECTIONS)
@pytest.mark.parametrize("field", ["model", "weights"])
def test_control_characters_in_names_are_refused(field: str, text: str) -> None:
    with pytest.raises(ConfigError, match="control character"):
        render_unit(placement("vllm", **{field: text}))


@pytest.mark.parametrize("engine", ENGINES)
def test_control_characters_in_extra_args_are_refused(engine: str) -> None:
    with pytest.raises(ConfigError, match=r"extra_args\[1\]"):
        render_unit(placement(engine, extra_args=("--ok", "--x\nUser=root")))


@pytest.mark.parametrize("char", ['"', "\\"])
def test_quotes_in_names_are_refused(char: str) -> None:
    with pytest.raises(ConfigError, match="quoting"):
        render_unit(placement("vllm", model=f"m{char}x"))


@pytest.mark.parametrize(
    "gpu", [f'{GPU_A}"\nUser=root', f"{GPU_A},GPU-x", "GPU-a b", "0", f"{GPU_A}\n"]
)
def test_gpus_that_are_not_ids_are_refused(gpu: str) -> None:
    with pytest.raises(ConfigError, match=r"gpus\[1\]"):
        render_unit(placement("vllm", gpus=(GPU_A, gpu)))


def test_bus_ids_and_mig_ids_are_accepted() -> None:
    text = render_unit(placement("vllm", gpus=("00000000:41:00.0", "MIG-1234abcd-56ef-0000")))
    assert 'CUDA_VISIBLE_DEVICES=00000000:41:00.0,MIG-1234abcd-56ef-0000"' in text


@pytest.mark.parametrize(
    ("field", "value"),
    [("numa_node", "1\nUser=root"), ("cpu_list", ("0\nUser=root",)), ("gpu_indices", ("1\n",))],
)
def test_numbers_must_be_integers(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        render_unit(placement("vllm", **{field: value}))


def test_worst_link_newline_is_refused() -> None:
    with pytest.raises(ConfigError, match="worst_link"):
        render_unit(placement("vllm", worst_link="SYS\nUser=root"))


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "a\tb", "\x1b[0m"])
def test_systemd_quote_refuses_control_characters(text: str) -> None:
    with pytest.raises(ConfigError, match="control character"):
        systemd_quote(text)


def test_description_and_comments_escape_specifiers() -> None:
    text = render_unit(placement("vllm", model="m%n"))
    assert "Description=rigforge: serve m%%n with vllm on port 8001\n" in text
    assert "from the placement plan): m%%n\n" in text
    assert "--served-model-name m%%n" in text


def _no_injected_directive(text: str) -> None:
    keys = [ln.split("=", 1)[0] for ln in text.splitlines() if "=" in ln and ln[:1] != "#"]
    assert "ExecStartPre" not in keys
    assert [k for k in keys if k == "User"] == ["User"]


@pytest.mark.parametrize(
    "entry",
    [
        {"model": "m\nExecStartPre=+/bin/sh -c id"},
        {"weights": "w\nExecStartPre=+/bin/sh -c id"},
        {"extra_args": ["--x\nExecStartPre=+/bin/sh -c id"]},
        {"gpus": [f'{GPU_A}"\nUser=root\n#']},
        {"numa_node": "0\nUser=root"},
        {"cpu_list": ["0\nUser=root"]},
        {"worst_link": "X\nUser=root"},
    ],
    ids=lambda e: next(iter(e)),
)
def test_plan_file_with_injection_is_refused_with_its_path(entry: dict, tmp_path: Path) -> None:
    row = {"model": "m", "engine": "vllm", "gpus": [GPU_A], "port": 8000, **entry}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "placements": [row]}))
    with pytest.raises(ConfigError, match=str(path)) as caught:
        render_serving_units(path)
    # A text field is named by its YAML path; a number that is not one fails as a whole entry.
    key = next(iter(entry))
    numeric = key in ("numa_node", "cpu_list")
    where = "placements[0]: malformed plan entry" if numeric else f"placements[0].{key}"
    assert where in str(caught.value)
    with pytest.raises(ConfigError):
        render_serving_units({"placements": [row]})


def test_clean_plan_renders_without_extra_directives(tmp_path: Path) -> None:
    (text,) = render_serving_units({"placements": [placement().to_yaml()]}).values()
    _no_injected_directive(text)


# -- API key (audit: a raw key in the EnvironmentFile left vLLM open) -------------------------

KEY = "0123456789abcdef0123456789abcdef"


def test_api_key_env_text_names_every_engine_variable() -> None:
    text = api_key_env_text(KEY + "\n")
    assert text == f"LLAMA_API_KEY={KEY}\nVLLM_API_KEY={KEY}\n"
    # what systemd's EnvironmentFile= parser keeps: NAME=value lines only
    parsed = dict(ln.split("=", 1) for ln in text.splitlines() if "=" in ln)
    assert parsed["VLLM_API_KEY"] == KEY
    assert parsed["LLAMA_API_KEY"] == KEY


@pytest.mark.parametrize(
    "content",
    ["", "\n", "short\n", f"{KEY}\n{KEY}\n", f"VLLM_API_KEY={KEY}\n", f"{KEY} x\n", f'"{KEY}"'],
)
def test_read_api_key_refuses_what_would_leave_the_endpoint_open(
    content: str, tmp_path: Path
) -> None:
    path = tmp_path / "api-key"
    path.write_text(content)
    with pytest.raises(ConfigError, match=str(path)):
        read_api_key(path)


def test_read_api_key_returns_the_raw_key(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    path.write_text(KEY + "\n")
    assert read_api_key(path) == KEY


def test_opened_inventory_units_read_the_deploys_env_file() -> None:
    serving = SimpleNamespace(
        plan=None,
        models=[
            SimpleNamespace(
                model="m",
                engine="vllm",
                gpus=[GPU_A],
                tp=1,
                pp=1,
                numa_node=None,
                port=8000,
                args=[],
            )
        ],
        bind="0.0.0.0",
        open=True,
        api_key_file="/local/key",
    )
    (text,) = render_serving_units(serving).values()
    assert f"EnvironmentFile={API_KEY_ENV_FILE}\n" in text
    assert API_KEY_ENV_FILE == "/etc/rigforge/secrets/api-key.env"


def test_deploy_writes_the_env_file_from_the_raw_key(tmp_path: Path) -> None:
    """The raw key file becomes one ``NAME=key`` line per engine variable: ``VLLM_API_KEY``
    (vLLM's documented environment variable for ``--api-key``) and ``LLAMA_API_KEY``
    (llama-server's, per its README); a raw key alone would be a line systemd ignores."""
    from deploys.serving import api_key_env_file, secret_files
    from inventory.schema import HostConfig

    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n")
    config = HostConfig.model_validate(
        {
            "ssh": {"host": "127.0.0.1"},
            "serving": {"bind": "0.0.0.0", "open": True, "api_key_file": str(key_file)},
        }
    )
    assert api_key_env_file(config) == (
        "/etc/rigforge/secrets/api-key.env",
        f"LLAMA_API_KEY={KEY}\nVLLM_API_KEY={KEY}\n",
    )
    assert secret_files(config, "/etc/rigforge/secrets") == {}  # never copied verbatim
    key_file.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        api_key_env_file(config)


# -- serving waits for the caps (audit: serving started when the caps failed) ----------------

HAND = {"model": "m", "engine": "vllm", "gpus": [GPU_A], "port": 8000}


def _host(tmp_path: Path, **extra: object) -> object:
    from inventory.schema import HostConfig

    return HostConfig.model_validate(
        {"ssh": {"host": "127.0.0.1"}, "serving": {"models": [HAND]}, **extra}
    )


def _requires(units: dict[str, str]) -> list[list[str]]:
    return [directives(text).get("Requires", []) for text in units.values()]


def test_hand_caps_make_serving_require_the_gpu_settings_unit(tmp_path: Path) -> None:
    config = _host(tmp_path, gpus=[{"uuid": GPU_A, "power_cap_w": 250}])
    units = render_serving_units(config.serving, host_config=config)
    assert _requires(units) == [["rigforge-gpu-settings.service"]]
    text = next(iter(units.values()))
    assert "rigforge-gpu-settings.service" in directives(text)["After"][0]


def test_profile_caps_make_serving_require_the_gpu_settings_unit(tmp_path: Path) -> None:
    """A host that names a profile gets caps: a profile lists a ``cap_w`` for each of its GPUs
    (``tuning.core.profile``), and one that does not parse is refused by the deploy — so the
    serving unit must wait for the GPU-settings unit either way."""
    profile = tmp_path / "profile.yaml"
    profile.write_text("not: a profile\n")
    config = _host(tmp_path, power={"profile": str(profile)})
    assert _requires(render_serving_units(config.serving, host_config=config)) == [
        ["rigforge-gpu-settings.service"]
    ]


def test_no_caps_no_requires(tmp_path: Path) -> None:
    config = _host(tmp_path)
    assert _requires(render_serving_units(config.serving, host_config=config)) == [[]]
    assert "Requires=" not in render_unit(placement())


# -- secrets as engine args (audit MEDIUM) -----------------------------------------------------


@pytest.mark.parametrize(
    "arg", ["--api-key", "--api-key=abc", "--hf-token", "--token", "HF_TOKEN=abc", "api_key=x"]
)
@pytest.mark.parametrize("engine", ENGINES)
def test_renderer_refuses_secrets_in_extra_args(engine: str, arg: str) -> None:
    with pytest.raises(ConfigError, match="api_key_file"):
        render_unit(placement(engine, extra_args=("--enable-prefix-caching", arg, "v")))


# -- the HF token reaches the engine as a credential (audit MEDIUM) ---------------------------


def test_hf_token_is_a_credential_when_the_inventory_sets_one(tmp_path: Path) -> None:
    token = tmp_path / "hf-token"
    token.write_text("hf_placeholder\n")
    config = _host(tmp_path, secrets={"hf_token_file": str(token)})
    (text,) = render_serving_units(config.serving, host_config=config).values()
    unit = directives(text)
    assert unit["LoadCredential"] == [f"hf-token:{HF_TOKEN_FILE}"]
    assert '"HF_TOKEN_PATH=%d/hf-token"' in unit["Environment"]
    assert "hf_placeholder" not in text


def test_no_hf_token_no_credential(tmp_path: Path) -> None:
    config = _host(tmp_path)
    (text,) = render_serving_units(config.serving, host_config=config).values()
    assert "LoadCredential" not in text
    assert "HF_TOKEN" not in text


def test_hf_token_path_must_be_plain() -> None:
    with pytest.raises(ConfigError, match="hf_token_file"):
        render_unit(placement(), hf_token_file="/x\nUser=root")


def test_renderer_refuses_models_that_share_a_unit() -> None:
    plan = {"placements": [placement(model="a/b").to_yaml(), placement(model="a-b").to_yaml()]}
    with pytest.raises(ConfigError, match=r"rigforge-serve-a-b\.service"):
        render_serving_units(plan)
