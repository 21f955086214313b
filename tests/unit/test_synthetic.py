"""Synthetic load, in process: sizing, the token mapping, a fake torch, the counting loop."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from tuning import synthetic
from tuning.errors import BackendUnavailable
from tuning.synthetic import (
    MIN_WEIGHT_BYTES,
    Control,
    GemmShape,
    gpu_budget_bytes,
    open_engine,
    plan_shape,
    read_control,
    serve,
)

GIB = 1 << 30


# -- sizing and the token mapping ------------------------------------------------------------


def test_decode_streams_weights_beyond_any_l2_and_counts_bytes_over_16_gb() -> None:
    """A token is what an 8 B-parameter fp16 model costs: it streams 2 B × 8e9 = 16e9 bytes."""
    shape = plan_shape("decode", 2 * GIB, 2)
    assert shape.m == 1
    assert shape.weight_bytes >= GIB
    assert shape.total_bytes <= 2 * GIB
    assert shape.tokens_per_call == pytest.approx(shape.weight_bytes / 16e9)


@pytest.mark.parametrize("kind", ["prefill", "batched"])
def test_gemm_kinds_count_flops_over_two_times_8e9(kind: str) -> None:
    """A token is what an 8 B-parameter model costs: one multiply-add (2 FLOPs) per parameter."""
    shape = plan_shape(kind, 2 * GIB, 2)
    assert shape.tokens_per_call == pytest.approx(shape.flops_per_call / (2 * 8e9))


def test_kinds_are_ordered_by_arithmetic_intensity() -> None:
    def flops_per_weight_byte(kind: str) -> float:
        shape = plan_shape(kind, 2 * GIB, 2)
        return shape.flops_per_call / shape.weight_bytes

    assert flops_per_weight_byte("decode") == 1.0
    assert 100 < flops_per_weight_byte("batched") < 1000
    assert flops_per_weight_byte("prefill") >= 4096


def test_prefill_on_a_gpu_is_the_full_8192_gemm() -> None:
    assert plan_shape("prefill", 512 << 20, 2) == GemmShape(m=4096, k=8192, n=8192, elem_bytes=2)


@pytest.mark.parametrize("kind", ["decode", "prefill", "batched"])
def test_a_budget_too_small_for_a_gemm_is_refused(kind: str) -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        plan_shape(kind, 1024, 4)


def test_budget_leaves_headroom_and_takes_at_most_half_of_the_rest() -> None:
    free_b, total_b = 10 * GIB, 80 * GIB  # a busy 80 GB card: headroom is 8 GiB
    budget = gpu_budget_bytes("decode", free_b, total_b)
    assert budget == GIB
    assert free_b - budget >= total_b // 10


def test_budget_obeys_max_bytes() -> None:
    assert gpu_budget_bytes("prefill", 40 * GIB, 48 * GIB, max_bytes=100 << 20) == 100 << 20


def test_a_nearly_full_card_is_refused_with_its_free_memory() -> None:
    with pytest.raises(BackendUnavailable, match=r"only 3072 MiB of 24576 MiB is free"):
        gpu_budget_bytes("decode", 3 * GIB, 24 * GIB)


# -- the torch engine against a fake torch ---------------------------------------------------


class _FakeTensor:
    def __init__(self, shape: tuple[int, ...], dtype: str, device: str) -> None:
        self.shape, self.dtype, self.device = shape, dtype, device

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * 2


def _fake_torch(free_b: int, total_b: int) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.float16 = "float16"  # type: ignore[attr-defined]
    torch.allocated = []  # type: ignore[attr-defined]
    torch.matmuls = []  # type: ignore[attr-defined]
    torch.synced_events = 0  # type: ignore[attr-defined]

    def alloc(shape: tuple[int, ...], *, dtype: str, device: str, **_: Any) -> _FakeTensor:
        tensor = _FakeTensor(tuple(shape), dtype, device)
        torch.allocated.append(tensor)  # type: ignore[attr-defined]
        return tensor

    def matmul(x: _FakeTensor, w: _FakeTensor, *, out: _FakeTensor) -> _FakeTensor:
        assert x.shape[1] == w.shape[0]
        assert out.shape == (x.shape[0], w.shape[1])
        torch.matmuls.append((x, w, out))  # type: ignore[attr-defined]
        return out

    class Event:
        def __init__(self, blocking: bool = False) -> None:
            self.blocking = blocking

        def record(self) -> None:
            self.recorded = True

        def synchronize(self) -> None:
            assert self.recorded
            torch.synced_events += 1  # type: ignore[attr-defined]

    class Generator:
        def __init__(self, device: str) -> None:
            self.device = device

        def manual_seed(self, seed: int) -> Generator:
            return self

    torch.randn = alloc  # type: ignore[attr-defined]
    torch.empty = alloc  # type: ignore[attr-defined]
    torch.matmul = matmul  # type: ignore[attr-defined]
    torch.Generator = Generator  # type: ignore[attr-defined]
    torch.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        is_available=lambda: True,
        mem_get_info=lambda: (free_b, total_b),
        synchronize=lambda: None,
        Event=Event,
    )
    return torch


def test_torch_engine_sizes_fp16_buffers_on_the_gpu_from_free_vram(monkeypatch) -> None:
    torch = _fake_torch(free_b=20 * GIB, total_b=24 * GIB)
    monkeypatch.setitem(sys.modules, "torch", torch)
    engine = open_engine("torch", "decode")
    allocated = torch.allocated  # type: ignore[attr-defined]
    assert {(t.dtype, t.device) for t in allocated} == {("float16", "cuda")}
    assert sum(t.nbytes for t in allocated) <= 2 * GIB
    assert engine.shape.weight_bytes >= MIN_WEIGHT_BYTES
    handle = engine.launch(3)
    assert len(torch.matmuls) == 3  # type: ignore[attr-defined]
    assert handle.blocking  # the waiting thread sleeps rather than spinning a CPU core
    engine.wait(handle)
    assert torch.synced_events == 1  # type: ignore[attr-defined]


def test_torch_engine_refuses_a_card_without_room_before_allocating(monkeypatch) -> None:
    torch = _fake_torch(free_b=2 * GIB, total_b=24 * GIB)
    monkeypatch.setitem(sys.modules, "torch", torch)
    with pytest.raises(BackendUnavailable, match="serving stack"):
        open_engine("torch", "batched")
    assert torch.allocated == []  # type: ignore[attr-defined]


def test_cpu_only_torch_is_named(monkeypatch) -> None:
    torch = _fake_torch(free_b=20 * GIB, total_b=24 * GIB)
    torch.cuda.is_available = lambda: False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    with pytest.raises(BackendUnavailable, match="sees no CUDA device"):
        open_engine("torch", "decode")


def test_auto_backend_without_torch_or_cupy_names_pip_install(monkeypatch) -> None:
    monkeypatch.setattr(synthetic, "available_backend", lambda: None)
    with pytest.raises(BackendUnavailable, match="pip install torch"):
        open_engine("auto", "decode")


def test_worker_refuses_a_uuid_other_than_the_visible_gpu(monkeypatch, capsys) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa")
    rc = synthetic.main(["--kind", "decode", "--device-uuid", "GPU-bbbb", "--backend", "torch"])
    assert rc == synthetic.EXIT_STARTUP_ERROR
    assert "GPU-aaaa" in json.loads(capsys.readouterr().out)["error"]


# -- the counting loop -----------------------------------------------------------------------


class _AsyncEngine:
    """Launches return at once; work completes only when waited for (like a CUDA stream)."""

    backend = "fake"
    pipelined = True

    def __init__(self) -> None:
        self.shape = GemmShape(m=1, k=8192, n=8192, elem_bytes=2)
        self.launched_calls = 0
        self.completed_calls = 0
        self.chunks_in_flight = 0
        self.max_chunks_in_flight = 0

    def launch(self, calls: int) -> int:
        self.launched_calls += calls
        self.chunks_in_flight += 1
        self.max_chunks_in_flight = max(self.max_chunks_in_flight, self.chunks_in_flight)
        return calls

    def wait(self, handle: int) -> None:
        time.sleep(0.002)
        self.completed_calls += handle
        self.chunks_in_flight -= 1


class _CheckedOut(io.StringIO):
    """Asserts, as each report is written, that it counts exactly the completed calls."""

    def __init__(self, engine: _AsyncEngine) -> None:
        super().__init__()
        self.engine = engine
        self.records: list[dict[str, Any]] = []
        self.reports_with_work_in_flight = 0

    def write(self, text: str) -> int:
        record = json.loads(text)
        engine = self.engine
        assert record["tokens"] == pytest.approx(
            engine.completed_calls * engine.shape.tokens_per_call
        )
        if engine.launched_calls > engine.completed_calls:
            self.reports_with_work_in_flight += 1
        self.records.append(record)
        return len(text)


def test_serve_counts_only_completed_work_and_drains_on_stop() -> None:
    engine = _AsyncEngine()
    out = _CheckedOut(engine)
    control = Control(running=threading.Event(), stop=threading.Event())
    control.running.set()
    thread = threading.Thread(
        target=serve,
        args=(engine,),
        kwargs={"kind": "decode", "control": control, "out": out, "report_every_s": 0.01},
    )
    thread.start()
    time.sleep(0.15)
    control.running.clear()
    deadline = time.monotonic() + 2.0
    while out.records[-1].get("running") is not False and time.monotonic() < deadline:
        time.sleep(0.005)
    paused_tokens = out.records[-1]["tokens"]
    time.sleep(0.05)
    control.request_stop("signal")
    thread.join(timeout=2)

    assert not thread.is_alive()
    assert out.reports_with_work_in_flight > 0  # launched-but-unfinished work was not counted
    assert engine.launched_calls == engine.completed_calls  # nothing left on the GPU
    assert out.records[-1] == {**out.records[-1], "exit": "signal"}
    assert out.records[-1]["tokens"] == paused_tokens  # pausing stopped the work
    tokens = [r["tokens"] for r in out.records]
    times = [r["t"] for r in out.records]
    assert tokens == sorted(tokens)
    assert tokens[-1] > 0
    assert times == sorted(times)
    # the GPU never runs dry (a chunk queued behind the one waited on) nor runs ahead
    assert engine.max_chunks_in_flight == 2


def test_serve_exits_when_the_parent_is_gone() -> None:
    engine = _AsyncEngine()
    out = _CheckedOut(engine)
    control = Control(running=threading.Event(), stop=threading.Event())
    control.running.set()
    tokens = serve(engine, kind="decode", control=control, out=out, parent_pid=-1)
    assert out.records[-1]["exit"] == "parent-exited"
    assert tokens == 0.0


def test_control_lines_steer_the_loop_and_a_closed_stdin_stops_it() -> None:
    control = Control(running=threading.Event(), stop=threading.Event())
    seen: list[bool] = []

    def lines() -> Iterator[str]:
        for line in ("run\n", "bogus\n", "pause\n"):
            yield line
            seen.append(control.running.is_set())  # resumed once the line was obeyed

    read_control(lines(), control)  # type: ignore[arg-type]
    assert seen == [True, True, False]
    assert control.stop.is_set()
    assert control.reason == "stdin-closed"


def test_exit_line_stops_with_its_reason() -> None:
    control = Control(running=threading.Event(), stop=threading.Event())
    read_control(io.StringIO("exit\nrun\n"), control)
    assert control.reason == "exit-command"


class _ClockedEngine:
    """Each call takes exactly ``call_s`` on a fake clock that advances when work is waited."""

    backend = "fake"
    pipelined = True

    def __init__(self, call_s: float) -> None:
        self.shape = GemmShape(m=4096, k=8192, n=8192, elem_bytes=2)
        self.call_s = call_s
        self.now_s = 100.0
        self.chunk_sizes: list[int] = []

    def clock(self) -> float:
        return self.now_s

    def launch(self, calls: int) -> int:
        self.chunk_sizes.append(calls)
        return calls

    def wait(self, handle: int) -> None:
        self.now_s += handle * self.call_s


def test_a_timed_run_reports_rates_over_the_time_spent_loading() -> None:
    engine = _ClockedEngine(call_s=0.002)  # 68.7 TFLOP/s for an 8192 × 8192 × 4096 GEMM
    out = io.StringIO()
    control = Control(running=threading.Event(), stop=threading.Event())
    control.running.set()
    serve(engine, kind="prefill", control=control, out=out, run_for_s=1.0, clock=engine.clock)
    final = json.loads(out.getvalue().splitlines()[-1])
    assert final["exit"] == "time-up"
    assert 1.0 <= final["busy_s"] < 1.1
    assert final["tflops"] == pytest.approx(engine.shape.flops_per_call / 0.002 / 1e12)
    assert final["weight_gbps"] == pytest.approx(engine.shape.weight_bytes / 0.002 / 1e9)
    assert final["tokens_per_s"] == pytest.approx(engine.shape.tokens_per_call / 0.002)
    # chunks settle where one takes CHUNK_TARGET_S (25 calls of 2 ms)
    assert engine.chunk_sizes[-1] == round(synthetic.CHUNK_TARGET_S / 0.002)


def _fake_cupy(free_b: int, total_b: int) -> types.ModuleType:
    """cupy over numpy arrays; matmul only records (fp16 GEMMs in numpy are slow)."""
    import numpy as np

    cupy = types.ModuleType("cupy")
    cupy.float16, cupy.float32 = np.float16, np.float32  # type: ignore[attr-defined]
    cupy.empty = np.empty  # type: ignore[attr-defined]
    cupy.matmuls = []  # type: ignore[attr-defined]
    cupy.events = []  # type: ignore[attr-defined]

    def matmul(x: Any, w: Any, *, out: Any) -> Any:
        assert out.shape == (x.shape[0], w.shape[1])
        cupy.matmuls.append(out)  # type: ignore[attr-defined]
        return out

    class Event:
        def __init__(self, block: bool = False, disable_timing: bool = False) -> None:
            self.block = block
            cupy.events.append(self)  # type: ignore[attr-defined]

        def record(self) -> None:
            pass

        def synchronize(self) -> None:
            pass

    cupy.matmul = matmul  # type: ignore[attr-defined]
    cupy.random = types.SimpleNamespace(default_rng=np.random.default_rng)  # type: ignore[attr-defined]
    cupy.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        runtime=types.SimpleNamespace(memGetInfo=lambda: (free_b, total_b)),
        Device=lambda: types.SimpleNamespace(synchronize=lambda: None),
        Event=Event,
    )
    return cupy


def test_cupy_engine_fills_fp16_buffers_with_random_data_and_waits_on_blocking_events(
    monkeypatch,
) -> None:
    # 8 GiB card, 1 GiB headroom, 16 MiB for the load: a 1024 × 2048 × 2048 prefill GEMM
    cupy = _fake_cupy(free_b=GIB + 2 * (16 << 20), total_b=8 * GIB)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    engine = open_engine("cupy", "prefill")
    assert engine.shape == GemmShape(m=1024, k=2048, n=2048, elem_bytes=2)
    w = engine.w  # type: ignore[attr-defined]
    assert w.dtype == "float16"
    assert (w != 0).mean() > 0.99  # random everywhere: constant data draws less power
    engine.wait(engine.launch(2))
    assert len(cupy.matmuls) == 2  # type: ignore[attr-defined]
    assert [e.block for e in cupy.events] == [True]  # type: ignore[attr-defined]
