"""What may reach a serving unit: the models file and the shared checks refuse injection and
secrets, and let ordinary engine flags through."""

from __future__ import annotations

import pytest
import yaml

from inventory.models import parse_models
from tuning.errors import ConfigError
from tuning.serving_checks import secret_arg_problem, text_problem, unit_name_collisions


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
