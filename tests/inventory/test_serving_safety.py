"""What may reach a serving unit: the models file and the shared checks refuse injection and
secrets, and let ordinary engine flags through."""

from __future__ import annotations

import pytest
import yaml

from inventory.models import parse_models
from tuning.core.checks import secret_arg_problem, text_problem, unit_name_collisions
from tuning.errors import ConfigError


def models_text(**overrides: object) -> str:
    entry = {
        "name": "m",
        "engine": "vllm",
        "weights": "Qwen/QwQ-32B",
        "params_b": 32.8,
        "quant_bits": 4,
        "layers": 64,
        "attention_heads": 40,
        "kv_heads": 8,
        "head_dim": 128,
        "context": 8192,
        **overrides,
    }
    return yaml.safe_dump({"models": [entry]})


def test_clean_models_file_parses() -> None:
    models = parse_models(models_text(extra_args=["--enable-prefix-caching", "--tokenizer=x"]))
    assert models.models[0].extra_args == ("--enable-prefix-caching", "--tokenizer=x")


@pytest.mark.parametrize("weights", ["w\nExecStartPre=+/bin/sh -c id", 'w"x', "w\\x", "w\x00"])
def test_models_file_refuses_unsafe_weights(weights: str) -> None:
    with pytest.raises(ConfigError, match=r"models\[0\]\.weights"):
        parse_models(models_text(weights=weights))


@pytest.mark.parametrize("arg", ["--x\nUser=root", '--x="y"', "--x\\y"])
def test_models_file_refuses_unsafe_extra_args(arg: str) -> None:
    with pytest.raises(ConfigError, match=r"models\[0\]\.extra_args\[1\]"):
        parse_models(models_text(extra_args=["--ok", arg]))


@pytest.mark.parametrize(
    "arg",
    [
        "--api-key",
        "--api-key=abc",
        "--API_KEY=abc",
        "--hf-token",
        "--token",
        "--hf-token=abc",
        "--api-key-file",
        "VLLM_API_KEY=abc",
        "hf_token=abc",
        "openai.api_key=abc",
        "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ012345",
        "sk-abcdefghijklmnopqrstuvwxyz",
    ],
)
def test_secret_engine_args_are_refused(arg: str) -> None:
    assert secret_arg_problem(arg) is not None
    with pytest.raises(ConfigError, match="api_key_file"):
        parse_models(models_text(extra_args=[arg]))


@pytest.mark.parametrize(
    "arg",
    [
        "--tokenizer",
        "--tokenizer-mode=auto",
        "--max-num-batched-tokens",
        "--skip-tokenizer-init",
        "--kv-cache-dtype=fp8",
        "--ssl-keyfile=/etc/ssl/k.pem",
        "--enable-prefix-caching",
        "8192",
        "a=b",
    ],
)
def test_ordinary_engine_args_pass(arg: str) -> None:
    assert secret_arg_problem(arg) is None
    assert text_problem(arg) is None


def test_unit_name_collisions() -> None:
    found = unit_name_collisions([("a/b", 0), ("a-b", 0), ("m", 1), ("m-1", 0), ("ok", 0)])
    assert found == [(0, 1, "a-b"), (2, 3, "m-1")]


def test_models_file_refuses_names_that_share_a_unit() -> None:
    first = yaml.safe_load(models_text(name="m", replicas=2))["models"][0]
    second = {**first, "name": "m-1", "replicas": 1}
    with pytest.raises(ConfigError, match=r"rigforge-serve-m-1\.service"):
        parse_models(yaml.safe_dump({"models": [first, second]}))


# -- secret files: private, or a documented placeholder (audit LOW-MEDIUM) --------------------

REAL_KEY = "0123456789abcdef0123456789abcdef"


def _inventory(tmp_path, key_text: str, mode: int, *, opened: bool = False):
    from inventory.validate import collect_issues

    key = tmp_path / "api-key"
    key.write_text(key_text)
    key.chmod(mode)
    bind = "0.0.0.0" if opened else "127.0.0.1"
    serving = {"bind": bind, "open": opened, "api_key_file": "api-key"}
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump({"hosts": {"h": {"ssh": {"host": "x"}, "serving": serving}}}))
    _, issues = collect_issues(inv)
    return [i for i in issues if i.path == "hosts.h.serving.api_key_file"]


def test_world_readable_secret_is_refused_with_chmod_hint(tmp_path) -> None:
    (issue,) = _inventory(tmp_path, REAL_KEY + "\n", 0o644)
    assert "chmod 600" in issue.message
    assert "0644" in issue.message


def test_private_secret_passes(tmp_path) -> None:
    assert _inventory(tmp_path, REAL_KEY + "\n", 0o600) == []
    assert _inventory(tmp_path, REAL_KEY + "\n", 0o400) == []


def test_placeholder_passes_at_any_mode_but_not_when_opened(tmp_path) -> None:
    placeholder = "REPLACE-ME-with-the-output-of-openssl-rand-hex-32\n"
    assert _inventory(tmp_path, placeholder, 0o644) == []
    (issue,) = _inventory(tmp_path, placeholder, 0o600, opened=True)
    assert "placeholder" in issue.message


def test_committed_example_secrets_are_placeholders() -> None:
    from pathlib import Path

    from tuning.core.checks import is_placeholder_secret

    folder = Path(__file__).resolve().parents[2] / "inventory" / "examples" / "secrets"
    files = sorted(p for p in folder.iterdir() if p.is_file())
    assert files
    for path in files:
        assert is_placeholder_secret(path.read_text(encoding="utf-8")), path
