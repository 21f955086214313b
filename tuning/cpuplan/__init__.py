"""The CPU plan beside the GPU plan: housekeeping CPUs, each serving unit's own whole cores on
its GPUs' NUMA node, and where each GPU's interrupts go (:mod:`tuning.cpuplan.plan`); the
sizing rules per engine with their sources (``engines.yaml``, :mod:`tuning.cpuplan.rules`);
this host's topology read from sysfs (:mod:`tuning.cpuplan.host`)."""

from tuning.cpuplan.host import read_host_topology
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
    "read_host_topology",
]
