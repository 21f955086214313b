"""Xid events and "fallen off the bus" from the kernel log, counted per GPU and code.

The NVIDIA driver reports GPU faults only in the kernel log, as lines such as::

    NVRM: Xid (PCI:0000:cb:00): 13, pid='<unknown>', name=<unknown>, Graphics SM Warp …
    NVRM: Xid (PCI:0000:44:00): 79, GPU has fallen off the bus

and newer drivers also say a GPU fell off the bus *without* an Xid, over several lines::

    NVRM: The NVIDIA GPU 0000:b3:00.0
    NVRM: (PCI ID: 10de:26b5) installed in this system has
    NVRM: fallen off the bus and is not responding to commands.

(real lines in ``tests/fixtures/real/kernel-log/``, sources in its SOURCES.md). DCGM cannot
report Xid 79 (NVIDIA/DCGM#162); rigforge counts both kinds from the log itself, so an alert
fires without restarting anything, and clears when the box reboots (the counters are "since
boot": the kernel's ring buffer or the journal of this boot is read from its start).

Sources: ``/dev/kmsg`` (records ``prio,seq,usec,flags;message``, read non-blocking on each
scrape; needs ``CAP_SYSLOG`` where ``kernel.dmesg_restrict=1``), the journal (``journalctl
-k -b -f -o cat`` in a reader thread; needs the ``systemd-journal`` group), or a plain text
file (``dmesg`` output; tests).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tuning.core.bus import normalize_bus_id

#: Xid codes the alert rules name, with what they mean and what to do. From NVIDIA's "Xid
#: Errors" catalogue (docs.nvidia.com/deploy/xid-errors, "Xid error listing" and the
#: "recommended actions" column); counters for these exist at 0 for every known GPU, so a
#: first event is an increase Prometheus can see.
WATCHED_XIDS: Mapping[int, str] = {
    48: "double-bit ECC error (uncorrectable memory error): drain the GPU, reset it; "
    "replace it if it recurs",
    63: "ECC page retirement or row remapping recorded (pending): reboot or reset the GPU "
    "at the next chance so the remap takes effect",
    64: "ECC page retirement or row remapping failure: the GPU has run out of spare rows; "
    "replace it",
    79: "GPU has fallen off the bus: reboot (a reset cannot reach it); if it recurs check "
    "the riser, PCIe power cables, PSU and slot, and lower the cap",
    119: "GSP RPC timeout: reset the GPU or reboot; update the driver if it recurs",
    120: "GSP error: reset the GPU or reboot; update the driver if it recurs",
}

_XID_RE = re.compile(
    r"NVRM: Xid \(PCI:(?P<bus>(?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}"
    r"(?:\.[0-7])?)\): (?P<code>\d+)"
)
_FALLEN_RE = re.compile(r"fallen off the bus", re.IGNORECASE)
_BUS_RE = re.compile(r"(?P<bus>(?:[0-9a-fA-F]{4,8}:)[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?)")
_GPU_INTRO_RE = re.compile(r"NVRM: The NVIDIA GPU (?P<bus>[0-9a-fA-F:.]+)")
#: ``/dev/kmsg`` record header (``prio,seq,usec,flags[,…];``); dictionary lines start
#: with a space and ``KEY=``.
_KMSG_HEADER_RE = re.compile(r"^\d+,\d+,\d+,[^;]*;")
_KMSG_DICT_RE = re.compile(r"^ [A-Z_]+=")
_HEX_ESCAPE_RE = re.compile(r"\\x([0-9a-fA-F]{2})")
#: A multi-line "fallen off the bus" message names its GPU at most this many lines earlier
#: (NVSentinel#155's driver 570 message: bus id on line 1, "fallen off the bus" on line 3).
_INTRO_WINDOW_LINES = 3
#: Unknown bus: an Xid or fallen-off message whose GPU could not be named.
UNKNOWN_BUS = "unknown"


def bus_label(text: str) -> str:
    """The ``pci_bus_id`` label of a bus id as the driver prints it (``0000:01:00`` → function 0).

    Same form as the GPU series' label (:func:`~tuning.core.bus.normalize_bus_id`).
    """
    text = text.strip()
    if "." not in text:
        text += ".0"
    return normalize_bus_id(text)


def kernel_messages(chunk: str) -> list[str]:
    """The message lines in text read from ``/dev/kmsg`` or a ``dmesg``-style file.

    kmsg headers are stripped, dictionary lines dropped and ``\\xNN`` escapes (kmsg writes a
    newline inside a message as ``\\x0a``) decoded, so every line is one message line.
    """
    lines: list[str] = []
    for raw in chunk.splitlines():
        if _KMSG_DICT_RE.match(raw):
            continue
        text = _KMSG_HEADER_RE.sub("", raw, count=1)
        text = _HEX_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
        lines.extend(text.splitlines())
    return lines


class XidCounter:
    """Counts Xid codes per GPU and "fallen off the bus" messages that carry no Xid."""

    def __init__(self, bus_ids: Iterable[str] = ()) -> None:
        self.xids: Counter[tuple[str, int]] = Counter()
        self.fell_off: Counter[str] = Counter()
        self._recent_intro: deque[str | None] = deque(maxlen=_INTRO_WINDOW_LINES)
        for bus in bus_ids:
            label = normalize_bus_id(bus)
            self.fell_off[label] += 0
            for code in WATCHED_XIDS:
                self.xids[(label, code)] += 0

    def feed(self, line: str) -> None:
        """Count one kernel-log message line."""
        xid = _XID_RE.search(line)
        if xid is not None:
            self.xids[(bus_label(xid.group("bus")), int(xid.group("code")))] += 1
            self._recent_intro.append(None)
            return
        intro = _GPU_INTRO_RE.search(line)
        if _FALLEN_RE.search(line):
            bus = _BUS_RE.search(line)
            if bus is not None:
                label = bus_label(bus.group("bus"))
            else:
                label = next((b for b in reversed(self._recent_intro) if b), UNKNOWN_BUS)
            self.fell_off[label] += 1
            self._recent_intro.clear()
            return
        self._recent_intro.append(bus_label(intro.group("bus")) if intro else None)

    def feed_all(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.feed(line)


class LineSource(Protocol):
    """Where kernel-log message lines come from."""

    name: str

    def poll(self) -> list[str]:
        """Message lines that arrived since the last poll (never blocks). Raises OSError."""
        ...

    def close(self) -> None: ...


class FileSource:
    """``/dev/kmsg`` (one record per read, non-blocking) or a text file that grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = "kmsg" if str(path) == "/dev/kmsg" else "file"
        self._fd: int | None = None
        self._partial = ""

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        return self._fd

    def poll(self) -> list[str]:
        fd = self._open()
        chunks: list[str] = []
        while True:
            try:
                data = os.read(fd, 8192)
            except BlockingIOError:  # kmsg: nothing new
                break
            except BrokenPipeError:  # kmsg: records overwritten before we read them
                continue
            if not data:  # a regular file at its end
                break
            chunks.append(data.decode("utf-8", errors="replace"))
        text = self._partial + "".join(chunks)
        if self.name == "kmsg":
            self._partial = ""
        else:  # keep an unfinished last line for the next poll
            head, sep, tail = text.rpartition("\n")
            text, self._partial = (head + sep, tail) if sep else ("", tail)
        return kernel_messages(text)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class JournalSource:
    """``journalctl -k -b -f -o cat``: this boot's kernel messages, then new ones, in a thread."""

    name = "journal"

    def __init__(self, command: tuple[str, ...] = ("journalctl", "-k", "-b", "-f", "-o", "cat")):
        self._process = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
        self._lines: deque[str] = deque()
        self._thread = threading.Thread(target=self._read, name="rigforge-journal", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.append(line.rstrip("\n"))

    def poll(self) -> list[str]:
        lines = []
        while self._lines:
            lines.append(self._lines.popleft())
        if not lines and self._process.poll() not in (None, 0):
            raise OSError(f"journalctl exited with status {self._process.returncode}")
        return lines

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._process.terminate()


@dataclass
class KernelLog:
    """A line source and the counter it feeds; ``up`` is whether the last poll worked."""

    source: LineSource
    counter: XidCounter
    up: bool = True

    def poll(self) -> None:
        """Read what arrived and count it. Raises ``OSError`` (``up`` is then False)."""
        try:
            lines = self.source.poll()
        except OSError:
            self.up = False
            raise
        self.up = True
        self.counter.feed_all(lines)


def open_kernel_log(spec: str, bus_ids: Iterable[str]) -> KernelLog | None:
    """``kmsg`` | ``journal`` | ``auto`` (kmsg if readable, else the journal) | ``none`` | PATH.

    Raises ``OSError`` when the chosen source cannot be opened.
    """
    counter = XidCounter(bus_ids)
    if spec == "none":
        return None
    if spec == "auto":
        log = KernelLog(FileSource(Path("/dev/kmsg")), counter)
        try:
            log.poll()
        except OSError:  # dmesg_restrict without CAP_SYSLOG: the journal may still be readable
            return KernelLog(JournalSource(), counter)
        return log
    if spec == "journal":
        return KernelLog(JournalSource(), counter)
    path = Path("/dev/kmsg") if spec == "kmsg" else Path(spec)
    return KernelLog(FileSource(path), counter)
