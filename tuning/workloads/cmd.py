"""``cmd:COMMAND``: an external benchmark run in a loop per GPU, tokens/s parsed from stdout.

``COMMAND`` runs on each GPU (``CUDA_VISIBLE_DEVICES=<uuid>``, ``CUDA_DEVICE_ORDER=PCI_BUS_ID``,
its own process group); tokens/s come from each run's stdout with a regex whose group ``tps``
is the rate (default: llama-bench's markdown ``t/s`` column; the last match of a run counts).
The token counter grows continuously at the last completed run's rate (one run late, for at
most twice that run's duration), so a probe window sees a rate between completions.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from tuning.errors import ConfigError, WorkloadFailed
from tuning.workloads.base import Workload, text_tail

#: llama-bench's markdown row ends with ``| 131.66 ± 0.23 |`` (mean ± stddev tokens/s)
LLAMA_BENCH_TPS_RE = r"(?P<tps>\d+(?:\.\d+)?)\s*±\s*\d+(?:\.\d+)?\s*\|?\s*$"


def parse_tps(output: str, pattern: str = LLAMA_BENCH_TPS_RE) -> float | None:
    """The last tokens/s figure in ``output`` (regex group ``tps``, or group 1), else ``None``."""
    regex = re.compile(pattern, re.MULTILINE)
    last = None
    for match in regex.finditer(output):
        last = match.group("tps") if "tps" in regex.groupindex else match.group(1)
    return float(last) if last is not None else None


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
                f"{-returncode} (stderr: {text_tail(stderr)!r}); {by_hand}"
            )
        if returncode != 0:
            raise WorkloadFailed(
                f"the workload command {self.command!r} on GPU {uuid} exited with status "
                f"{returncode} (stderr: {text_tail(stderr)!r}); {by_hand}"
            )
        if tps is None:
            raise WorkloadFailed(
                f"the workload command {self.command!r} on GPU {uuid} printed no throughput "
                f"matching {self.tps_regex!r} (last output: {text_tail(stdout)!r}); pass a regex "
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
