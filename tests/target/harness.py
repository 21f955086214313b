"""A throwaway Debian target booted with real systemd, reached over real SSH on loopback.

The CI machine has no Docker and its PID 1 need not be systemd, so a target is a
debootstrapped bookworm tree (``systemd``, ``systemd-sysv``, ``dbus``, ``openssh-server``)
booted under ``systemd-nspawn --boot`` (Debian's ``systemd-container``):

* ``--register=no --keep-unit``: no machined or host systemd needed; the leader PID is the
  target's systemd, and SIGTERM to ``systemd-nspawn`` halts it cleanly (a few seconds);
* host networking (the target needs apt and PyPI); its sshd listens on 127.0.0.1:PORT only
  (``/etc/ssh/sshd_config.d/rigforge-target.conf``), and services it starts bind loopback;
* units really run: the deploy's ``systemctl`` enables, starts, reloads; nothing is faked but
  the GPU boundary (:mod:`tests.target.gpu_standin`);
* the running "kernel" the deploy writes (``/sys/...``, ``/proc/irq/...``) is a plain scratch
  tree, bound from ``<roots>/<name>/kernel`` at :data:`KERNEL_ROOT` (the CI inventories'
  ``kernel.root``): a deploy can never change this machine's kernel.

The pristine trees are cached as tarballs under ``/var/cache/rigforge-target/``: the minbase
tree (``bookworm-minbase-v1.tar``, debootstrap) and the booted tree built from it (systemd
added under ``systemd-nspawn``; its name carries a hash of its recipe, so a changed recipe or
base is rebuilt). Each target starts from a fresh extraction of the booted tree. When the
caches are absent they are built with the mirror this machine's own apt sources use.

Command line (run as root from the repo root)::

    python -m tests.target.harness build              # ensure the cached pristine trees
    python -m tests.target.harness start ws1 2222     # fresh copy, booted, sshd on 127.0.0.1:2222
    python -m tests.target.harness stop ws1
    python -m tests.target.harness stop-all
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.target import gpu_standin
from tests.target.gpu_standin import StandinGpu

REPO_ROOT = Path(__file__).resolve().parents[2]
#: SSH material (client key, host key, known_hosts) lives in the checkout, gitignored.
SSH_DIR = REPO_ROOT / ".target" / "ssh"
CLIENT_KEY = SSH_DIR / "id_ed25519"
HOST_KEY = SSH_DIR / "ssh_host_ed25519_key"
KNOWN_HOSTS = SSH_DIR / "known_hosts"
#: Per-run state (pid files, logs) in the checkout; the big trees live outside it.
STATE_DIR = REPO_ROOT / ".target" / "run"
CACHE_DIR = Path(os.environ.get("RIGFORGE_TARGET_CACHE", "/var/cache/rigforge-target"))
ROOTS_DIR = Path(os.environ.get("RIGFORGE_TARGET_ROOTS", "/var/tmp/rigforge-target"))
SUITE = "bookworm"
COMPONENTS = "main contrib non-free non-free-firmware"
#: Bump when the minbase tree's recipe changes, so stale caches are rebuilt.
CACHE_VERSION = 1
CACHE_TARBALL = CACHE_DIR / f"{SUITE}-minbase-v{CACHE_VERSION}.tar"
#: What the booted tree adds to minbase: an init, the bus systemctl talks to, sshd, and
#: ``ss``/``ps`` (iproute2, procps: priority "important", on every Debian install but not in
#: minbase; the verify suite's socket checks need ``ss``).
BOOT_PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "procps")
#: Bump when :func:`build_booted_cache`'s recipe changes (the hash below covers the rest).
BOOT_CACHE_VERSION = 2
#: Where the target's scratch "kernel" (``sys/``, ``proc/irq/``) is bound inside it; the CI
#: inventories' ``kernel.root``.
KERNEL_ROOT = "/srv/rigforge-kernel"
#: Seconds a booted target gets to halt on SIGTERM before it is killed.
STOP_TIMEOUT_S = 20
#: Seconds a target gets from ``systemd-nspawn`` to sshd answering (measured 1-2 s idle).
BOOT_TIMEOUT_S = 90

DEFAULT_MIRROR = "http://deb.debian.org/debian"


class HarnessUnavailable(RuntimeError):
    """The target tier cannot run here (not root, no debootstrap, no network); says why."""


@dataclass(frozen=True)
class Target:
    """A running target: its name, SSH port and the root of its tree on this machine."""

    name: str
    port: int
    root: Path

    @property
    def hosts_url(self) -> str:
        """The testinfra ``--hosts`` value for this target (paramiko backend)."""
        return f"paramiko://root@127.0.0.1:{self.port}?ssh_identity_file={CLIENT_KEY}"

    @property
    def kernel(self) -> Path:
        """The target's scratch kernel tree on this machine (:data:`KERNEL_ROOT` inside it)."""
        return kernel_dir(self.name)


# --------------------------------------------------------------------------------------------
# Preconditions and the mirror
# --------------------------------------------------------------------------------------------


def unavailable_reason() -> str | None:
    """Why the target tier cannot run on this machine, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "the target tier needs root (debootstrap, systemd-nspawn)"
    packages = {"systemd-nspawn": "systemd-container", "ssh-keygen": "openssh-client"}
    for tool in ("systemd-nspawn", "ssh-keygen", "tar"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install -y {packages.get(tool, tool)})"
    cached = booted_tarball().is_file() or CACHE_TARBALL.is_file()
    if not cached and shutil.which("debootstrap") is None:
        return "`debootstrap` is not installed (apt-get install -y debootstrap)"
    return None


def _sources_files() -> list[Path]:
    apt = Path("/etc/apt")
    files = sorted((apt / "sources.list.d").glob("*.sources"))
    files += sorted((apt / "sources.list.d").glob("*.list"))
    if (apt / "sources.list").is_file():
        files.append(apt / "sources.list")
    return files


def host_mirrors(suite: str = SUITE) -> dict[str, str]:
    """The Debian archive and security URIs this machine's apt uses for ``suite``.

    Returns ``{"archive": URI, "security": URI}`` (security may be absent). Read at run time
    so no host name is hard-coded in the repo; falls back to ``deb.debian.org``.
    """
    found: dict[str, str] = {}
    for path in _sources_files():
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (m.group(1).lower(), m.group(2).strip())
                    for m in re.finditer(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M)
                )
                uris = fields.get("uris", "").split()
                suites = fields.get("suites", "").split()
                if not uris or fields.get("enabled", "yes").lower() == "no":
                    continue
                if suite in suites:
                    found.setdefault("archive", uris[0])
                if f"{suite}-security" in suites:
                    found.setdefault("security", uris[0])
        else:
            for line in text.splitlines():
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 3 and parts[0] == "deb":
                    rest = [p for p in parts[1:] if not p.startswith("[")]
                    if len(rest) >= 2 and rest[1] == suite:
                        found.setdefault("archive", rest[0])
                    if len(rest) >= 2 and rest[1] == f"{suite}-security":
                        found.setdefault("security", rest[0])
    found.setdefault("archive", DEFAULT_MIRROR)
    return found


def target_sources(mirrors: dict[str, str], suite: str = SUITE) -> str:
    """The target's deb822 apt sources: the host's mirrors with non-free components enabled."""
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    text = (
        f"Types: deb\nURIs: {mirrors['archive']}\nSuites: {suite} {suite}-updates\n"
        f"Components: {COMPONENTS}\nSigned-By: {keyring}\n"
    )
    if "security" in mirrors:
        text += (
            f"\nTypes: deb\nURIs: {mirrors['security']}\nSuites: {suite}-security\n"
            f"Components: {COMPONENTS}\nSigned-By: {keyring}\n"
        )
    return text


# --------------------------------------------------------------------------------------------
# The pristine trees
# --------------------------------------------------------------------------------------------


def cache_line(what: str, path: Path, built_s: float | None) -> str:
    """The line CI prints per cache: ``cache <what>: hit (<path>)`` or
    ``cache <what>: cold: built in <N> s (<path>)`` (``built_s``: seconds it took, ``None``
    when the cache was there). ``tests/target/run.sh`` collects these lines."""
    if built_s is None:
        return f"cache {what}: hit ({path})"
    return f"cache {what}: cold: built in {float(built_s):.0f} s ({path})"


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def build_cache(force: bool = False) -> Path:
    """Ensure the minbase tarball exists (debootstrap from scratch when absent); return it."""
    reason = unavailable_reason()
    if reason:
        raise HarnessUnavailable(reason)
    if CACHE_TARBALL.is_file() and not force:
        return CACHE_TARBALL
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    build_root = CACHE_DIR / "build-root"
    if build_root.exists():
        shutil.rmtree(build_root)
    mirrors = host_mirrors()
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=openssh-server",
            SUITE,
            str(build_root),
            mirrors["archive"],
        ],
        stdout=subprocess.DEVNULL,
    )
    # policy-rc.d first of all: nothing installed into the minbase tree may start a service.
    policy = build_root / "usr/sbin/policy-rc.d"
    policy.write_text(
        "#!/bin/sh\n# rigforge target: never start services (see invoke-rc.d)\nexit 101\n"
    )
    policy.chmod(0o755)
    (build_root / "etc/apt/sources.list").unlink(missing_ok=True)
    (build_root / "etc/apt/sources.list.d/debian.sources").write_text(target_sources(mirrors))
    # debootstrap's own host keys are identical in every copy; the harness installs its own.
    for key in (build_root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Smaller, faster copies: the downloaded .debs are not needed after install.
    for deb in (build_root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    tmp = CACHE_TARBALL.with_suffix(".tar.tmp")
    _run(["tar", "-C", str(build_root), "--numeric-owner", "-cf", str(tmp), "."])
    tmp.rename(CACHE_TARBALL)
    shutil.rmtree(build_root)
    return CACHE_TARBALL


#: The booted tree's recipe, run inside the minbase tree under ``systemd-nspawn`` (not booted).
#: Removing policy-rc.d makes package scripts start their services, as on a real box.
_BOOT_RECIPE = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends {packages} >/dev/null
rm -f /usr/sbin/policy-rc.d /etc/ssh/ssh_host_*
apt-get clean
rm -rf /var/lib/apt/lists/*_Packages* /var/lib/apt/lists/*_Release* /var/log/apt/*
# Nothing to do in a container, or fights the host: consoles, kernel-only units.
systemctl mask getty@tty1.service serial-getty@console.service console-getty.service \
  systemd-networkd-wait-online.service systemd-timesyncd.service >/dev/null 2>&1 || true
: > /etc/machine-id
"""


def _boot_recipe() -> str:
    return _BOOT_RECIPE.format(packages=" ".join(BOOT_PACKAGES))


def booted_tarball() -> Path:
    """The booted tree's cache file; its name carries the recipe's and base's hash."""
    key = hashlib.sha256(
        f"{CACHE_TARBALL.name}\n{BOOT_CACHE_VERSION}\n{_boot_recipe()}".encode()
    ).hexdigest()[:12]
    return CACHE_DIR / f"{SUITE}-systemd-v{BOOT_CACHE_VERSION}-{key}.tar"


def build_booted_cache(force: bool = False) -> Path:
    """Ensure the booted tree's tarball (minbase + :data:`BOOT_PACKAGES`); return it.

    Built from the minbase tarball (:func:`build_cache`) by running the recipe inside it under
    ``systemd-nspawn`` (which mounts its /proc, /dev and /run); stale versions are removed.
    """
    tarball = booted_tarball()
    if tarball.is_file() and not force:
        return tarball
    base = build_cache()
    build_root = CACHE_DIR / "build-booted"
    if build_root.exists():
        shutil.rmtree(build_root)
    build_root.mkdir(parents=True)
    _run(["tar", "-C", str(build_root), "--numeric-owner", "-xf", str(base)])
    shutil.copyfile("/etc/resolv.conf", build_root / "etc/resolv.conf")
    _mirror_pip_trust(build_root)
    proc = subprocess.run(
        [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--directory",
            str(build_root),
            "--resolv-conf=off",
            "sh",
            "-c",
            _boot_recipe(),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise HarnessUnavailable(
            f"building the booted tree failed (rc {proc.returncode}; network to the mirror?):\n"
            + proc.stderr[-3000:]
        )
    tmp = tarball.with_suffix(".tar.tmp")
    _run(["tar", "-C", str(build_root), "--numeric-owner", "-cf", str(tmp), "."])
    tmp.rename(tarball)
    shutil.rmtree(build_root)
    for old in CACHE_DIR.glob(f"{SUITE}-systemd-v*.tar"):
        if old != tarball:
            old.unlink()
    return tarball


def ensure_ssh_material() -> None:
    """Generate the client key and the targets' host key once, in ``.target/ssh/``."""
    SSH_DIR.mkdir(parents=True, exist_ok=True)
    SSH_DIR.chmod(0o700)
    for key, comment in ((CLIENT_KEY, "rigforge-ci"), (HOST_KEY, "rigforge-target")):
        if not key.is_file():
            _run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                stdout=subprocess.DEVNULL,
            )


def _write_known_hosts(port: int) -> None:
    host_pub = " ".join(HOST_KEY.with_suffix(".pub").read_text().split()[:2])
    entry = f"[127.0.0.1]:{port} {host_pub}"
    lines = KNOWN_HOSTS.read_text().splitlines() if KNOWN_HOSTS.is_file() else []
    lines = [ln for ln in lines if not ln.startswith(f"[127.0.0.1]:{port} ")] + [entry]
    KNOWN_HOSTS.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# A running target
# --------------------------------------------------------------------------------------------


def _sshd_config(port: int) -> str:
    """The target's sshd drop-in: loopback only, key login for root, many parallel sessions.

    ``UsePAM no``: a container's pam_loginuid cannot write the login uid (no audit), which
    would refuse every login.
    """
    return (
        "# rigforge target (tests/target/harness.py)\n"
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "UsePAM no\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "MaxStartups 50:30:100\n"
        "MaxSessions 50\n"
    )


def _fake_kernel(kernel: Path) -> None:
    """Plausible sysfs/procfs files for facts to read: one NVIDIA GPU at 0000:41:00.0, NUMA 0.

    ``kernel`` is bound at :data:`KERNEL_ROOT` in the target (``kernel.root`` of the CI
    inventories), so ``{root}/sys/...`` and ``{root}/proc/irq/...`` land here.
    """
    if kernel.exists():
        shutil.rmtree(kernel)
    sys_ = kernel / "sys"
    dev = sys_ / "bus/pci/devices/0000:41:00.0"
    files = {
        dev / "vendor": "0x10de",
        dev / "device": "0x2204",
        dev / "class": "0x030000",
        dev / "current_link_speed": "2.5 GT/s PCIe",
        dev / "max_link_speed": "16.0 GT/s PCIe",
        dev / "current_link_width": "16",
        dev / "max_link_width": "16",
        dev / "numa_node": "0",
        dev / "local_cpulist": "0-1",
        dev / "irq": "130",
        dev / "link/l1_aspm": "1",
        dev / "link/l0s_aspm": "0",
        dev / "msi_irqs/130": "msi",
        dev / "msi_irqs/131": "msi",
        sys_
        / "module/pcie_aspm/parameters/policy": "[default] performance powersave powersupersave",
        sys_ / "devices/system/node/node0/cpulist": "0-1",
        sys_ / "devices/system/node/online": "0",
        sys_ / "devices/system/cpu/online": "0-1",
        # Debian's stock CPU knobs (the cpu: section's starting point): schedutil, THP always,
        # swappiness 60, NUMA balancing on; idle states POLL (0 us), C1 (1 us), C2 (350 us).
        sys_ / "kernel/mm/transparent_hugepage/enabled": "[always] madvise never",
        kernel / "proc/sys/vm/swappiness": "60",
        kernel / "proc/sys/kernel/numa_balancing": "1",
    }
    for cpu in (0, 1):
        base = sys_ / f"devices/system/cpu/cpu{cpu}"
        files[base / "cpufreq/scaling_governor"] = "schedutil"
        for state, latency_us in ((0, 0), (1, 1), (2, 350)):
            files[base / f"cpuidle/state{state}/latency"] = str(latency_us)
            files[base / f"cpuidle/state{state}/disable"] = "0"
    irq = kernel / "proc/irq"
    for n in (130, 131):
        files[irq / str(n) / "smp_affinity_list"] = "0-1"
        files[irq / str(n) / "smp_affinity"] = "3"
        files[irq / str(n) / "node"] = "0"
    files[irq / "default_smp_affinity"] = "3"
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n")


#: Where a target trusts the same CAs as this machine's pip (see :func:`_mirror_pip_trust`).
TARGET_PIP_CERT = "/usr/local/share/rigforge-ci/pip-ca-bundle.crt"


def host_pip_cert() -> Path | None:
    """The CA bundle this machine's pip trusts (``$PIP_CERT`` or ``cert`` in a global pip.conf).

    CI machines behind a TLS-inspecting egress proxy trust its CA this way; ``None`` when pip
    uses its own bundle here.
    """
    env = os.environ.get("PIP_CERT")
    if env and Path(env).is_file():
        return Path(env)
    for conf in (Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf")):
        parser = configparser.ConfigParser()
        with contextlib.suppress(OSError, configparser.Error):
            parser.read(conf)
            cert = parser.get("global", "cert", fallback=None)
            if cert and Path(cert).is_file():
                return Path(cert)
    return None


def _mirror_pip_trust(root: Path) -> None:
    """Let pip on the target reach PyPI the way pip here does: same CA bundle, via pip.conf.

    The tuner install (``pip install`` in ``/opt/rigforge/venv``) goes through this machine's
    network; the target's own trust store knows nothing of a CI proxy's CA.
    """
    cert = host_pip_cert()
    if cert is None:
        return
    dest = root / TARGET_PIP_CERT.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cert, dest)
    (root / "etc/pip.conf").write_text(f"[global]\ncert = {TARGET_PIP_CERT}\n")


def _pidfile(name: str) -> Path:
    return STATE_DIR / f"{name}.pid"


def target_root(name: str) -> Path:
    """Where target ``name``'s tree lives on this machine."""
    return ROOTS_DIR / name / "root"


def kernel_dir(name: str) -> Path:
    """Where target ``name``'s scratch kernel tree lives on this machine."""
    return ROOTS_DIR / name / "kernel"


def _wait_for_ssh(port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessUnavailable(f"systemd-nspawn exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.settimeout(2)
            if s.recv(64).startswith(b"SSH-"):
                return
        time.sleep(0.1)
    raise HarnessUnavailable(f"the target's sshd did not answer on 127.0.0.1:{port}")


def _prepare_tree(name: str, port: int, root: Path) -> None:
    """Per-target files: host key, root's authorized key, sshd drop-in, identity, pip trust."""
    etc_ssh = root / "etc/ssh"
    shutil.copyfile(HOST_KEY, etc_ssh / "ssh_host_ed25519_key")
    (etc_ssh / "ssh_host_ed25519_key").chmod(0o600)
    shutil.copyfile(HOST_KEY.with_suffix(".pub"), etc_ssh / "ssh_host_ed25519_key.pub")
    (etc_ssh / "sshd_config.d").mkdir(exist_ok=True)
    (etc_ssh / "sshd_config.d/rigforge-target.conf").write_text(_sshd_config(port))
    dot_ssh = root / "root/.ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    (dot_ssh / "authorized_keys").write_text(CLIENT_KEY.with_suffix(".pub").read_text())
    (dot_ssh / "authorized_keys").chmod(0o600)
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    (root / "etc/hostname").write_text(name + "\n")
    # Each target its own identity (the cache's is empty); the journal is kept per machine id.
    machine_id = root / "etc/machine-id"
    if not machine_id.is_file() or not machine_id.read_text().strip():
        machine_id.write_text(uuid.uuid4().hex + "\n")
    _mirror_pip_trust(root)


def _nspawn_command(
    name: str, root: Path, *, gpus: bool, binds: Sequence[tuple[str, str]] = ()
) -> list[str]:
    # /dev/nvidiactl: the stand-ins' "driver loaded" (see tests/target/gpu_standin.py).
    devices = ["--bind-ro=/dev/null:/dev/nvidiactl"] if gpus else []
    devices += [f"--bind-ro={src}:{dest}" for src, dest in binds]
    return [
        "systemd-nspawn",
        "--quiet",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--machine={name}",
        f"--directory={root}",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
        f"--bind={kernel_dir(name)}:{KERNEL_ROOT}",
        *devices,
    ]


def start(
    name: str,
    port: int,
    fresh: bool = True,
    gpus: Sequence[StandinGpu] = (),
    binds: Sequence[tuple[str, str]] = (),
) -> Target:
    """Boot target ``name`` with sshd on 127.0.0.1:``port`` from a fresh copy of the booted tree.

    ``gpus``: the GPUs the stand-ins for ``nvidia-smi``/``nvidia-persistenced`` report (see
    :mod:`tests.target.gpu_standin`); none: a host whose NVIDIA driver is not loaded. With
    ``fresh=False`` an existing tree is booted again (after a stop), as after a reboot, with
    the GPUs of its first start. ``binds``: ``(host path, target path)`` pairs bound read-only
    into the target (e.g. a network namespace file a test created). Returns once sshd answers.
    """
    stop(name)
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        raise HarnessUnavailable(f"127.0.0.1:{port} is already in use (another target?)")
    tarball = build_booted_cache()
    ensure_ssh_material()
    root = target_root(name)
    if fresh or not root.is_dir():
        if root.exists():
            # Deleting a used tree takes tens of seconds; move it aside and delete it behind us.
            trash = root.parent.with_name(f"{name}.trash-{time.time_ns()}")
            root.parent.rename(trash)
            subprocess.Popen(["rm", "-rf", str(trash)], start_new_session=True)
        root.mkdir(parents=True)
        _run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(tarball)])
        _fake_kernel(kernel_dir(name))
        if gpus:
            gpu_standin.install(root, gpus)
    else:
        gpu_standin.power_cycle(root)
    kernel_dir(name).mkdir(parents=True, exist_ok=True)
    _prepare_tree(name, port, root)
    _write_known_hosts(port)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    log = (STATE_DIR / f"{name}.log").open("w")
    proc = subprocess.Popen(
        _nspawn_command(
            name, root, gpus=(root / gpu_standin.STATE.lstrip("/")).is_file(), binds=binds
        ),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _pidfile(name).write_text(json.dumps({"pid": proc.pid, "port": port, "root": str(root)}))
    try:
        _wait_for_ssh(port, BOOT_TIMEOUT_S, proc)
    except HarnessUnavailable as error:
        stop(name)
        raise HarnessUnavailable(
            f"target {name} did not boot ({error}); see {STATE_DIR / (name + '.log')}"
        ) from None
    return Target(name=name, port=port, root=root)


def _mounts_under(root: Path) -> list[str]:
    """Mount points of this machine at or below ``root`` (none once a target has stopped)."""
    prefix = str(root)
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                out.append(point)
    return out


def _gone(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return bool(waited)
    except ChildProcessError:
        # Not our child (another process started it): look for it instead.
        return not Path(f"/proc/{pid}").exists()


def stop(name: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Halt target ``name``: SIGTERM to its ``systemd-nspawn`` (the target's systemd powers
    off), SIGKILL after ``timeout_s``. Raises when mounts of its tree are left behind.

    The tree stays on disk for inspection until the next fresh start.
    """
    pidfile = _pidfile(name)
    if not pidfile.is_file():
        return
    info = json.loads(pidfile.read_text())
    pid = int(info["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while not _gone(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.05)
    pidfile.unlink(missing_ok=True)
    left = _mounts_under(Path(info["root"]))
    if left:
        raise HarnessUnavailable(f"target {name} left mounts behind: {left}")


def stop_all() -> None:
    """Stop every target this checkout started."""
    if STATE_DIR.is_dir():
        for pidfile in STATE_DIR.glob("*.pid"):
            stop(pidfile.stem)


def main(argv: list[str]) -> int:
    """Entry point of ``python -m tests.target.harness``; see the module docstring."""
    if not argv:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    try:
        if cmd == "check":
            reason = unavailable_reason()
            print(reason or "ok")
            return 1 if reason else 0
        if cmd == "build":
            force = "--force" in args
            # The booted tree is built from minbase: minbase is needed only when it misses.
            booted = booted_tarball()
            if booted.is_file() and not force:
                print(cache_line("Debian booted tree", booted, None))
            else:
                began = time.monotonic()
                hit = CACHE_TARBALL.is_file() and not force
                minbase = build_cache(force=force)
                minbase_s = None if hit else time.monotonic() - began
                print(cache_line("Debian minbase tree", minbase, minbase_s))
                began = time.monotonic()
                booted = build_booted_cache(force=force)
                print(cache_line("Debian booted tree", booted, time.monotonic() - began))
        elif cmd == "start":
            target = start(args[0], int(args[1]))
            print(target.hosts_url)
        elif cmd == "stop":
            stop(args[0])
        elif cmd == "stop-all":
            stop_all()
        elif cmd == "mirrors":
            print(json.dumps(host_mirrors()))
        else:
            print(__doc__)
            return 2
    except HarnessUnavailable as error:
        print(f"target harness: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
