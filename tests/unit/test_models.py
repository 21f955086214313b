"""The models file: schema, defaults, ports, and errors that name the YAML path and the fix."""

from __future__ import annotations

import pytest

from inventory.models import assign_ports, load_models, parse_models
from tuning.errors import ConfigError

GOOD = """
models:
  - name: qwq
    engine: vllm
    weights: Qwen/QwQ-32B
    params_b: 32.8
    quant_bits: 8
    layers: 64
    attention_heads: 40
    kv_heads: 8
    head_dim: 128
    context: 32768
    max_sequences: 4
    priority: 2
  - name: small
    engine: llama.cpp
    weights: /srv/models/small.gguf
    params_b: 8
    quant_bits: 4.5
    layers: 32
    attention_heads: 32
    kv_heads: 8
    head_dim: 128
    context: 8192
    replicas: 2
"""


def test_good_file_parses_with_defaults() -> None:
    models = parse_models(GOOD)
    qwq, small = models.models
    assert models.headroom_pct == 10.0
    assert qwq.priority == 2
    assert small.priority == 1.0
    assert small.kv_cache_bits == 16
    assert small.allow_sharing is False
    assert qwq.weights_bytes == pytest.approx(32.8e9)


def test_ports_are_assigned_per_replica_from_8000() -> None:
    models = parse_models(GOOD)
    assert models.ports() == {"qwq": (8000,), "small": (8001, 8002)}


def test_explicit_ports_are_skipped_by_automatic_ones() -> None:
    models = parse_models(GOOD.replace("priority: 2", "priority: 2\n    port: 8001"))
    assert models.ports() == {"qwq": (8001,), "small": (8000, 8002)}


def test_colliding_ports_are_refused() -> None:
    text = GOOD.replace("priority: 2", "priority: 2\n    port: 9000").replace(
        "replicas: 2", "replicas: 2\n    port: 8999"
    )
    with pytest.raises(ConfigError, match=r"port 9000 .*already used"):
        parse_models(text)


def test_unknown_key_gets_did_you_mean_and_yaml_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_models(GOOD.replace("context: 8192", "contxt: 8192"), source="m.yaml")
    message = str(info.value)
    assert message.startswith("m.yaml:")
    assert "models[1].contxt: unknown key — did you mean 'context'?" in message
    assert "models[1].context: required key missing" in message


def test_kv_heads_must_divide_attention_heads() -> None:
    with pytest.raises(ConfigError, match=r"models\[0\]: kv_heads \(7\) must divide"):
        parse_models(
            GOOD.replace(
                "kv_heads: 8\n    head_dim: 128\n    context: 32768",
                "kv_heads: 7\n    head_dim: 128\n    context: 32768",
            )
        )


def test_unknown_engine_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"models\[0\]\.engine: unknown engine 'vlm'.*'vllm'"):
        parse_models(GOOD.replace("engine: vllm", "engine: vlm"))


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="appears twice"):
        parse_models(GOOD.replace("name: small", "name: qwq"))


def test_fewer_pins_than_replicas_is_refused() -> None:
    with pytest.raises(ConfigError, match="cannot hold 2 replicas"):
        parse_models(GOOD.replace("replicas: 2", "replicas: 2\n    gpus: [GPU-a]"))


def test_missing_file_names_the_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_models(tmp_path / "nope.yaml")


def test_reference_models_file_is_valid() -> None:
    from tests.conftest import REPO_ROOT

    models = load_models(REPO_ROOT / "inventory" / "examples" / "models-reference.yaml")
    assert len(models.models) == 3
    assert {m.engine for m in models.models} <= {"vllm", "llama.cpp", "sglang"}


def test_assign_ports_handles_no_models_with_ports() -> None:
    assert assign_ports(parse_models(GOOD).models)["small"] == (8001, 8002)


def test_performance_floors_and_moe_active_parameters_parse() -> None:
    text = GOOD.replace(
        "priority: 2",
        "priority: 2\n    min_tokens_per_s: 12.5\n    max_ttft_s: 3\n    active_params_b: 3.3",
    )
    qwq = parse_models(text).models[0]
    assert qwq.min_tokens_per_s == 12.5
    assert qwq.max_ttft_s == 3.0
    assert qwq.active_params_b == 3.3


def test_a_negative_floor_names_its_path() -> None:
    with pytest.raises(ConfigError, match=r"models\[0\]\.min_tokens_per_s"):
        parse_models(GOOD.replace("priority: 2", "priority: 2\n    min_tokens_per_s: -1"))


def test_more_active_than_total_parameters_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"active_params_b \(40\.0\) exceeds params_b"):
        parse_models(GOOD.replace("priority: 2", "priority: 2\n    active_params_b: 40"))
