"""``ssh.sudo``: a deploy as a non-root login never stages a secret world-readable.

Over SFTP only the login can write, so pyinfra uploads a ``_sudo`` file to a staging path and
``sudo cp``\\ s it into place. ``deploys/operations/secrets.put_secret`` stages into
``~/.rigforge-upload`` (0700, the login's) and creates the destination first with its final
owner and mode, so ``cp`` (which keeps an existing file's mode) lands the content in a private
file. Checked on a real target over real SSH, as login ``deployer`` with passwordless sudo:

* while the deploy runs, a watcher on the target (``inotifywait`` on ``/tmp``, ``/var/tmp``
  and the login's home) lists every file created there, and a poller greps every
  other-readable file there for the secret's text: it is never found;
* every staged copy of the secret was under ``~/.rigforge-upload``, which is 0700, and none
  is left there afterwards;
* the secret ends ``0600`` ``root:rigforge`` … as the deploy says (``Secret … (0600, …)``).

Runs on its own target (``sudo-secrets`` on 127.0.0.1:2219 unless ``RIGFORGE_SUDO_TARGET`` /
``RIGFORGE_SUDO_PORT`` say otherwise)::

    .venv/bin/pytest -m target tests/target/test_sudo_secrets.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.target import harness, util

pytestmark = pytest.mark.target

NAME = os.environ.get("RIGFORGE_SUDO_TARGET", "sudo-secrets")
PORT = int(os.environ.get("RIGFORGE_SUDO_PORT", "2219"))
LOGIN = "deployer"
SERVICE_USER = "rigforge"
SECRET_DEST = "/etc/rigforge/secrets/hf-token"
WATCHED = f"/tmp /var/tmp /home/{LOGIN}"

_PREPARE = f"""set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends sudo inotify-tools >/dev/null
id {LOGIN} >/dev/null 2>&1 || useradd -m -s /bin/bash {LOGIN}
# useradd leaves the password '!' (locked); sshd without PAM refuses a locked account even
# for a key, so '*': no password, not locked.
usermod -p '*' {LOGIN}
id {SERVICE_USER} >/dev/null 2>&1 || useradd --system -s /usr/sbin/nologin {SERVICE_USER}
install -d -m 700 -o {LOGIN} -g {LOGIN} /home/{LOGIN}/.ssh
install -m 600 -o {LOGIN} -g {LOGIN} /root/.ssh/authorized_keys /home/{LOGIN}/.ssh/
echo '{LOGIN} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{LOGIN}
chmod 440 /etc/sudoers.d/{LOGIN}
visudo -cf /etc/sudoers.d/{LOGIN} >/dev/null
"""


def _watch(secret: str) -> str:
    """The watcher and the poller, started in the background; they write /root/watch.*."""
    needle = secret.strip()
    return f"""set -e
rm -f /root/watch.*
nohup inotifywait -m -r -q -e create,moved_to,close_write --format '%e %w%f' {WATCHED} \
  >/root/watch.events 2>/dev/null </dev/null &
echo $! >/root/watch.pid
nohup sh -c 'while :; do find {WATCHED} -type f -perm -o=r -exec grep -lF -- "{needle}" {{}} + \
  2>/dev/null; done' >/root/watch.leaks 2>/dev/null </dev/null &
echo $! >>/root/watch.pid
sleep 1
"""


@pytest.fixture(scope="module")
def target() -> Iterator[harness.Target]:
    with util.fresh_target(NAME, PORT, "start sudo-secrets target") as tgt:
        util.ssh(tgt, _PREPARE)
        yield tgt


@pytest.fixture(scope="module")
def deployed(target: harness.Target, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Deploy the serving concern as ``deployer`` with ``ssh.sudo``; return what was seen."""
    secret = (util.EXAMPLES / "secrets" / "ci-hf-token").read_text(encoding="utf-8")
    module = util.inventory_for(
        target,
        tmp_path_factory.mktemp("sudo"),
        overrides={
            "ssh": {"user": LOGIN, "sudo": True},
            "base": {"service_user": SERVICE_USER},
            "serving": {"plan": None},
        },
        stem="sudo",
    )
    util.ssh(target, _watch(secret))
    result = util.deploy(module, "deploy secrets as a sudo login", script=SECRETS_ONLY)
    time.sleep(1)  # let the poller finish a round after the last copy
    util.ssh(target, "kill $(cat /root/watch.pid)")
    assert result.rc == 0, result.stderr[-4000:]
    return {
        "events": util.ssh(target, "cat /root/watch.events"),
        "leaks": util.ssh(target, "cat /root/watch.leaks"),
        "stat": util.ssh(target, f"stat -c '%a %U %G' {SECRET_DEST}"),
        "content": util.ssh(target, f"cat {SECRET_DEST}"),
        "staging": util.ssh(target, f"stat -c '%a %U' /home/{LOGIN}/.rigforge-upload"),
        "left": util.ssh(target, f"ls -A /home/{LOGIN}/.rigforge-upload"),
        "secret": secret,
    }


SECRETS_ONLY = str(Path(__file__).with_name("secrets_only.py").relative_to(util.REPO))


def test_the_secret_is_never_readable_by_others_while_it_is_staged(deployed) -> None:
    assert deployed["leaks"] == "", deployed["leaks"]


def test_the_secret_is_staged_only_in_the_logins_private_folder(deployed) -> None:
    staged = [
        line.split(" ", 1)[1]
        for line in deployed["events"].splitlines()
        if line.startswith("CREATE") and "hf-token" in line
    ]
    assert staged, deployed["events"]  # the watcher saw the upload: it was staged
    assert all(p.startswith(f"/home/{LOGIN}/.rigforge-upload/") for p in staged), staged
    assert deployed["staging"].strip() == f"700 {LOGIN}", deployed["staging"]
    assert deployed["left"] == "", deployed["left"]  # the staged copy is gone afterwards


def test_the_secret_ends_private_with_the_deployed_content(deployed) -> None:
    assert deployed["stat"].strip() == f"600 {SERVICE_USER} {SERVICE_USER}", deployed["stat"]
    assert deployed["content"] == deployed["secret"]
