"""Workloads the tuner loads GPUs with, behind one interface.

A :class:`Workload` is started and stopped per GPU (by UUID) and keeps a cumulative count of
output tokens per GPU; the sweep measures throughput as Δtokens / Δt over a probe window, so
every workload — simulated, an external command, an HTTP endpoint — is measured the same way.

Specs (``rigforge sweep --workload``):

* ``decode`` | ``prefill`` | ``batched`` — on a simulated rig, its workload classes
  (:class:`SimWorkload`); on real GPUs a synthetic load, one worker process per GPU, that
  needs torch or cupy (:class:`SyntheticWorkload`, :mod:`tuning.synthetic`).
* ``cmd:COMMAND`` — run ``COMMAND`` in a loop on each GPU (``CUDA_VISIBLE_DEVICES=<uuid>``,
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, its own process group) and parse tokens/s from each run's
  stdout with a regex whose group ``tps`` is the rate (default: llama-bench's markdown ``t/s``
  column, ``| … | tg 128 | 131.66 ± 0.23 |``; the last match of a run counts). The token
  counter grows continuously at the last completed run's rate (one run late, for at most
  twice that run's duration), so a probe window sees a rate between completions.
* ``openai:URL`` (a rig with one GPU) or ``openai:GPU=URL,GPU=URL,…`` (``GPU``: a UUID or an
  index in the rig's order; every GPU needs its own endpoint) — ``concurrency`` requests in
  flight per GPU against an OpenAI-compatible endpoint (``/v1/completions`` unless the URL
  ends in ``/chat/completions``); output tokens are ``usage.completion_tokens``, credited to
  the GPU whose endpoint answered. One endpoint serving several GPUs is refused: its tokens
  cannot be attributed to one GPU's cap.

Failure contract: :meth:`Workload.tokens_total` (and :meth:`Workload.start`) raise
:class:`~tuning.errors.WorkloadFailed` — a sentence naming the command or endpoint, its exit
status or HTTP error, and what to do — once the load on that GPU has failed, or has produced
no tokens for longer than its own timeout while started. Readiness contract:
:meth:`Workload.ready` is False after :meth:`~Workload.start`/:meth:`~Workload.settle` until
the load has measured the GPU's current operating point; a probe window should only judge
steadiness once it is True.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tuning.backends.base import Rig
from tuning.errors import BackendUnavailable, ConfigError, WorkloadFailed
from tuning.synthetic import WorkerProcess

WORKLOAD_CLASSES = ("decode", "prefill", "batched")

#: llama-bench's markdown row ends with ``| 131.66 ± 0.23 |`` (mean ± stddev tokens/s)
LLAMA_BENCH_TPS_RE = r"(?P<tps>\d+(?:\.\d+)?)\s*±\s*\d+(?:\.\d+)?\s*\|?\s*$"


class Workload(ABC):
    """Load on GPUs, counted in output tokens."""

    name: str

    @abstractmethod
    def start(self, uuid: str) -> None:
        """Begin loading the GPU (idempotent)."""

    @abstractmethod
    def stop(self, uuid: str) -> None:
        """Stop loading the GPU (idempotent)."""

    @abstractmethod
    def tokens_total(self, uuid: str) -> float:
        """Output tokens produced on the GPU since the workload was created.

        Raises :class:`~tuning.errors.WorkloadFailed` once the load on the GPU has failed
        (what it measured since then is void).
        """

    def ready(self, uuid: str) -> bool:
        """True when :meth:`tokens_total` grows at the rate of the GPU's current operating
        point: a probe window should not start judging before. Loads that count continuously
        are always ready; a ``cmd:`` load is ready once a run started after the last
        :meth:`start`/:meth:`settle` has completed, an ``openai:`` load once such a request
        has completed."""
        return True

    def settle(self, uuid: str) -> None:  # noqa: B027 - optional hook
        """The GPU's operating point (its cap) changed while loaded: :meth:`ready` turns False
        until the load has measured the new point."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop everything and release resources."""


class SimWorkload(Workload):
    """The simulated rig's workload classes; the only sim-specific code in the tuner."""

    def __init__(self, rig: Any, workload_class: str) -> None:
        if workload_class not in WORKLOAD_CLASSES:
            raise ConfigError(
                f"unknown workload class {workload_class!r}; choose one of {WORKLOAD_CLASSES}"
            )
        self.rig = rig
        self.name = workload_class
        self._running: set[str] = set()

    def start(self, uuid: str) -> None:
        if uuid not in self._running:
            self.rig.set_workload(uuid, self.name)
            self._running.add(uuid)

    def stop(self, uuid: str) -> None:
        if uuid in self._running:
            self.rig.set_workload(uuid, None)
            self._running.discard(uuid)

    def tokens_total(self, uuid: str) -> float:
        return float(self.rig.tokens_total(uuid))

    def close(self) -> None:
        for uuid in list(self._running):
            self.stop(uuid)


# --------------------------------------------------------------------------------------------
# cmd:
# --------------------------------------------------------------------------------------------


def parse_tps(output: str, pattern: str = LLAMA_BENCH_TPS_RE) -> float | None:
    """The last tokens/s figure in ``output`` (regex group ``tps``, or group 1), else ``None``."""
    regex = re.compile(pattern, re.MULTILINE)
    last = None
    for match in regex.finditer(output):
        last = match.group("tps") if "tps" in regex.groupindex else match.group(1)
    return float(last) if last is not None else None


def _tail(text: str, chars: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= chars else "…" + text[-chars:]


@dataclass
class _CmdGpu:
    """One GPU's command loop and token playback (guarded by :attr:`CmdWorkload._lock`).

    The counter is ``base_tokens + rate_tps × (now − anchor_s)`` while running, the slope
    being the last completed run's rate, played back for at most ``playback_s``.
    """

    generation: int = 0
    running: bool = False
    base_tokens: float = 0.0
    anchor_s: float = 0.0
    rate_tps: float = 0.0
    playback_s: float = 0.0
    mark_s: float = 0.0
    ready: bool = False
    idle_since_s: float | None = None
    error: str | None = None
    proc: subprocess.Popen[str] | None = None
    thread: threading.Thread | None = None

    def tokens_at(self, now_s: float) -> float:
        if not self.running:
            return self.base_tokens
        return self.base_tokens + self.rate_tps * min(now_s - self.anchor_s, self.playback_s)

    def freeze(self, now_s: float) -> None:
        self.base_tokens = self.tokens_at(now_s)
        self.anchor_s = now_s


class CmdWorkload(Workload):
    """Run an external benchmark in a loop per GPU, its rate played back continuously.

    Each run's tokens/s is parsed from its stdout (``tps_regex``). The cumulative counter grows
    at the rate of the last completed run while the next one is in flight (so a probe window
    sees a rate between completions, one run late), for at most twice that run's duration:
    a run that hangs stops the count instead of inventing tokens. :meth:`ready` is False after
    :meth:`start`/:meth:`settle` until a run that started afterwards has completed — the
    first rate that belongs to the GPU's current operating point. Keep runs short (a few
    seconds: ``llama-bench -r 1 -n 64``) so a probe window sees several.

    Failures raise :class:`~tuning.errors.WorkloadFailed` from :meth:`tokens_total` and
    :meth:`start`: a run that exits non-zero, prints no rate, cannot be started, outlives
    ``timeout_s``, or a GPU whose counter has not grown for ``timeout_s`` while started.
    :meth:`stop` ends the run in flight (SIGTERM to its process group, SIGKILL after
    ``kill_grace_s``); its partial run is not counted.
    """

    def __init__(
        self,
        command: str,
        *,
        tps_regex: str = LLAMA_BENCH_TPS_RE,
        timeout_s: float = 600.0,
        kill_grace_s: float = 2.0,
    ) -> None:
        if not command.strip():
            raise ConfigError("cmd: workload needs a command, e.g. 'cmd:llama-bench -m model.gguf'")
        try:
            re.compile(tps_regex)
        except re.error as error:
            raise ConfigError(
                f"the tokens/s regex {tps_regex!r} does not compile: {error}"
            ) from error
        self.name = f"cmd:{command}"
        self.command = command
        self.argv = shlex.split(command)
        self.tps_regex = tps_regex
        self.timeout_s = timeout_s
        self.kill_grace_s = kill_grace_s
        self._gpus: dict[str, _CmdGpu] = {}
        self._lock = threading.Lock()

    # -- one run ------------------------------------------------------------------------------

    def _env(self, uuid: str) -> dict[str, str]:
        return {**os.environ, "CUDA_VISIBLE_DEVICES": uuid, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    def _judge(self, uuid: str, returncode: int, stdout: str, stderr: str) -> float:
        """The run's tokens/s, or :class:`WorkloadFailed` saying why there is none."""
        tps = parse_tps(stdout, self.tps_regex)
        by_hand = f"run it by hand with CUDA_VISIBLE_DEVICES={uuid} to see why"
        if returncode < 0:
            raise WorkloadFailed(
                f"the workload command {self.command!r} on GPU {uuid} was killed by signal "
                f"{-returncode} (stderr: {_tail(stderr)!r}); {by_hand}"
            )
        if returncode != 0:
            raise WorkloadFailed(
                f"the workload command {self.command!r} on GPU {uuid} exited with status "
                f"{returncode} (stderr: {_tail(stderr)!r}); {by_hand}"
            )
        if tps is None:
            raise WorkloadFailed(
                f"the workload command {self.command!r} on GPU {uuid} printed no throughput "
                f"matching {self.tps_regex!r} (last output: {_tail(stdout)!r}); pass a regex "
                "whose group (?P<tps>…) matches its tokens/s (--tps-regex)"
            )
        return tps

    def run_once(self, uuid: str) -> tuple[float, float]:
        """Run the command once on ``uuid`` (blocking); return (tokens/s, seconds).

        Raises :class:`WorkloadFailed` when it fails, prints no rate or outlives ``timeout_s``.
        """
        started = time.monotonic()
        try:
            done = subprocess.run(
                self.argv,
                env=self._env(uuid),
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise self._timeout(uuid) from error
        except OSError as error:
            raise self._unstartable(uuid, error) from error
        tps = self._judge(uuid, done.returncode, done.stdout, done.stderr)
        return tps, time.monotonic() - started

    def _timeout(self, uuid: str) -> WorkloadFailed:
        return WorkloadFailed(
            f"the workload command {self.command!r} on GPU {uuid} ran past its "
            f"{self.timeout_s:g} s timeout and was killed (a hung GPU, or one run is too "
            "long: make a run take seconds)"
        )

    def _unstartable(self, uuid: str, error: OSError) -> WorkloadFailed:
        return WorkloadFailed(
            f"the workload command {self.command!r} on GPU {uuid} could not be started "
            f"({error}); check the program name and PATH in --workload cmd:…"
        )

    # -- the loop -----------------------------------------------------------------------------

    def _fail(self, uuid: str, generation: int, error: WorkloadFailed) -> None:
        with self._lock:
            gpu = self._gpus[uuid]
            if gpu.generation == generation and gpu.error is None:
                gpu.error = str(error)

    def _credit(
        self, gpu: _CmdGpu, generation: int, started_s: float, ended_s: float, tps: float
    ) -> None:
        with self._lock:
            if gpu.generation != generation or not gpu.running:
                return  # stopped meanwhile: the run is void
            gpu.freeze(ended_s)
            gpu.rate_tps = tps
            gpu.playback_s = 2.0 * (ended_s - started_s)
            if started_s >= gpu.mark_s:
                gpu.ready = True
            if tps > 0:
                gpu.idle_since_s = None
            elif gpu.idle_since_s is None:
                gpu.idle_since_s = ended_s

    def _loop(self, uuid: str, generation: int) -> None:
        gpu = self._gpus[uuid]
        while True:
            with self._lock:
                if gpu.generation != generation:
                    return
            started = time.monotonic()
            try:
                proc = subprocess.Popen(
                    self.argv,
                    env=self._env(uuid),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,  # its own process group: stop() ends its children too
                )
            except OSError as error:
                self._fail(uuid, generation, self._unstartable(uuid, error))
                return
            with self._lock:
                current = gpu.generation == generation
                if current:
                    gpu.proc = proc
            if not current:
                _end_group(proc, self.kill_grace_s)
                return
            try:
                stdout, stderr = proc.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _end_group(proc, self.kill_grace_s)
                self._fail(uuid, generation, self._timeout(uuid))
                return
            ended = time.monotonic()
            with self._lock:
                if gpu.generation != generation:
                    return  # stop() ended it: not a failure
                gpu.proc = None
            try:
                tps = self._judge(uuid, proc.returncode, stdout, stderr)
            except WorkloadFailed as error:
                self._fail(uuid, generation, error)
                return
            self._credit(gpu, generation, started, ended, tps)

    # -- Workload -----------------------------------------------------------------------------

    def start(self, uuid: str) -> None:
        """Begin the command loop on ``uuid`` (idempotent); raises if it has failed before."""
        with self._lock:
            gpu = self._gpus.setdefault(uuid, _CmdGpu())
            if gpu.error is not None:
                raise WorkloadFailed(gpu.error)
            if gpu.running:
                return
            now = time.monotonic()
            gpu.generation += 1
            gpu.running = True
            gpu.anchor_s = gpu.mark_s = gpu.idle_since_s = now
            gpu.rate_tps = gpu.playback_s = 0.0
            gpu.ready = False
            gpu.thread = threading.Thread(
                target=self._loop, args=(uuid, gpu.generation), daemon=True, name=f"cmd-{uuid}"
            )
            gpu.thread.start()

    def stop(self, uuid: str) -> None:
        """End the run in flight on ``uuid`` (not counted) and freeze its counter."""
        with self._lock:
            gpu = self._gpus.get(uuid)
            if gpu is None or not gpu.running:
                return
            gpu.freeze(time.monotonic())
            gpu.running = False
            gpu.ready = False
            gpu.generation += 1
            proc, gpu.proc = gpu.proc, None
        if proc is not None:
            _end_group(proc, self.kill_grace_s)

    def settle(self, uuid: str) -> None:
        """The GPU's operating point changed: not :meth:`ready` until a fresh run completes."""
        with self._lock:
            gpu = self._gpus.get(uuid)
            if gpu is not None:
                gpu.mark_s = time.monotonic()
                gpu.ready = False

    def ready(self, uuid: str) -> bool:
        """True once a run started after the last :meth:`start`/:meth:`settle` has completed."""
        with self._lock:
            gpu = self._gpus.get(uuid)
            return gpu is not None and gpu.running and gpu.ready

    def tokens_total(self, uuid: str) -> float:
        """Tokens credited to ``uuid`` (see the class docstring); raises WorkloadFailed."""
        with self._lock:
            gpu = self._gpus.get(uuid)
            if gpu is None:
                return 0.0
            now = time.monotonic()
            if gpu.error is None and gpu.running:
                idle_from = gpu.idle_since_s
                if idle_from is None and now - gpu.anchor_s > gpu.playback_s:
                    idle_from = gpu.anchor_s + gpu.playback_s
                if idle_from is not None and now - idle_from > self.timeout_s:
                    gpu.error = (
                        f"the workload command {self.command!r} on GPU {uuid} produced no "
                        f"tokens for {now - idle_from:.0f} s (over its {self.timeout_s:g} s "
                        "timeout); check the GPU (nvidia-smi, dmesg for Xid) and the command"
                    )
            if gpu.error is not None:
                raise WorkloadFailed(gpu.error)
            return gpu.tokens_at(now)

    def close(self) -> None:
        for uuid in list(self._gpus):
            self.stop(uuid)


def _end_group(proc: subprocess.Popen[str], grace_s: float) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after ``grace_s``, reap ``proc``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


# --------------------------------------------------------------------------------------------
# openai:URL
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    """A bounded HTTP load run: completed requests, output tokens, wall seconds."""

    requests: int
    completion_tokens: int
    elapsed_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _endpoint(url: str) -> tuple[str, bool]:
    """(full URL, is_chat). A bare server URL gets ``/v1/completions``."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url, True
    if url.endswith("/completions"):
        return url, False
    if url.endswith("/v1"):
        return url + "/completions", False
    return url + "/v1/completions", False


async def run_openai_load(
    url: str,
    *,
    requests: int,
    concurrency: int = 4,
    model: str = "default",
    prompt: str = "Write a long story about a GPU that learned to save power.",
    max_tokens: int = 128,
    timeout_s: float = 120.0,
) -> LoadResult:
    """Send ``requests`` completions, ``concurrency`` at a time; sum ``usage.completion_tokens``."""
    endpoint, chat = _endpoint(url)
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0.0}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    semaphore = asyncio.Semaphore(concurrency)
    tokens = 0
    done = 0

    async with httpx.AsyncClient(timeout=timeout_s) as client:

        async def one() -> None:
            nonlocal tokens, done
            async with semaphore:
                response = await client.post(endpoint, json=body)
                response.raise_for_status()
                usage = response.json().get("usage") or {}
                tokens += int(usage.get("completion_tokens", 0))
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(requests)))
        elapsed = time.monotonic() - started
    return LoadResult(requests=done, completion_tokens=tokens, elapsed_s=elapsed)


#: a GPU key in ``openai:KEY=URL,…``: a UUID (GPU-…/MIG-…) or an index on the rig
_OPENAI_PAIR_RE = re.compile(r"^\s*(?P<key>[^=,\s/:]+)\s*=\s*(?P<url>https?://\S+?)\s*$")


def parse_openai_spec(spec: str) -> dict[str | None, str]:
    """``URL`` → ``{None: URL}``; ``KEY=URL,KEY=URL`` → ``{KEY: URL, …}``.

    Raises :class:`ConfigError` for anything else, and for one URL under two keys (an
    endpoint serving several GPUs cannot be attributed to one of them).
    """
    spec = spec.strip()
    if spec.startswith(("http://", "https://")) and "," not in spec:
        return {None: spec}
    pairs: dict[str | None, str] = {}
    for item in spec.split(","):
        match = _OPENAI_PAIR_RE.match(item)
        if match is None:
            raise ConfigError(
                f"openai: workload {spec!r} is neither one http(s) URL nor GPU=URL pairs; "
                "write openai:http://127.0.0.1:8000 (one GPU) or "
                "openai:GPU-aaaa=http://127.0.0.1:8000,GPU-bbbb=http://127.0.0.1:8001"
            )
        key, url = match["key"], match["url"]
        if key in pairs:
            raise ConfigError(f"openai: workload names GPU {key!r} twice")
        if url in pairs.values():
            raise ConfigError(
                f"openai: workload maps {url} to two GPUs; an endpoint serving several GPUs "
                "(tensor parallel) cannot be measured per GPU: sweep a one-GPU endpoint each"
            )
        pairs[key] = url
    return pairs


class _EndpointLoad:
    """Continuous load on one endpoint for one GPU: ``concurrency`` requests in flight, in a
    background thread with its own event loop; restartable after :meth:`stop`."""

    def __init__(
        self,
        uuid: str,
        url: str,
        *,
        concurrency: int,
        model: str | None,
        prompt: str,
        max_tokens: int,
        timeout_s: float,
    ) -> None:
        self.uuid = uuid
        self.url = url
        self.endpoint, self.chat = _endpoint(url)
        self.concurrency = concurrency
        self.model = model
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._mark_s = 0.0
        self._ready = False
        self._progress_s = 0.0
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests = 0

    # -- control ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        self.check()
        if self.running:
            return
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s)  # a stopping run finishes its cancel
        now = time.monotonic()
        with self._lock:
            self._mark_s = self._progress_s = now
            self._ready = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), daemon=True, name=f"openai-{self.uuid}"
        )
        self._thread.start()

    def stop(self, wait_s: float = 2.0) -> None:
        self._stop.set()
        with self._lock:
            self._ready = False
        if self._thread is not None:
            self._thread.join(timeout=wait_s)

    def settle(self) -> None:
        with self._lock:
            self._mark_s = time.monotonic()
            self._ready = False

    def ready(self) -> bool:
        with self._lock:
            return self._ready and self.running

    def check(self) -> None:
        """Raise :class:`WorkloadFailed` if a request failed or nothing came for timeout_s."""
        with self._lock:
            if self._error is None and self.running:
                silent_s = time.monotonic() - self._progress_s
                if silent_s > self.timeout_s:
                    self._error = (
                        f"the openai: endpoint {self.endpoint} for GPU {self.uuid} produced no "
                        f"tokens for {silent_s:.0f} s (over its {self.timeout_s:g} s timeout); "
                        "check the server's log and that it reports usage.completion_tokens"
                    )
            if self._error is not None:
                raise WorkloadFailed(self._error)

    def tokens(self) -> float:
        self.check()
        with self._lock:
            return self._tokens

    # -- the load -----------------------------------------------------------------------------

    def _fail(self, stop: threading.Event, message: str) -> None:
        with self._lock:
            if not stop.is_set() and self._error is None:
                self._error = message
        stop.set()

    def _run(self, stop: threading.Event) -> None:
        try:
            asyncio.run(self._serve(stop))
        except Exception as error:  # a bug here must still surface as this load failing
            self._fail(
                stop, f"the openai: load for GPU {self.uuid} on {self.endpoint} died: {error!r}"
            )

    async def _discover_model(self, client: httpx.AsyncClient) -> str:
        """The first model the server lists at ``…/v1/models`` (vLLM needs its exact name)."""
        base = self.endpoint.removesuffix("/chat/completions").removesuffix("/completions")
        try:
            response = await client.get(base + "/models")
            response.raise_for_status()
            return str(response.json()["data"][0]["id"])
        except (httpx.HTTPStatusError, ValueError, KeyError, IndexError, TypeError):
            return "default"  # the server lists none: llama.cpp serves whatever is loaded

    async def _serve(self, stop: threading.Event) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            try:
                model = self.model or await self._discover_model(client)
            except httpx.RequestError as error:
                self._fail(stop, self._unreachable(error))
                return
            body: dict[str, Any] = {
                "model": model,
                "max_tokens": self.max_tokens,
                "temperature": 0.0,
            }
            if self.chat:
                body["messages"] = [{"role": "user", "content": self.prompt}]
            else:
                body["prompt"] = self.prompt
            workers = [
                asyncio.create_task(self._worker(client, body, stop))
                for _ in range(self.concurrency)
            ]
            try:
                while not stop.is_set() and not all(w.done() for w in workers):
                    await asyncio.sleep(0.02)
            finally:
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    def _unreachable(self, error: httpx.RequestError) -> str:
        return (
            f"the openai: endpoint {self.endpoint} for GPU {self.uuid} could not be reached "
            f"({type(error).__name__}: {error}); is the server running and listening there?"
        )

    async def _worker(
        self, client: httpx.AsyncClient, body: dict[str, Any], stop: threading.Event
    ) -> None:
        while not stop.is_set():
            sent_s = time.monotonic()
            try:
                response = await client.post(self.endpoint, json=body)
            except httpx.RequestError as error:
                self._fail(stop, self._unreachable(error))
                return
            if response.is_error:
                self._fail(
                    stop,
                    f"the openai: endpoint {self.endpoint} for GPU {self.uuid} answered HTTP "
                    f"{response.status_code} ({_tail(response.text, 200)!r}); check the URL "
                    "(…/v1/completions or …/v1/chat/completions) and the served model",
                )
                return
            try:
                tokens = int(response.json()["usage"]["completion_tokens"])
            except (ValueError, KeyError, TypeError):
                self._fail(
                    stop,
                    f"the openai: endpoint {self.endpoint} for GPU {self.uuid} answered without "
                    f"usage.completion_tokens ({_tail(response.text, 200)!r}); rigforge counts "
                    "tokens from it: use an OpenAI-compatible server that reports usage",
                )
                return
            done_s = time.monotonic()
            with self._lock:
                if stop.is_set():
                    return  # stopped while in flight: not counted
                self._tokens += tokens
                self.requests += 1
                if tokens > 0:
                    self._progress_s = done_s
                if sent_s >= self._mark_s:
                    self._ready = True


class OpenAIWorkload(Workload):
    """Continuous HTTP load against OpenAI-compatible endpoints, one endpoint per GPU.

    ``targets``: ``"URL"`` — one endpoint measured as one unit, credited to the only GPU
    started (starting a second GPU raises :class:`ConfigError`: its tokens cannot be split
    between GPUs) — or ``"UUID=URL,UUID=URL"`` / a mapping: each GPU loaded through its own
    endpoint and credited with that endpoint's tokens only. Starting a GPU that has no
    endpoint raises :class:`ConfigError`; a GPU never started has 0 tokens.

    Per GPU, ``concurrency`` requests are kept in flight (``max_tokens`` each); tokens are
    ``usage.completion_tokens``, counted when a response arrives. ``model``: ``None`` asks
    the server (``/v1/models``, first entry; else ``"default"``). :meth:`stop` cancels the
    requests in flight (not counted); :meth:`start` after it starts a fresh load. An HTTP
    error, an unreachable server, a response without usage, or no tokens for ``timeout_s``
    while started makes :meth:`tokens_total`/:meth:`start` raise
    :class:`~tuning.errors.WorkloadFailed`.
    """

    def __init__(
        self,
        targets: str | Mapping[str, str],
        *,
        concurrency: int = 4,
        model: str | None = None,
        prompt: str = "Write a long story about a GPU that learned to save power.",
        max_tokens: int = 128,
        timeout_s: float = 120.0,
    ) -> None:
        pairs: dict[str | None, str] = {}
        pairs.update(parse_openai_spec(targets) if isinstance(targets, str) else targets)
        for url in pairs.values():
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"openai: workload needs http(s) URLs, got {url!r}")
        self.name = (
            f"openai:{targets}"
            if isinstance(targets, str)
            else "openai:" + ",".join(f"{k}={v}" for k, v in pairs.items())
        )
        self._shared = pairs[None] if list(pairs) == [None] else None
        self.endpoints: dict[str, str] = {str(k): v for k, v in pairs.items() if k is not None}
        self._options: dict[str, Any] = {
            "concurrency": concurrency,
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "timeout_s": timeout_s,
        }
        self._loads: dict[str, _EndpointLoad] = {}

    def _load_for(self, uuid: str) -> _EndpointLoad:
        load = self._loads.get(uuid)
        if load is not None:
            return load
        if self._shared is not None:
            bound = next(iter(self._loads), None)
            if bound is not None:
                raise ConfigError(
                    f"{self.name} is one endpoint, already measured as GPU {bound}'s load; its "
                    f"tokens cannot be attributed to GPU {uuid} as well. Name the endpoint of "
                    "each GPU: openai:GPU-aaaa=http://127.0.0.1:8000,GPU-bbbb=http://…:8001"
                )
            url = self._shared
        else:
            url = self.endpoints.get(uuid)  # type: ignore[assignment]
            if url is None:
                raise ConfigError(
                    f"GPU {uuid} has no endpoint in {self.name}; add {uuid}=URL for the server "
                    "running on it (every GPU under test needs its own endpoint)"
                )
        load = _EndpointLoad(uuid, url, **self._options)
        self._loads[uuid] = load
        return load

    def start(self, uuid: str) -> None:
        self._load_for(uuid).start()

    def stop(self, uuid: str) -> None:
        load = self._loads.get(uuid)
        if load is not None:
            load.stop()

    def settle(self, uuid: str) -> None:
        load = self._loads.get(uuid)
        if load is not None:
            load.settle()

    def ready(self, uuid: str) -> bool:
        load = self._loads.get(uuid)
        return load is not None and load.ready()

    def tokens_total(self, uuid: str) -> float:
        load = self._loads.get(uuid)
        return 0.0 if load is None else load.tokens()

    def requests(self, uuid: str) -> int:
        """Completed requests counted for ``uuid``."""
        load = self._loads.get(uuid)
        return 0 if load is None else load.requests

    def close(self) -> None:
        for load in self._loads.values():
            load._stop.set()
        for load in self._loads.values():
            load.stop()


# --------------------------------------------------------------------------------------------
# decode | prefill | batched on real GPUs
# --------------------------------------------------------------------------------------------


def _no_synthetic_backend(workload_class: str) -> BackendUnavailable:
    return BackendUnavailable(
        f"the synthetic {workload_class!r} load needs torch or cupy, and neither is installed "
        "in this Python; 'pip install torch' (or cupy-cuda12x) into rigforge's environment, or "
        "load the GPUs with 'cmd:llama-bench -m MODEL.gguf' or "
        "'openai:http://127.0.0.1:8000' (an OpenAI-compatible server)"
    )


class SyntheticWorkload(Workload):
    """One :mod:`tuning.synthetic` worker process per GPU, counted in reference tokens.

    Workers are spawned paused (buffers allocated) for ``uuids`` at construction, in parallel,
    and for any other GPU at its first :meth:`start`; :meth:`start`/:meth:`stop` then only
    write ``run``/``pause`` to the worker (quick). :meth:`tokens_total` is the worker's last
    report of completed work (every ``report_every_s``) and raises
    :class:`~tuning.errors.WorkloadFailed` when a worker died or went silent. ``backend``:
    ``torch``/``cupy`` (default: whichever is importable, torch first) or ``numpy`` (CPU test
    mode). :meth:`close` terminates every worker (SIGTERM, then SIGKILL); workers also exit on
    their own when this process dies.
    """

    def __init__(
        self,
        workload_class: str,
        uuids: Sequence[str] = (),
        *,
        backend: str | None = None,
        report_every_s: float = 0.1,
        max_mib: int | None = None,
        ready_timeout_s: float = 120.0,
        stall_timeout_s: float = 30.0,
    ) -> None:
        if workload_class not in WORKLOAD_CLASSES:
            raise ConfigError(
                f"unknown workload class {workload_class!r}; choose one of {WORKLOAD_CLASSES}"
            )
        backend = backend or synthetic_backend()
        if backend is None:
            raise _no_synthetic_backend(workload_class)
        self.name = workload_class
        self.backend = backend
        self.report_every_s = report_every_s
        self.max_mib = max_mib
        self.ready_timeout_s = ready_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self._workers: dict[str, WorkerProcess] = {}
        self._running: set[str] = set()
        # workers exit when this process dies anyway; this also stops them at interpreter exit
        self._finalizer = weakref.finalize(self, _terminate_all, self._workers)
        try:
            for uuid in dict.fromkeys(uuids):
                self._spawn(uuid)
            for uuid in list(self._workers):
                self._workers[uuid].wait_ready(self.ready_timeout_s)
        except BaseException:
            self.close()
            raise

    def _spawn(self, uuid: str) -> WorkerProcess:
        worker = WorkerProcess(
            uuid,
            self.name,
            backend=self.backend,
            report_every_s=self.report_every_s,
            max_mib=self.max_mib,
            stall_timeout_s=self.stall_timeout_s,
        )
        self._workers[uuid] = worker
        return worker

    def worker(self, uuid: str) -> WorkerProcess | None:
        """The worker loading ``uuid`` (its ``info``: backend, GEMM shape, buffer size)."""
        return self._workers.get(uuid)

    def start(self, uuid: str) -> None:
        worker = self._workers.get(uuid)
        if worker is None:
            worker = self._spawn(uuid)
            worker.wait_ready(self.ready_timeout_s)
        worker.check()
        if uuid not in self._running:
            worker.run()
            self._running.add(uuid)

    def stop(self, uuid: str) -> None:
        worker = self._workers.get(uuid)
        if worker is not None and uuid in self._running:
            worker.pause()
        self._running.discard(uuid)

    def tokens_total(self, uuid: str) -> float:
        worker = self._workers.get(uuid)
        if worker is None:
            return 0.0
        worker.check()
        return worker.tokens

    def close(self) -> None:
        self._running.clear()
        _terminate_all(self._workers)


def _terminate_all(workers: dict[str, WorkerProcess]) -> None:
    for worker in workers.values():  # all at once, then wait: workers finish in parallel
        worker.send_sigterm()
    for worker in workers.values():
        worker.terminate()


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------


def synthetic_backend() -> str | None:
    """``torch`` or ``cupy`` when importable (a synthetic load can run), else ``None``."""
    for module in ("torch", "cupy"):
        if importlib.util.find_spec(module) is not None:
            return module
    return None


def make_workload(spec: str, rig: Rig, *, tps_regex: str | None = None) -> Workload:
    """Build the workload named by ``spec`` for ``rig`` (see the module docstring).

    ``tps_regex``: the tokens/s regex of a ``cmd:`` workload (``None``: llama-bench's).
    """
    if spec.startswith("cmd:"):
        return CmdWorkload(spec.removeprefix("cmd:"), tps_regex=tps_regex or LLAMA_BENCH_TPS_RE)
    if spec.startswith("openai:"):
        return _openai_for_rig(spec.removeprefix("openai:"), rig)
    if spec in WORKLOAD_CLASSES:
        if hasattr(rig, "set_workload") and hasattr(rig, "tokens_total"):
            return SimWorkload(rig, spec)
        backend = synthetic_backend()
        if backend is None:
            raise _no_synthetic_backend(spec)
        return SyntheticWorkload(spec, [gpu.uuid for gpu in rig.gpus], backend=backend)
    raise ConfigError(
        f"unknown workload {spec!r}; choose decode, prefill, batched, cmd:COMMAND or openai:URL"
    )


def _openai_for_rig(spec: str, rig: Rig) -> OpenAIWorkload:
    """An :class:`OpenAIWorkload` whose endpoints cover every GPU of ``rig`` (checked before
    any cap changes): GPU keys may be UUIDs or indices in the rig's order."""
    pairs = parse_openai_spec(spec)
    uuids = [gpu.uuid for gpu in rig.gpus]
    if None in pairs:
        if len(uuids) > 1:
            raise ConfigError(
                f"openai:{spec} is one endpoint but the rig has {len(uuids)} GPUs under test; "
                "its tokens cannot be attributed per GPU. Name each GPU's endpoint: "
                "openai:0=http://127.0.0.1:8000,1=http://127.0.0.1:8001 (index or UUID)"
            )
        return OpenAIWorkload({uuids[0]: pairs[None]} if uuids else spec)
    mapping: dict[str, str] = {}
    for key, url in pairs.items():
        uuid = (
            uuids[int(key)] if key is not None and key.isdigit() and int(key) < len(uuids) else key
        )
        if uuid not in uuids:
            raise ConfigError(f"openai: workload names GPU {key!r}, which is not on this rig")
        mapping[str(uuid)] = url
    missing = [u for u in uuids if u not in mapping]
    if missing:
        raise ConfigError(
            f"openai:{spec} gives no endpoint for GPU {', '.join(missing)}; every GPU under "
            "test needs its own (UUID=URL or INDEX=URL)"
        )
    return OpenAIWorkload(mapping)
