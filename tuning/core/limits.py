"""Bounds on what a real machine can be: values outside them are typos (``1e20`` MiB, −273 °C,
``-100`` W), refused wherever a user file states them (inventory, rig files, budgets).

None of these steers a decision inside the range; each only stops the impossible. Each bound
cites the largest (or smallest) published value it sits above, or is marked ``estimate``.
"""

from __future__ import annotations

#: Highest power value (W) any GPU field may hold: twice the largest published board power,
#: GB200's 1200 W (NVIDIA GB200 NVL72 datasheet); estimate.
MAX_GPU_POWER_W = 2400.0
#: Largest VRAM per GPU: 1 TiB in MiB (B200 has 180 GiB, B300 288 GB); estimate.
MAX_GPU_MEMORY_MIB = 1024 * 1024
#: Largest PSU rating: ATX 3.1 desktop units top out at 2800 W, CRPS server units at 3200 W
#: (vendor datasheets); 5000 W is an estimate that only stops typos.
MAX_PSU_RATING_W = 5000.0
#: Lowest DC/AC efficiency accepted: 80 PLUS "White" is 80 % at 20–100 % load (CLEAResult 80
#: PLUS program); below 0.5 the value is a typo.
MIN_PSU_EFFICIENCY = 0.5
#: Mains voltages in use: 100 V (Japan) to 480 V (North American three-phase commercial).
MIN_MAINS_V = 100.0
MAX_MAINS_V = 480.0
#: Largest branch breaker a workstation sits on (estimate; NEC 210.3 ratings go to 50 A).
MAX_BREAKER_A = 125.0
#: Highest NUMA node id Linux accepts (CONFIG_NODES_SHIFT max 10 → 1024 nodes).
MAX_NUMA_NODE = 1023
#: Highest CPU id Linux accepts (CONFIG_NR_CPUS max 8192 on x86_64, arch/x86/Kconfig).
MAX_CPU_ID = 8191
#: Temperatures a GPU threshold or ambient can be: NVIDIA shutdown thresholds sit near
#: 90–110 °C (nvidia-smi -q "GPU Shutdown Temp"); 150 °C and 0 °C are estimates that stop typos.
MIN_TEMP_C = 0.0
MAX_TEMP_C = 150.0
#: Lowest temperature a GPU sensor can read in service: −40 °C, the bottom of the industrial
#: operating range (JEDEC JESD22-A104 / IEC 60068-2-1 cold test); estimate below which a reading
#: is a damaged capture.
MIN_READING_C = -40.0


def psu_efficiency_hint(value: float) -> str | None:
    """``92`` for an efficiency is a percentage: the sentence that says so, else ``None``."""
    if 50 <= value <= 100:
        return f"{value:g} looks like a percentage; efficiency is a ratio: write {value / 100:g}"
    return None
