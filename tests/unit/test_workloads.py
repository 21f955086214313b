"""Workloads: llama-bench parsing, an external command, an OpenAI endpoint on loopback."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from tuning.errors import BackendUnavailable, ConfigError, WorkloadFailed
from tuning.workloads import (
    CmdWorkload,
    make_workload,
    parse_tps,
    run_openai_load,
)

# llama-bench's markdown output (columns trimmed to fit the line length)
LLAMA_BENCH_MD = """\
| model                |       size | backend | ngl | test   |              t/s |
| -------------------- | ---------: | ------- | --: | ------ | ---------------: |
| llama 7B mostly Q4_0 |   3.56 GiB | CUDA    |  99 | pp 512 |  2368.80 ± 93.24 |
| llama 7B mostly Q4_0 |   3.56 GiB | CUDA    |  99 | tg 128 |    131.66 ± 0.23 |

build: 8e672efe (2826)
"""


def test_default_regex_takes_llama_bench_last_t_per_s() -> None:
    assert parse_tps(LLAMA_BENCH_MD) == pytest.approx(131.66)


def test_custom_regex_reads_a_vllm_style_line() -> None:
    text = "Output token throughput (tok/s): 1234.5\n"
    assert parse_tps(text, r"Output token throughput \(tok/s\):\s*(?P<tps>[\d.]+)") == 1234.5
    assert parse_tps("nothing here") is None


def test_cmd_workload_runs_the_command_on_the_gpu_and_parses_its_rate() -> None:
    script = "import os; print('| x | tg 128 | 42.5 ± 0.1 |', os.environ['CUDA_VISIBLE_DEVICES'])"
    load = CmdWorkload(
        f'{sys.executable} -c "{script}"', tps_regex=r"(?P<tps>[\d.]+) ± [\d.]+ \| GPU-abc$"
    )
    tps, elapsed = load.run_once("GPU-abc")
    assert tps == 42.5
    assert elapsed > 0


def test_cmd_workload_without_a_match_says_what_it_expected() -> None:
    load = CmdWorkload(f"{sys.executable} -c \"print('hello')\"")
    with pytest.raises(WorkloadFailed, match="printed no throughput"):
        load.run_once("GPU-abc")


class _Completions(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Completions.seen.append({"path": self.path, **body})
        payload = json.dumps(
            {"choices": [{"text": "ok"}], "usage": {"prompt_tokens": 9, "completion_tokens": 17}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Completions)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    _Completions.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_openai_load_counts_completion_tokens(local_server: str) -> None:
    result = asyncio.run(run_openai_load(local_server, requests=6, concurrency=3))
    assert result.requests == 6
    assert result.completion_tokens == 6 * 17
    assert result.tokens_per_s > 0
    assert {s["path"] for s in _Completions.seen} == {"/v1/completions"}


def test_openai_chat_endpoint_sends_messages(local_server: str) -> None:
    asyncio.run(run_openai_load(f"{local_server}/v1/chat/completions", requests=2))
    assert all("messages" in s for s in _Completions.seen)


def test_synthetic_load_without_torch_or_cupy_names_the_alternatives(monkeypatch) -> None:
    monkeypatch.setattr("tuning.workloads.synthetic.synthetic_backend", lambda: None)
    with pytest.raises(BackendUnavailable, match=r"cmd:.*openai:"):
        make_workload("decode", rig=object())  # type: ignore[arg-type]


def test_unknown_workload_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="decode, prefill, batched"):
        make_workload("training", rig=object())  # type: ignore[arg-type]
