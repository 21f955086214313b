"""The gpu tier: read-only checks against this machine's GPUs through NVML.

Opt-in (``pytest -m gpu tests/gpu``); every test here is skipped with the reason when NVML is
unavailable (no driver, no library, no GPU). Nothing here may change a GPU setting: for each
module of the tier, every NVML setter (``nvmlDeviceSet*``, ``nvmlDeviceReset*``,
``nvmlDeviceClear*`` and friends) is replaced by one that fails the test, so an accidental write
is caught before it reaches a machine the tester may not own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pynvml
import pytest

from tuning.backends import open_rig
from tuning.backends.nvml import NvmlRig
from tuning.errors import BackendUnavailable

#: NVML function-name prefixes that change state.
_WRITE_PREFIXES = (
    "nvmlDeviceSet",
    "nvmlDeviceReset",
    "nvmlDeviceClear",
    "nvmlDeviceModify",
    "nvmlDeviceCreate",
    "nvmlDeviceFreeze",
    "nvmlGpuInstanceCreate",
    "nvmlSystemSet",
    "nvmlUnitSet",
)


def _refuse(name: str) -> Callable[..., None]:
    def refused(*_args: object, **_kwargs: object) -> None:
        pytest.fail(f"the gpu tier is read-only, but {name} was called")

    return refused


# Module scope, not session: the refusal must end with the gpu tier's modules, so suites that
# run after them in the same session (which patch pynvml themselves) see the real bindings.
@pytest.fixture(scope="module", autouse=True)
def _read_only_nvml() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name in dir(pynvml):
            if name.startswith(_WRITE_PREFIXES) and callable(getattr(pynvml, name)):
                patch.setattr(pynvml, name, _refuse(name))
        yield


@pytest.fixture(scope="module")
def nvml_rig(_read_only_nvml: None) -> Iterator[NvmlRig]:
    """This machine's GPUs; the tier is skipped with NVML's own reason when it cannot open."""
    try:
        rig = open_rig("nvml")
    except BackendUnavailable as err:
        pytest.skip(f"NVML unavailable: {err}")
    assert isinstance(rig, NvmlRig)
    try:
        yield rig
    finally:
        rig.close()
