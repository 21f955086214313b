"""The CPU plan beside the GPU plan: housekeeping CPUs, each serving unit's own whole cores on
its GPUs' NUMA node, and where each GPU's interrupts go (:mod:`tuning.cpuplan.plan`); the
sizing rules per engine with their sources (``engines.yaml``, :mod:`tuning.cpuplan.rules`)."""

from tuning.cpuplan.plan import (
    CpuPlan,
    CpuPlanRefused,
    CpuUnit,
    GpuIrqCpus,
    UnitCpus,
    plan_cpus,
)
from tuning.cpuplan.rules import CpuRules, EngineRule, load_rules

__all__ = [
    "CpuPlan",
    "CpuPlanRefused",
    "CpuRules",
    "CpuUnit",
    "EngineRule",
    "GpuIrqCpus",
    "UnitCpus",
    "load_rules",
    "plan_cpus",
]
