"""A throwaway Debian target reached over real SSH on loopback, for the ``target`` test tier.

The CI machine has no Docker, so a target is a debootstrapped bookworm tree whose own
``sshd`` runs inside ``unshare --mount --pid --uts --ipc --fork``:

* ``/proc`` is the namespace's own, ``/proc/sys`` and ``/proc/sysrq-trigger`` are bind-mounted
  read-only, and tmpfs fakes cover ``/sys`` and ``/proc/irq`` — a deploy can never change the CI
  machine's kernel (a plain chroot would share it);
* ``/dev`` is a tmpfs with a handful of device nodes (no host disks in reach);
* ``usr/sbin/policy-rc.d`` exits 101, so package scripts never start services;
* the network namespace is the host's (the target needs apt).

A target is stopped by killing the ``sshd`` child of ``unshare`` (``pgrep -P``), which as PID 1
of the namespace takes every other process of the target with it; the mounts disappear with the
mount namespace.

The pristine tree is cached as a tarball under ``/var/cache/rigforge-target/`` (outside the
repo) and each target starts from a fresh copy; when the cache is absent it is built from
scratch with the mirror this machine's own apt sources use (derived at run time).

Command line (run as root from the repo root)::

    python -m tests.target.harness build              # ensure the cached pristine tree
    python -m tests.target.harness start ws1 2222     # fresh copy + sshd on 127.0.0.1:2222
    python -m tests.target.harness stop ws1
    python -m tests.target.harness stop-all
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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
#: Bump when the pristine tree's recipe changes, so stale caches are rebuilt.
CACHE_VERSION = 1
CACHE_TARBALL = CACHE_DIR / f"{SUITE}-minbase-v{CACHE_VERSION}.tar"

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


# --------------------------------------------------------------------------------------------
# Preconditions and the mirror
# --------------------------------------------------------------------------------------------


def unavailable_reason() -> str | None:
    """Why the target tier cannot run on this machine, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "the target tier needs root (debootstrap, unshare, mount)"
    for tool in ("unshare", "ssh-keygen", "pgrep", "tar"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    if not CACHE_TARBALL.is_file() and shutil.which("debootstrap") is None:
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
# The pristine tree
# --------------------------------------------------------------------------------------------


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def build_cache(force: bool = False) -> Path:
    """Ensure the pristine tarball exists (debootstrap from scratch when absent); return it."""
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
    # policy-rc.d first of all: nothing the deploy installs may start a service here.
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

#: Runs as PID 1 of the new namespaces, then becomes the target's sshd. $1 root, $2 port.
_NAMESPACE_SCRIPT = r"""
set -eu
R="$1"; PORT="$2"
mount -t proc proc "$R/proc"
# The kernel's tunables stay read-only; /proc/irq and /sys are fakes (filled below).
mount --bind "$R/proc/sys" "$R/proc/sys"
mount -o remount,bind,ro "$R/proc/sys"
if [ -e "$R/proc/sysrq-trigger" ]; then
  mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"
  mount -o remount,bind,ro "$R/proc/sysrq-trigger"
fi
mount -t tmpfs -o size=1m,mode=0555 rigforge-fake-irq "$R/proc/irq"
mount -t tmpfs -o size=4m rigforge-fake-sys "$R/sys"
mount -t tmpfs -o size=16m,mode=0755 rigforge-dev "$R/dev"
for spec in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
  set -- $spec
  mknod -m 666 "$R/dev/$1" c "$2" "$3"
done
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
mount -t tmpfs -o size=64m rigforge-run "$R/run"
mkdir -p "$R/run/sshd" "$R/run/lock"
chmod 0755 "$R/run/sshd"
cp -a "$R/var/lib/rigforge-fake/sys/." "$R/sys/"
cp -a "$R/var/lib/rigforge-fake/proc_irq/." "$R/proc/irq/"
hostname "$3"
exec chroot "$R" /usr/sbin/sshd -D -e -p "$PORT" \
  -o ListenAddress=127.0.0.1 -o UsePAM=no -o PasswordAuthentication=no \
  -o KbdInteractiveAuthentication=no -o PermitRootLogin=prohibit-password \
  -o PidFile=none -o MaxStartups=50:30:100 -o MaxSessions=50
"""


def _fake_sys(root: Path) -> None:
    """Plausible sysfs/procfs files for facts to read: one NVIDIA GPU at 0000:41:00.0, NUMA 0.

    Files written under ``sys/`` before the namespace mounts its tmpfs there would be hidden,
    so they are staged in ``/var/lib/rigforge-fake`` and copied in by the namespace script.
    """
    stage = root / "var/lib/rigforge-fake"
    if stage.exists():
        shutil.rmtree(stage)
    sys_ = stage / "sys"
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
    }
    irq = stage / "proc_irq"
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


def _wait_for_ssh(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.settimeout(2)
            if s.recv(64).startswith(b"SSH-"):
                return
        time.sleep(0.1)
    raise HarnessUnavailable(f"the target's sshd did not answer on 127.0.0.1:{port}")


def start(name: str, port: int, fresh: bool = True) -> Target:
    """Start target ``name`` on 127.0.0.1:``port`` from a fresh copy of the pristine tree.

    With ``fresh=False`` an existing tree is reused (after a stop). Returns the target.
    """
    stop(name)
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        raise HarnessUnavailable(f"127.0.0.1:{port} is already in use (another target?)")
    tarball = build_cache()
    ensure_ssh_material()
    root = target_root(name)
    if fresh or not root.is_dir():
        if root.exists():
            # Deleting a used tree takes tens of seconds; move it aside and delete it behind us.
            trash = root.parent.with_name(f"{name}.trash-{time.time_ns()}")
            root.rename(trash)
            subprocess.Popen(["rm", "-rf", str(trash)], start_new_session=True)
        root.mkdir(parents=True)
        _run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(tarball)])
    etc_ssh = root / "etc/ssh"
    shutil.copyfile(HOST_KEY, etc_ssh / "ssh_host_ed25519_key")
    (etc_ssh / "ssh_host_ed25519_key").chmod(0o600)
    shutil.copyfile(HOST_KEY.with_suffix(".pub"), etc_ssh / "ssh_host_ed25519_key.pub")
    dot_ssh = root / "root/.ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    (dot_ssh / "authorized_keys").write_text(CLIENT_KEY.with_suffix(".pub").read_text())
    (dot_ssh / "authorized_keys").chmod(0o600)
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
    (root / "etc/hostname").write_text(name + "\n")
    _fake_sys(root)
    _mirror_pip_trust(root)
    _write_known_hosts(port)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    script = _NAMESPACE_SCRIPT
    log = (STATE_DIR / f"{name}.log").open("w")
    proc = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--pid",
            "--uts",
            "--ipc",
            "--fork",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "rigforge-target",
            str(root),
            str(port),
            name,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _pidfile(name).write_text(json.dumps({"pid": proc.pid, "port": port, "root": str(root)}))
    try:
        _wait_for_ssh(port, 20)
        if proc.poll() is not None:
            raise HarnessUnavailable(f"target {name} exited with {proc.returncode}")
    except HarnessUnavailable:
        stop(name)
        raise HarnessUnavailable(
            f"target {name} did not start; see {STATE_DIR / (name + '.log')}"
        ) from None
    return Target(name=name, port=port, root=root)


def stop(name: str, timeout_s: float = 10) -> None:
    """Stop target ``name``: kill the sshd child of ``unshare`` (PID 1 of the namespace).

    Killing the ``unshare`` pid itself would orphan the namespace; killing its child ends every
    process in it. The tree stays on disk for inspection until the next fresh start.
    """
    pidfile = _pidfile(name)
    if not pidfile.is_file():
        return
    pid = int(json.loads(pidfile.read_text())["pid"])
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            # Not our child (another process started it): poll for its exit instead.
            if not Path(f"/proc/{pid}").exists():
                break
            waited = 0
        if waited:
            break
        time.sleep(0.05)
    pidfile.unlink(missing_ok=True)


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
            print(build_cache(force="--force" in args))
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
