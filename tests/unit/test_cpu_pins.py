"""``cpus:`` pins in the models file, honoured by ``rigforge plan`` and ``rigforge loop``.

sim:reference is a 5995WX in NPS1 (tuning/backends/rigs/reference.yaml): 64 cores, core k =
CPUs k and k + 64, CCD d = cores 8d…8d+7. A pin of CCD 3 (``24-31,88-95``) is kept as
written; housekeeping stays on cores 0-1 (CPUs 0-1,64-65, engines.yaml: 2 per socket); the
other models get cores of their own elsewhere, never a pinned CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tuning.captures.values import format_cpu_list, parse_cpu_list
from tuning.cli import cli
from tuning.core.plan import load_plan
from tuning.errors import ConfigError

REFERENCE_MODELS = Path(__file__).parents[2] / "inventory" / "examples" / "models-reference.yaml"
PIN = "24-31,88-95"


def _pinned_models(tmp_path: Path) -> tuple[Path, str]:
    """The reference models file with its first model pinned to CCD 3; (path, model)."""
    text = REFERENCE_MODELS.read_text(encoding="utf-8")
    first = "  - name: r1-distill-llama-70b\n"
    assert first in text
    path = tmp_path / "models.yaml"
    path.write_text(text.replace(first, f'{first}    cpus: "{PIN}"\n', 1), encoding="utf-8")
    return path, "r1-distill-llama-70b"


def test_rigforge_plan_keeps_a_pin_and_plans_the_others_around_it(tmp_path: Path) -> None:
    models, pinned = _pinned_models(tmp_path)
    out = tmp_path / "plan.yaml"
    result = CliRunner().invoke(
        cli, ["plan", "--rig", "sim:reference", "--models", str(models), "--out", str(out)]
    )
    assert result.exit_code in (0, 1), result.output
    assert "GPU IRQs: " in result.output
    plan = load_plan(out)
    by_model = {p.model: set(p.cpu_list) for p in plan.placements}
    assert format_cpu_list(by_model[pinned]) == PIN
    assert format_cpu_list(plan.housekeeping_cpus) == "0-1,64-65"
    pin = set(parse_cpu_list(PIN) or ())
    for model, cpus in by_model.items():
        if model != pinned:
            assert not cpus & pin, model
            assert not cpus & set(plan.housekeeping_cpus), model


def test_rigforge_plan_json_carries_the_pin(tmp_path: Path) -> None:
    models, pinned = _pinned_models(tmp_path)
    result = CliRunner().invoke(
        cli, ["plan", "--rig", "sim:reference", "--models", str(models), "--json"]
    )
    assert result.exit_code in (0, 1), result.output
    document = json.loads(result.output)
    (placement,) = [p for p in document["placements"] if p["model"] == pinned]
    assert format_cpu_list(placement["cpu_list"]) == PIN


def test_a_pin_the_host_lacks_is_refused_before_the_loop_measures_anything(
    tmp_path: Path,
) -> None:
    """sim:reference has CPUs 0-127; a pin of 120-135 is refused naming the model, the
    CPUs it lacks and the YAML path, before stage 1 (no profile is written)."""
    models = tmp_path / "models.yaml"
    models.write_text(
        REFERENCE_MODELS.read_text(encoding="utf-8").replace(
            "  - name: r1-distill-llama-70b\n",
            '  - name: r1-distill-llama-70b\n    cpus: "120-135"\n',
            1,
        ),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["loop", "--rig", "sim:reference", "--models", str(models), "--out", str(out)]
    )
    assert isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert "models[0].cpus: model 'r1-distill-llama-70b'" in message
    assert "pins CPUs 128-135 the host lacks" in message
    assert not (out / "profile.yaml").exists()
