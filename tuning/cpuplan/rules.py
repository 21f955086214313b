"""The sizing rules of the CPU plan, read from ``engines.yaml`` beside this module.

Every number there carries its source or ``estimate``; a rule missing a source is refused when
the file loads, so no unnamed constant steers the plan.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field

from inventory.fields import StrictModel
from tuning.errors import ConfigError, read_yaml_config, validated

RULES_FILE = Path(__file__).with_name("engines.yaml")


class EngineRule(StrictModel):
    """Whole cores an engine's unit gets: ``api + tokenizer + engine + per_gpu × GPUs``."""

    api_cores: int = Field(ge=0, le=64)
    tokenizer_cores: int = Field(ge=0, le=64)
    engine_cores: int = Field(ge=0, le=256)
    cores_per_gpu: int = Field(ge=0, le=64)
    sources: dict[str, str]

    def cores_for(self, gpus: int) -> int:
        """Whole cores for a unit on ``gpus`` GPUs (at least one)."""
        return max(
            1, self.api_cores + self.tokenizer_cores + self.engine_cores + self.cores_per_gpu * gpus
        )

    def threads(self, cores: int, *, pinned: bool) -> int:
        """Compute threads per engine process on a unit of ``cores`` whole cores.

        One process for all GPUs (``cores_per_gpu`` 0, llama.cpp): its ``engine_cores``
        (``--threads``), or on a pinned unit every core but the API's and tokenizer's. A
        process per GPU (vLLM, SGLang): ``cores_per_gpu`` each (``OMP_NUM_THREADS`` of a
        worker), so the workers of one unit never oversubscribe its cores. At least 1.
        """
        if self.cores_per_gpu:
            return self.cores_per_gpu
        if pinned or not self.engine_cores:
            return max(1, cores - self.api_cores - self.tokenizer_cores)
        return self.engine_cores

    def describe(self, gpus: int) -> str:
        """The rule with its numbers, as the plan shows it."""
        return (
            f"{self.api_cores} API + {self.tokenizer_cores} tokenizer + {self.engine_cores} "
            f"engine + {self.cores_per_gpu}×{gpus} GPU = {self.cores_for(gpus)} cores"
        )


class HousekeepingRule(StrictModel):
    cores_per_socket: int = Field(ge=0, le=64)
    sources: dict[str, str]


class CpuRules(StrictModel):
    housekeeping: HousekeepingRule
    engines: dict[str, EngineRule]


@cache
def load_rules(path: Path = RULES_FILE) -> CpuRules:
    """The rules file, validated; :class:`ConfigError` naming the file and key otherwise."""
    rules = validated(CpuRules, read_yaml_config(path, "CPU plan rules"), path.name)
    for name, rule in rules.engines.items():
        for key in ("api_cores", "tokenizer_cores", "engine_cores", "cores_per_gpu"):
            if getattr(rule, key) and key not in rule.sources:
                raise ConfigError(
                    f"{path.name}: engines.{name}.sources.{key}: missing; cite the figure or "
                    "mark it 'estimate'"
                )
    if "cores_per_socket" not in rules.housekeeping.sources:
        raise ConfigError(f"{path.name}: housekeeping.sources.cores_per_socket: missing")
    return rules
