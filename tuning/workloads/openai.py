"""``openai:URL``: requests in flight per GPU against an OpenAI-compatible endpoint.

``openai:URL`` (a rig with one GPU) or ``openai:GPU=URL,GPU=URL,…`` (``GPU``: a UUID or an
index in the rig's order; every GPU needs its own endpoint) — ``concurrency`` requests in
flight per GPU (``/v1/completions`` unless the URL ends in ``/chat/completions``); output
tokens are ``usage.completion_tokens``, credited to the GPU whose endpoint answered. One
endpoint serving several GPUs is refused: its tokens cannot be attributed to one GPU's cap.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from tuning.errors import ConfigError, WorkloadFailed
from tuning.workloads.base import Workload, text_tail


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
                    f"{response.status_code} ({text_tail(response.text, 200)!r}); check the URL "
                    "(…/v1/completions or …/v1/chat/completions) and the served model",
                )
                return
            try:
                tokens = int(response.json()["usage"]["completion_tokens"])
            except (ValueError, KeyError, TypeError):
                self._fail(
                    stop,
                    f"the openai: endpoint {self.endpoint} for GPU {self.uuid} answered without "
                    f"usage.completion_tokens ({text_tail(response.text, 200)!r}); rigforge counts "
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
