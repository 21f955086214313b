"""Exporter scrape time: ``sim:reference`` (bar: median ≤ 50 ms) and 8 GPUs on a mocked NVML.

Run from the repo root: ``.venv/bin/python bench/exporter.py [--runs N] [--json]``. Each scrape
is the full text exposition (every family, the PSU/circuit estimate, a kernel-log poll of an
empty file). The NVML case replaces ``pynvml`` with an autospec'd mock routed to the tests'
in-memory fake (``tests/unit/test_exporter_nvml.py``), so it times rigforge's side of a
scrape plus the mock's own call overhead (a real NVML call costs its driver round trip
instead); the last line repeats it with one GPU lost mid-scrape.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pynvml  # noqa: E402

from tuning.backends import open_rig  # noqa: E402
from tuning.backends.nvml import NvmlRig  # noqa: E402
from tuning.exporter.collector import RigCollector, exposition  # noqa: E402
from tuning.exporter.xid import FileSource, KernelLog, XidCounter  # noqa: E402

#: The bar from the monitoring issue: one scrape of the reference rig. Units: ms.
SIM_BAR_MS = 50.0


def _time_ms(scrape: Callable[[], bytes], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        scrape()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def _kernel_log(directory: Path) -> KernelLog:
    path = directory / "kern.log"
    path.write_text("")
    return KernelLog(FileSource(path), XidCounter())


def sim_reference(runs: int, directory: Path) -> list[float]:
    rig = open_rig("sim:reference")
    for gpu in rig.gpus:
        rig.set_workload(gpu.uuid, "decode")  # type: ignore[attr-defined]
    collector = RigCollector(rig, spec="sim:reference", kernel_log=_kernel_log(directory))
    exposition(collector)  # warm
    return _time_ms(lambda: exposition(collector), runs)


def nvml_eight(runs: int, directory: Path, *, lose_one: bool) -> list[float]:
    from tests.unit.test_exporter_nvml import ExporterFakeNvml, eight_gpus
    from tests.unit.test_nvml import route_to

    spec = mock.create_autospec(pynvml)
    devices = eight_gpus()
    model = ExporterFakeNvml(devices)
    route_to(spec, model)
    with mock.patch("tuning.backends.nvml.pynvml", new=spec):
        rig = NvmlRig.open(sysfs_root=directory)
        collector = RigCollector(rig, spec="nvml", kernel_log=_kernel_log(directory))
        exposition(collector)
        if lose_one:
            model.fail("nvmlDeviceGetTemperature", pynvml.NVML_ERROR_GPU_IS_LOST, devices[4])
        return _time_ms(lambda: exposition(collector), runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        results = {
            "sim:reference (6 GPUs)": sim_reference(args.runs, directory),
            "nvml mock, 8 GPUs": nvml_eight(args.runs, directory, lose_one=False),
            "nvml mock, 8 GPUs, 1 lost": nvml_eight(args.runs, directory, lose_one=True),
        }
    summary = {
        name: {
            "median_ms": round(statistics.median(t), 2),
            "p95_ms": round(sorted(t)[int(0.95 * (len(t) - 1))], 2),
        }
        for name, t in results.items()
    }
    sim_median = summary["sim:reference (6 GPUs)"]["median_ms"]
    passed = sim_median <= SIM_BAR_MS
    if args.json:
        print(json.dumps({"runs": args.runs, "bar_ms": SIM_BAR_MS, "pass": passed, **summary}))
    else:
        bar = f"sim:reference median ≤ {SIM_BAR_MS:g} ms"
        print(f"exporter scrape, {args.runs} runs each (bar: {bar})")
        for name, row in summary.items():
            print(f"  {name:28s} median {row['median_ms']:7.2f} ms   p95 {row['p95_ms']:7.2f} ms")
        print(f"  bar {'met' if passed else 'MISSED'}: {sim_median:.2f} ms")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
