"""Retrying a cap change that failed transiently (an NVML timeout, a read-back mismatch)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tuning.apply.actuator import Actuator
from tuning.apply.signals import Terminated
from tuning.errors import (
    BackendUnavailable,
    ConfigError,
    GpuLost,
    NoPermission,
    OutOfRange,
    RigforgeError,
    SafetyAbort,
    UnknownGpu,
)

#: errors a retry cannot fix: a bad value, missing privilege or GPU, a card off the bus, a
#: signal, a broken driver. Any other RigforgeError (a read-back mismatch, NVML "unknown" or
#: "timeout") may be transient and is retried.
_NOT_TRANSIENT: tuple[type[RigforgeError], ...] = (
    OutOfRange,
    NoPermission,
    UnknownGpu,
    GpuLost,
    BackendUnavailable,
    ConfigError,
    SafetyAbort,
)


def is_transient(error: BaseException) -> bool:
    """True for a :class:`RigforgeError` that a retry may clear (see ``_NOT_TRANSIENT``)."""
    return (
        isinstance(error, RigforgeError)
        and not isinstance(error, _NOT_TRANSIENT)
        and not isinstance(error, Terminated)
    )


def set_cap_retrying(
    actuator: Actuator,
    uuid: str,
    cap_w: float,
    *,
    retries: int = 3,
    retry_delay_s: float = 0.5,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """:meth:`Actuator.set_cap` (set and read back), retried up to ``retries`` more times,
    ``retry_delay_s`` apart, when it fails with a transient error (:func:`is_transient`).
    Returns the enforced limit (W). After the last attempt raises an error of the last
    failure's type naming the GPU and the attempts; other errors propagate at once.
    """
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return actuator.set_cap(uuid, cap_w)
        except RigforgeError as error:
            if not is_transient(error):
                raise
            if attempt == attempts:
                raise type(error)(
                    f"GPU {uuid}: setting a {cap_w:g} W limit failed {attempts} times; last: "
                    f"{error}"
                ) from error
            log(
                f"rigforge: GPU {uuid}: {error}; retrying in {retry_delay_s:g} s "
                f"(attempt {attempt + 1} of {attempts})"
            )
            sleep(retry_delay_s)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
