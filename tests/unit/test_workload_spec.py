"""The workload description (:mod:`tuning.workloads.spec`): the type, the presets, the file.

Expectations come from the files written here and from ``tuning/workloads/presets.yaml``
(the presets are documented there and in docs/workload.md); bad files live in
``tests/inventory/bad-workload/`` and are walked by the bad-file corpus tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from inventory.models import ModelSpec
from tuning.errors import ConfigError
from tuning.workloads.spec import (
    WorkloadSpec,
    is_workload_file,
    load_workload_file,
    preset_workload,
    resolve_gpus,
)

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "inventory" / "examples" / "models-reference.yaml"

MOE = """\
name: minimax-m2.5
engine: llama.cpp
weights: unsloth/MiniMax-M2.5-GGUF
params_b: 229
active_params_b: 10
quant_bits: 2.7
layers: 62
attention_heads: 48
kv_heads: 8
head_dim: 128
context: 196608
"""


def _write(tmp_path: Path, text: str, name: str = "w.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_inline_model_pipeline_file_loads(tmp_path: Path) -> None:
    body = "model:\n" + "".join(f"  {line}\n" for line in MOE.splitlines())
    path = _write(tmp_path, f"name: six\n{body}gpus: [0, 1, 2, 3, 4, 5]\npp: 6\ncontext: 4096\n")
    spec = load_workload_file(path)
    assert spec.model.active_params_b == 10
    assert (spec.tp, spec.pp, spec.gpus) == (1, 6, (0, 1, 2, 3, 4, 5))
    # engine defaults to the model's; phase to decode; concurrency to 1
    assert (spec.engine, spec.phase, spec.concurrency) == ("llama.cpp", "decode", 1)
    assert spec.grouped


def test_model_by_name_from_a_models_file_relative_to_the_workload(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(MODELS.read_text(encoding="utf-8"), encoding="utf-8")
    path = _write(tmp_path, "models: models.yaml\nmodel: qwq-32b\ncontext: 8192\nconcurrency: 4\n")
    spec = load_workload_file(path)
    # models-reference.yaml: qwq-32b is served by vllm with 64 layers
    assert (spec.model.name, spec.engine, spec.model.layers) == ("qwq-32b", "vllm", 64)
    assert not spec.grouped


def test_unknown_model_name_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, f"models: {MODELS}\nmodel: qwq\ncontext: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_workload_file(path)
    message = str(caught.value)
    assert f"{path}:2: model: no model 'qwq'" in message
    assert "did you mean 'qwq-32b'" in message
    assert "engine:" not in message  # not a second complaint about the same model


def test_split_must_match_the_named_gpus() -> None:
    model = ModelSpec.model_validate({k: v for k, v in _moe().items()})
    with pytest.raises(ValidationError, match="gpus: tp × pp = 2 × 2 = 4 but gpus names 3"):
        WorkloadSpec(model=model, engine="vllm", gpus=(0, 1, 2), tp=2, pp=2, context=1)
    with pytest.raises(ValidationError, match="needs that many GPUs"):
        WorkloadSpec(model=model, engine="vllm", pp=2, context=1)
    with pytest.raises(ValidationError, match="exceeds the model's context"):
        WorkloadSpec(model=model, engine="vllm", context=196609)


def _moe() -> dict[str, object]:
    import yaml

    data = yaml.safe_load(MOE)
    assert isinstance(data, dict)
    return data


def test_presets_are_the_documented_descriptions() -> None:
    """presets.yaml: decode is 1 sequence at 512 tokens, prefill a 2048-token prompt,
    batched 12 sequences at 1024 on vLLM; the others llama.cpp; one GPU each. The
    model's bits come from the rig's weights: 16.5 GB over 27 B is 4.89 bits per weight."""
    decode = preset_workload("decode", params_b=27, weights_gb=16.5, batch=16)
    prefill = preset_workload("prefill", params_b=27, weights_gb=16.5, batch=16)
    batched = preset_workload("batched", params_b=27, weights_gb=16.5, batch=16)
    assert (decode.concurrency, decode.context, decode.phase) == (1, 512, "decode")
    assert (prefill.concurrency, prefill.context, prefill.phase) == (1, 2048, "prefill")
    assert (batched.concurrency, batched.context, batched.phase) == (12, 1024, "decode")
    assert (decode.engine, prefill.engine, batched.engine) == ("llama.cpp", "llama.cpp", "vllm")
    assert decode.model.quant_bits == pytest.approx(4.889, abs=1e-3)
    assert not decode.grouped
    with pytest.raises(ConfigError, match="unknown workload preset"):
        preset_workload("train", params_b=27, weights_gb=16.5, batch=16)


def test_workload_file_is_told_from_the_other_spellings(tmp_path: Path) -> None:
    assert is_workload_file("six-card.yaml")
    assert is_workload_file("x.YML")
    existing = _write(tmp_path, "", "noext")
    assert is_workload_file(str(existing))
    for spelling in ("decode", "prefill", "batched", "cmd:llama-bench -m x.yaml", "openai:u"):
        assert not is_workload_file(spelling)


def test_gpus_resolve_by_index_uuid_or_bus_id() -> None:
    model = ModelSpec.model_validate(_moe())
    uuids = ["GPU-aaaaaaaa-0000-0000-0000-000000000000", "GPU-bbbbbbbb-0000-0000-0000-000000000000"]
    bus = ["00000000:41:00.0", "00000000:42:00.0"]
    spec = WorkloadSpec(model=model, engine="llama.cpp", gpus=("0000:42:00.0", 0), pp=2, context=1)
    assert resolve_gpus(spec, uuids, bus) == [1, 0]
    spec = WorkloadSpec(
        model=model, engine="llama.cpp", gpus=(uuids[1].upper(), 0), pp=2, context=1
    )
    assert resolve_gpus(spec, uuids, bus) == [1, 0]
    with pytest.raises(ConfigError, match="index 2 but the rig has GPUs 0-1"):
        resolve_gpus(WorkloadSpec(model=model, engine="vllm", gpus=(2,), context=1), uuids, bus)
