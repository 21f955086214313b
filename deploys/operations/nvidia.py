"""Operations on NVIDIA GPUs through ``nvidia-smi``: power limit and persistence mode.

Each diffs :class:`~deploys.facts.nvidia.NvidiaGpus` and yields commands only where the GPU
differs, so a second deploy changes nothing. GPUs are addressed by UUID, never by index.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import OperationError, OperationValueError, operation

from deploys.facts.nvidia import STATUS_OK, NvidiaGpus, find_gpu

#: nvidia-smi reports limits with two decimals; closer than this counts as equal. Units: W.
POWER_TOLERANCE_W = 0.5


def _gpus_or_noop(what: str) -> dict | None:
    gpus = host.get_fact(NvidiaGpus)
    if gpus["status"] != STATUS_OK:
        host.noop(f"{what}: skipped, nvidia-smi not usable ({gpus['status']}: {gpus['message']})")
        return None
    return gpus


@operation()
def power_limit(uuid: str, power_limit_w: float):
    """
    Set a GPU's power limit (until reboot; the boot unit re-applies it), then read it back.

    + uuid: the GPU's UUID (``GPU-…``)
    + power_limit_w: the limit in watts; refused at plan time outside the card's
      ``power.min_limit``..``power.max_limit``

    When nvidia-smi is missing or the driver is not loaded the operation is a no-op that says
    so (a first deploy runs before the driver is loaded); an unknown UUID is an error. The set
    is followed by :func:`read_back_command`, which fails the operation when ``power.limit``
    does not read back within :data:`POWER_TOLERANCE_W` of the wanted limit.

    **Example:**

    .. code:: python

        nvidia.power_limit(
            name="Cap GPU-5f1c… at 280 W",
            uuid="GPU-5f1c…",
            power_limit_w=280,
        )
    """
    gpus = _gpus_or_noop(f"power limit of {uuid}")
    if gpus is None:
        return
    gpu = find_gpu(gpus, uuid)
    if gpu is None:
        known = ", ".join(g.get("uuid") or "?" for g in gpus["gpus"]) or "none"
        raise OperationError(f"no GPU {uuid} on this host (it has: {known}); check the inventory")
    low, high = gpu.get("power_min_w"), gpu.get("power_max_w")
    if (low is not None and power_limit_w < low) or (high is not None and power_limit_w > high):
        raise OperationValueError(
            f"power limit {power_limit_w:g} W for {uuid} is outside its range "
            f"{low if low is not None else '?'}–{high if high is not None else '?'} W"
        )
    current = gpu.get("power_limit_w")
    if current is not None and abs(current - power_limit_w) < POWER_TOLERANCE_W:
        host.noop(f"power limit of {uuid} is {current:g} W")
        return
    yield f"nvidia-smi -i {shlex.quote(uuid)} -pl {power_limit_w:g}"
    yield read_back_command(uuid, power_limit_w)


def read_back_command(uuid: str, power_limit_w: float) -> str:
    """A command that fails unless ``power.limit`` reads back within :data:`POWER_TOLERANCE_W`.

    ``nvidia-smi -pl`` can exit 0 and leave another limit in force (a driver clamp, another
    tool racing it); the deploy must fail then, not report success.
    """
    quoted = shlex.quote(uuid)
    return (
        f"got=$(nvidia-smi -i {quoted} --query-gpu=power.limit --format=csv,noheader,nounits "
        "| tr -d ' '); "
        f'awk -v g="$got" -v w={power_limit_w:g} -v t={POWER_TOLERANCE_W:g} '
        "'BEGIN { exit !(g != \"\" && g - w < t && w - g < t) }' || "
        f'{{ echo "rigforge: {uuid}: power limit reads back ${{got:-nothing}} W, '
        f'not {power_limit_w:g} W" >&2; exit 1; }}'
    )


@operation()
def persistence_mode(enabled: bool = True, uuid: str | None = None):
    """
    Turn persistence mode on or off (every GPU, or one by UUID).

    + enabled: the wanted mode
    + uuid: one GPU's UUID; ``None`` for every GPU the fact lists

    Persistence across reboots belongs to ``nvidia-persistenced``; this sets the running
    state. A no-op when nvidia-smi is unusable.

    **Example:**

    .. code:: python

        nvidia.persistence_mode(name="Persistence on", enabled=True)
    """
    gpus = _gpus_or_noop("persistence mode")
    if gpus is None:
        return
    targets = gpus["gpus"]
    if uuid is not None:
        gpu = find_gpu(gpus, uuid)
        if gpu is None:
            raise OperationError(f"no GPU {uuid} on this host; check the inventory")
        targets = [gpu]
    flag = 1 if enabled else 0
    changed = False
    for gpu in targets:
        if gpu.get("persistence_mode") is not enabled:
            changed = True
            yield f"nvidia-smi -i {gpu['uuid']} -pm {flag}"
    if not changed:
        state = "on" if enabled else "off"
        host.noop(f"persistence mode is {state} on {len(targets)} GPU(s)")
