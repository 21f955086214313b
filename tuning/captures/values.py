"""Cell-level helpers shared by the capture parsers: unknown markers, units, CPU lists.

Every helper is pure and total: text it cannot read becomes ``None`` (unknown), never a guess.
"""

from __future__ import annotations

import re

from tuning.core.cpu import cpu_list_values
from tuning.core.cpu import format_cpu_list as format_cpu_list  # its home is tuning.core.cpu

#: Text nvidia-smi prints where a value is unknown; compared lower-cased, brackets stripped.
_UNKNOWN = frozenset(
    {
        "",
        "n/a",
        "na",
        "not supported",
        "unknown error",
        "unknown",
        "insufficient permissions",
        "no permission",
        "gpu is lost",
        "requested functionality has been deprecated",
        "not available",
        "none",
        "-",
    }
)

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_NUMBER_RE = re.compile(r"^[+-]?\d+(?:\.\d+)?")


def strip_ansi(text: str) -> str:
    """Remove terminal escape sequences (``ESC[4m`` … ``ESC[0m``) that nvidia-smi may emit."""
    return _ANSI_RE.sub("", text)


def clean_text(text: str) -> str:
    """ANSI-free text with Windows line ends and a leading BOM removed."""
    return strip_ansi(text).replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")


def is_unknown(value: str | None) -> bool:
    """True for ``None`` and every "no value" marker nvidia-smi prints (``[N/A]`` …)."""
    if value is None:
        return True
    text = value.strip().strip("[]").strip().lower()
    return text in _UNKNOWN or text.startswith("requested functionality")


def text_or_none(value: str | None) -> str | None:
    """The stripped value, or ``None`` when it is an unknown marker."""
    return None if is_unknown(value) else value.strip()  # type: ignore[union-attr]


def number(value: str | None) -> float | None:
    """The leading number of a cell (``"350.00 W"`` → 350.0, ``"16x"`` → 16.0), else ``None``."""
    if is_unknown(value):
        return None
    match = _NUMBER_RE.match(value.strip())  # type: ignore[union-attr]
    return float(match.group(0)) if match else None


def integer(value: str | None) -> int | None:
    """Like :func:`number` but an ``int``; hex (``0x1F``) is accepted."""
    if is_unknown(value):
        return None
    text = value.strip()  # type: ignore[union-attr]
    if text.lower().startswith("0x"):
        try:
            return int(text, 16)
        except ValueError:
            return None
    parsed = number(text)
    return int(parsed) if parsed is not None else None


def boolean(value: str | None) -> bool | None:
    """``Enabled``/``Yes``/``On``/``Active`` → True, their opposites → False, else ``None``."""
    if is_unknown(value):
        return None
    text = value.strip().lower()  # type: ignore[union-attr]
    if text in {"enabled", "yes", "on", "active", "true", "1"}:
        return True
    if text in {"disabled", "no", "off", "not active", "false", "0"}:
        return False
    return None


def parse_cpu_list(text: str | None) -> tuple[int, ...] | None:
    """Parse a kernel CPU list (``0-55,112-167``, ``6,14,22,30``, ``0 1 2``) to sorted CPUs.

    ``None`` for an empty or unknown cell (Windows prints nothing) or text that is not a list
    (a CPU above :data:`~tuning.core.limits.MAX_CPU_ID` included); the list syntax is
    :func:`tuning.core.cpu.cpu_list_values`'.
    """
    if is_unknown(text):
        return None
    return cpu_list_values(text)  # type: ignore[arg-type]


#: PCIe transfer rate per lane (GT/s) → generation (PCI-SIG base specs 1.0 … 6.0).
_GTS_TO_GEN: dict[float, int] = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}


def gts_to_gen(speed_gts: float | None) -> int | None:
    """PCIe generation for a per-lane rate in GT/s (2.5→1, 5→2, 8→3, 16→4, 32→5, 64→6)."""
    if speed_gts is None:
        return None
    for rate, gen in _GTS_TO_GEN.items():
        if abs(rate - speed_gts) < 0.01:
            return gen
    return None


def pstate_number(pstate: str | None) -> int | None:
    """``"P8"`` → 8; ``None`` for anything else."""
    if pstate is None:
        return None
    match = re.fullmatch(r"\s*P(\d{1,2})\s*", pstate)
    return int(match.group(1)) if match else None


#: Utilisation at or above which a reading counts as "under load". Units: %.
BUSY_UTILIZATION_PCT = 10.0
#: P-states at or above this number are low-power idle states (P8 is the usual idle state).
IDLE_PSTATE_MIN = 5


def infer_under_load(
    utilization_pct: float | None, pstate: str | None, gpu_idle: bool | None = None
) -> bool | None:
    """Whether a reading was taken with the GPU busy, from what nvidia-smi reported with it.

    GPUs downtrain an idle PCIe link to save power, so a low gen only means something under
    load. Evidence, strongest first: utilisation (≥ 10 % busy, 0 % idle), the ``gpu_idle``
    clock-event reason, then the P-state (P5 and deeper are idle; P0–P2 with some
    utilisation are busy). ``None`` when nothing says either way: an H100 idles at P0, so a P0
    reading alone is not evidence of load.
    """
    number_pstate = pstate_number(pstate)
    if utilization_pct is not None:
        if utilization_pct >= BUSY_UTILIZATION_PCT:
            return True
        if utilization_pct <= 0.0:
            return False
        if number_pstate is not None:
            return number_pstate <= 2
        return None
    if gpu_idle:
        return False
    if number_pstate is not None and number_pstate >= IDLE_PSTATE_MIN:
        return False
    return None
