"""``openai:`` workloads against a bounded server on 127.0.0.1: lifecycle, attribution, errors."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tuning.errors import ConfigError, WorkloadFailed
from tuning.workloads import OpenAIWorkload, make_workload, parse_openai_spec

GPU_A = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
GPU_B = "GPU-bbbbbbbb-0000-0000-0000-000000000000"
TOKENS_PER_REQUEST = 17
MAX_REQUESTS = 400  # the server refuses (503) past this, and shuts itself down after 10 s


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    served = 0
    models: list[str]
    bodies: list[dict]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._reply(200, {"data": [{"id": "served-model"}]})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.served += 1
        if self.server.served > MAX_REQUESTS:
            self._reply(503, {"error": "test server request budget spent"})
            return
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            self._reply(404, {"error": f"no route {self.path}"})
            return
        self.server.bodies.append(body)
        time.sleep(0.01)  # a request takes time: bounds the request rate
        usage = {"prompt_tokens": 9, "completion_tokens": TOKENS_PER_REQUEST}
        self._reply(200, {"choices": [{"text": "ok"}], "usage": usage})

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Endpoint:
    url: str
    server: _Server


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    killer = threading.Timer(10.0, server.shutdown)  # stops by itself if a test hangs
    killer.daemon = True
    killer.start()
    yield Endpoint(f"http://127.0.0.1:{server.server_address[1]}", server)
    killer.cancel()
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_load_restarts_after_stop_and_counts_only_while_started(endpoint: Endpoint) -> None:
    load = OpenAIWorkload(endpoint.url, concurrency=2)
    try:
        load.start(GPU_A)
        _wait(lambda: load.ready(GPU_A))
        _wait(lambda: load.tokens_total(GPU_A) >= 3 * TOKENS_PER_REQUEST)
        load.stop(GPU_A)
        assert not load.ready(GPU_A)
        stopped = load.tokens_total(GPU_A)
        assert stopped % TOKENS_PER_REQUEST == 0
        time.sleep(0.05)  # a cancelled request's bytes may still reach the server
        served = endpoint.server.served
        time.sleep(0.1)
        assert load.tokens_total(GPU_A) == stopped  # nothing counted while stopped
        assert endpoint.server.served == served  # and nothing sent
        load.start(GPU_A)  # the bug: a second start never loaded again
        _wait(lambda: load.tokens_total(GPU_A) >= stopped + 3 * TOKENS_PER_REQUEST)
        assert load.ready(GPU_A)
    finally:
        load.close()
    assert endpoint.server.bodies[0]["model"] == "served-model"  # asked /v1/models


def test_each_gpu_is_credited_with_its_own_endpoint_only(endpoint: Endpoint) -> None:
    load = OpenAIWorkload(f"{GPU_A}={endpoint.url},{GPU_B}={endpoint.url}/v1/chat/completions")
    try:
        load.start(GPU_A)
        _wait(lambda: load.tokens_total(GPU_A) >= 2 * TOKENS_PER_REQUEST)
        assert load.tokens_total(GPU_B) == 0.0  # never started: no tokens
        load.start(GPU_B)
        _wait(lambda: load.tokens_total(GPU_B) >= 2 * TOKENS_PER_REQUEST)
        load.stop(GPU_A)
        frozen_a = load.tokens_total(GPU_A)
        b_before = load.tokens_total(GPU_B)
        _wait(lambda: load.tokens_total(GPU_B) >= b_before + 2 * TOKENS_PER_REQUEST)
        assert load.tokens_total(GPU_A) == frozen_a
        served = endpoint.server.served
        total = (load.requests(GPU_A) + load.requests(GPU_B)) * TOKENS_PER_REQUEST
        assert load.tokens_total(GPU_A) + load.tokens_total(GPU_B) == total
        assert served >= load.requests(GPU_A) + load.requests(GPU_B)
    finally:
        load.close()
    assert any("messages" in b for b in endpoint.server.bodies)  # GPU B's chat endpoint


def test_one_endpoint_refuses_a_second_gpu(endpoint: Endpoint) -> None:
    load = OpenAIWorkload(endpoint.url)
    try:
        load.start(GPU_A)
        with pytest.raises(ConfigError, match="cannot be attributed"):
            load.start(GPU_B)
        assert load.tokens_total(GPU_B) == 0.0
    finally:
        load.close()


def test_a_gpu_without_an_endpoint_cannot_start(endpoint: Endpoint) -> None:
    load = OpenAIWorkload({GPU_A: endpoint.url})
    with pytest.raises(ConfigError, match=f"GPU {GPU_B} has no endpoint"):
        load.start(GPU_B)


def test_a_dead_endpoint_fails_loudly() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    load = OpenAIWorkload(url, timeout_s=1.0)
    try:
        load.start(GPU_A)
        with pytest.raises(WorkloadFailed, match=r"could not be reached.*ConnectError") as caught:
            _wait(lambda: load.tokens_total(GPU_A) < 0)
        assert url in str(caught.value)
        with pytest.raises(WorkloadFailed):
            load.start(GPU_A)
    finally:
        load.close()


def test_an_http_error_names_the_status(endpoint: Endpoint) -> None:
    load = OpenAIWorkload(f"{endpoint.url}/wrong/completions", model="m")
    try:
        load.start(GPU_A)
        with pytest.raises(WorkloadFailed, match="answered HTTP 404"):
            _wait(lambda: load.tokens_total(GPU_A) < 0)
    finally:
        load.close()


def test_spec_syntax() -> None:
    assert parse_openai_spec("http://h:8000") == {None: "http://h:8000"}
    assert parse_openai_spec("0=http://h:8000, GPU-b=https://h:8001/v1") == {
        "0": "http://h:8000",
        "GPU-b": "https://h:8001/v1",
    }
    with pytest.raises(ConfigError, match="two GPUs"):
        parse_openai_spec("0=http://h:8000,1=http://h:8000")
    with pytest.raises(ConfigError, match="neither one http"):
        parse_openai_spec("h:8000")


class _Gpu:
    def __init__(self, uuid: str) -> None:
        self.uuid = uuid


class _Rig:
    def __init__(self, *uuids: str) -> None:
        self.gpus = [_Gpu(u) for u in uuids]


def test_make_workload_maps_indices_and_needs_every_gpu() -> None:
    rig = _Rig(GPU_A, GPU_B)
    load = make_workload("openai:0=http://h:8000,1=http://h:8001", rig)  # type: ignore[arg-type]
    assert isinstance(load, OpenAIWorkload)
    assert load.endpoints == {GPU_A: "http://h:8000", GPU_B: "http://h:8001"}
    with pytest.raises(ConfigError, match=f"no endpoint for GPU {GPU_B}"):
        make_workload(f"openai:{GPU_A}=http://h:8000", rig)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="one endpoint but the rig has 2 GPUs"):
        make_workload("openai:http://h:8000", rig)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not on this rig"):
        make_workload("openai:0=http://h:8000,1=http://h:8001,7=http://h:8002", rig)  # type: ignore[arg-type]
    single = make_workload("openai:http://h:8000", _Rig(GPU_A))  # type: ignore[arg-type]
    assert isinstance(single, OpenAIWorkload)
    assert single.endpoints == {GPU_A: "http://h:8000"}
