"""``--workload FILE.yaml``: a workload file runs on the simulated rig through the same factory
and sweep as the named presets, and every other spelling keeps working."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import tuning.cli
from tuning.backends import open_rig
from tuning.errors import ConfigError
from tuning.workloads import SimWorkload, make_workload

MODELS = Path(__file__).resolve().parents[2] / "inventory" / "examples" / "models-reference.yaml"


def _file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "r1.yaml"
    path.write_text(f"models: {MODELS}\nmodel: r1-distill-qwen-14b\ncontext: 512\n{extra}")
    return path


def test_a_workload_file_runs_its_model_on_each_gpu(tmp_path: Path) -> None:
    """models-reference.yaml's r1-distill-qwen-14b: 14.8 B at 8.5 bits = 15.7 GB on llama.cpp.
    On an RTX 3090 (936 GB/s, llama.cpp reads at 0.62 of it: tuning/model/serving.yaml) a
    token reads 15.7e9 / (936e9 · 0.62) = 27.1 ms, plus 1.55 ms of host time: 34.9 tok/s."""
    rig = open_rig("sim:4x3090", seed=0)
    load = make_workload(str(_file(tmp_path)), rig)
    assert isinstance(load, SimWorkload)
    uuid = rig.gpus[0].uuid
    load.start(uuid)
    rig.clock.sleep(10.0)
    before = load.tokens_total(uuid)
    rig.clock.sleep(60.0)
    assert (load.tokens_total(uuid) - before) / 60.0 == pytest.approx(34.9, rel=0.05)
    assert rig.workload(uuid) == "workload"
    assert rig.workload(rig.gpus[1].uuid) is None


def test_a_split_over_part_of_the_rig_is_refused_by_the_sweep(tmp_path: Path) -> None:
    """A group sweep caps every GPU of the rig: a split over 2 of 4 GPUs is refused, at its
    file and line, before any cap changes."""
    rig = open_rig("sim:4x3090", seed=0)
    expected = r"r1.yaml:\d+: gpus: names a split over 2 of the rig.s 4 GPUs"
    with pytest.raises(ConfigError, match=expected):
        make_workload(str(_file(tmp_path, "gpus: [0, 1]\npp: 2\n")), rig)


def test_sweep_cli_takes_a_workload_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))
    argv = ["sweep", "--rig", "sim:4x3090", "--workload", str(_file(tmp_path)), "--json"]
    monkeypatch.setattr(sys, "argv", ["rigforge", *argv, "--heat-soak-s", "120"])
    tuning.cli.main()
    result = json.loads(capsys.readouterr().out)
    assert len(result["gpus"]) == 4
    assert result["totals"]["validation_passed"] is True
