"""Applying a profile's caps: clamped, inside the budget, lowered before raised, all or nothing."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuning.apply.actuator import Actuator
from tuning.apply.retry import set_cap_retrying
from tuning.apply.session import SafetySession
from tuning.core.power import POWER_LIMIT_TOLERANCE_W
from tuning.errors import OutOfRange, UnknownGpu

if TYPE_CHECKING:
    from tuning.budget import BudgetModel


@dataclass(frozen=True)
class ApplyResult:
    """One GPU's cap change: ``before_w`` → ``requested_w`` (clamped: ``target_w``) → read back."""

    uuid: str
    before_w: float
    requested_w: float
    target_w: float
    read_back_w: float | None
    changed: bool


def apply_caps(
    actuator: Actuator,
    caps_w: Mapping[str, float],
    *,
    dry_run: bool = False,
    budget: BudgetModel | None = None,
    journaled: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    retries: int = 3,
    retry_delay_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ApplyResult]:
    """Apply caps by UUID, clamped to each GPU's constraints and read back; all or nothing.

    Refuses before anything changes when a UUID is missing on the rig (:class:`UnknownGpu`)
    or when ``budget`` is given and the resulting caps (GPUs the profile does not name keep
    their current limit) plus platform draw exceed a PSU or circuit budget
    (:class:`OutOfRange`). Caps are lowered before any is raised, so no intermediate state
    draws more than the final one. With ``journaled`` the changes run inside a
    :class:`SafetySession` that keeps them on success and rolls every GPU back on any failure
    (a read-back mismatch, a lost GPU, a signal) — or, after ``kill -9``, on the next start.
    A set or read-back that fails transiently is retried first (``retries`` more attempts,
    ``retry_delay_s`` apart; :func:`set_cap_retrying`); only then does the whole apply roll
    back. Results come in the order of ``caps_w``.
    """
    rig = actuator.rig
    present = {gpu.uuid for gpu in rig.gpus}
    missing = sorted(set(caps_w) - present)
    if missing:
        raise UnknownGpu(
            f"the profile names GPU(s) {', '.join(missing)} that this rig does not have "
            f"(it has {', '.join(sorted(present))}); re-run 'rigforge sweep' for this rig"
        )
    before = {uuid: rig.gpu(uuid).power_limit_w() for uuid in caps_w}
    targets = {
        uuid: rig.gpu(uuid).power_constraints().clamp(float(requested))
        for uuid, requested in caps_w.items()
    }
    if budget is not None:
        final = {gpu.uuid: gpu.power_limit_w() for gpu in rig.gpus} | targets
        over = {name: r for name, r in budget.load_ratios(final).items() if r > 1.0 + 1e-9}
        if over:
            worst = ", ".join(f"{name} at {ratio:.0%}" for name, ratio in sorted(over.items()))
            raise OutOfRange(
                f"the profile's caps plus platform draw would exceed the power budget ({worst} "
                "of its continuous rating); nothing was changed — re-run 'rigforge sweep' "
                "with this budget or lower the caps"
            )

    def result(uuid: str, read_back: float | None) -> ApplyResult:
        changed = abs(before[uuid] - targets[uuid]) >= POWER_LIMIT_TOLERANCE_W
        return ApplyResult(uuid, before[uuid], caps_w[uuid], targets[uuid], read_back, changed)

    if dry_run:
        return [result(uuid, None) for uuid in caps_w]
    # lower first, then raise: every intermediate state is at or below the final one
    order = sorted(caps_w, key=lambda u: targets[u] - before[u])
    session = (
        SafetySession(actuator, restore_on_exit=False, log=log)
        if journaled
        else contextlib.nullcontext()
    )
    with session:
        for uuid in order:
            set_cap_retrying(
                actuator,
                uuid,
                targets[uuid],
                retries=retries,
                retry_delay_s=retry_delay_s,
                log=log,
                sleep=sleep,
            )
    return [result(uuid, rig.gpu(uuid).power_limit_w()) for uuid in caps_w]
