"""The reference deploy ``bench/deploy_noop.py`` times beside the workstation deploy.

Seven stock pyinfra operations, each the plain way a pyinfra user writes it, on the same
target: the packages (with an index refresh held back by ``cache_time``), a templated sysctl
drop-in, a modprobe option line, a unit file, a system user. A re-deploy of it is what a no-op
pyinfra deploy costs on that target; the bench prints the workstation deploy's no-op time as a
multiple of it. Never part of the workstation deploy.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.operations import apt, files, server

ASSETS = Path(__file__).resolve().parents[1] / "bench" / "reference"

apt.packages(
    name="Reference: numactl + pciutils",
    packages=["numactl", "pciutils"],
    update=True,
    # One hour, the value pyinfra's own docs use for cache_time.
    cache_time=3600,
)
files.template(
    name="Reference: sysctl drop-in",
    src=str(ASSETS / "99-rigforge-bench.conf.j2"),
    dest="/etc/sysctl.d/99-rigforge-bench.conf",
    swappiness=10,
)
files.directory(name="Reference: /etc/modprobe.d", path="/etc/modprobe.d")
files.line(
    name="Reference: modprobe option",
    path="/etc/modprobe.d/rigforge-bench.conf",
    line="options rigforge_bench enabled=1",
)
files.directory(name="Reference: unit folder", path="/etc/systemd/system")
files.put(
    name="Reference: unit file",
    src=str(ASSETS / "rigforge-bench.service"),
    dest="/etc/systemd/system/rigforge-bench.service",
)
server.user(
    name="Reference: system user",
    user="rigforge-bench",
    system=True,
    shell="/usr/sbin/nologin",
    home="/nonexistent",
    create_home=False,
)
