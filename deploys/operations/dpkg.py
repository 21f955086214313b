"""dpkg left half done by a killed deploy, finished before anything else is installed."""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import operation

from deploys.facts.host import HostSnapshot

#: ``dpkg --configure -a``, waiting up to 300 s for the dpkg lock. When a deploy is killed, the
#: apt it started on the host runs on and holds the lock; dpkg (unlike apt's
#: ``DPkg::Lock::Timeout``) fails at once, so it is retried — on a lock error only.
DPKG_CONFIGURE_WAITING = (
    "for i in $(seq 150); do "
    "out=$(dpkg --configure -a 2>&1) && exit 0; "
    'case "$out" in *lock*) sleep 2 ;; *) echo "$out" >&2; exit 1 ;; esac; '
    "done; echo 'dpkg lock still held after 300 s' >&2; exit 1"
)


@operation()
def configured() -> Generator[str, None, None]:
    """Finish an interrupted dpkg run (``dpkg --configure -a``) when one is left.

    apt refuses to install anything while ``/var/lib/dpkg/updates/`` holds entries. A no-op
    otherwise. Example: ``dpkg.configured(name="Finish an interrupted dpkg run")``.
    """
    if host.get_fact(HostSnapshot).dpkg_interrupted:
        yield DPKG_CONFIGURE_WAITING
    else:
        host.noop("dpkg: no interrupted run to finish")
