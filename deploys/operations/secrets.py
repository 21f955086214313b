"""Put a secret file so that its content never reaches pyinfra's output, and never sits in a
file another user can read, not even for the length of an upload.

``files.put`` is not enough for a secret: with ``--diff`` it prints the old and new content of
a changed file (pyinfra 3.10 ``files.put`` logs ``generate_color_diff`` of both, and there is
no per-operation switch), and with ``_sudo`` pyinfra uploads to ``/tmp/pyinfra-<hash>`` over
SFTP (created with the SSH server's umask, typically 0644) before ``cp`` creates the target
with root's umask (0644) and only then ``chmod 600`` runs.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationValueError, StringCommand, operation
from pyinfra.facts.files import File, Sha256File

#: Where the SSH user stages an upload under sudo: relative to the login's home (SFTP and the
#: shell both start there), created 0700 and owned by the login, so no other user can read the
#: file during the upload.
STAGING_DIR = ".rigforge-upload"


class Secret:
    """Secret bytes whose ``repr``/``str`` show only their length and a hash prefix, so an
    operation argument never prints the secret (pyinfra logs arguments in debug output)."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | str) -> None:
        self.value = value.encode("utf-8") if isinstance(value, str) else value

    @classmethod
    def from_file(cls, path: str | Path) -> Secret:
        """The bytes of a local secret file."""
        return cls(Path(path).read_bytes())

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes (what ``sha256sum`` prints on the host)."""
        return hashlib.sha256(self.value).hexdigest()

    def __repr__(self) -> str:
        return f"Secret(<{len(self.value)} bytes, sha256 {self.sha256[:8]}…>)"

    __str__ = __repr__


@operation()
def put_secret(
    secret: Secret, dest: str, user: str = "root", group: str = "root", mode: str = "600"
):
    """
    Put ``secret`` at ``dest`` with ``mode``; the content is never logged or diffed.

    + secret: the bytes (:class:`Secret`, compared with the host's file by SHA-256)
    + dest: absolute target path
    + user, group: owner of ``dest``
    + mode: octal mode of ``dest``; group/other write or any "other" bit is refused

    A missing ``dest`` is first created empty with its final owner and mode (``install -m``),
    so the content lands in a private file; the upload is staged in :data:`STAGING_DIR`
    (0700, the SSH login's) when the operation runs with ``_sudo``.

    **Example:**

    .. code:: python

        secrets.put_secret(
            name="HF token (0600)", secret=Secret.from_file("secrets/hf-token"),
            dest="/etc/rigforge/secrets/hf-token", user="rigforge", group="rigforge",
        )
    """
    if not dest.startswith("/"):
        raise OperationValueError(f"secret destination {dest!r} must be an absolute path")
    if int(mode, 8) & 0o027:
        raise OperationValueError(f"mode {mode} lets group write or others read a secret")
    content = secret.value
    local_sha = secret.sha256
    remote = host.get_fact(File, path=dest)
    remote_sha = host.get_fact(Sha256File, path=dest) if remote else None
    if not remote:
        yield StringCommand("install", "-m", mode, "-o", user, "-g", group, "/dev/null", dest)
    if remote_sha != local_sha:
        staged = posixpath.join(STAGING_DIR, f"{posixpath.basename(dest)}.{local_sha[:12]}")
        # Owned by the login (SUDO_USER under sudo), 0700: the staged copy is private. The
        # staged file itself is made 0600 first: SFTP creates a new file 0644 (sshd's umask)
        # and writing into an existing one keeps its mode, so the copy is private on its own
        # too (tests/target/test_sudo_secrets.py watched it 0644 inside the 0700 folder).
        login = '"${SUDO_USER:-$(id -un)}"'
        yield StringCommand("install", "-d", "-m", "700", "-o", login, STAGING_DIR)
        yield StringCommand("install", "-m", "600", "-o", login, "/dev/null", staged)
        yield FileUploadCommand(io.BytesIO(content), dest, remote_temp_filename=staged)
    if remote and (
        remote.get("user") != user
        or remote.get("group") != group
        or remote.get("mode") != int(mode)
    ):
        yield StringCommand("chown", f"{user}:{group}", dest)
        yield StringCommand("chmod", mode, dest)
    if remote and remote_sha == local_sha:
        host.noop(f"secret {dest} is up to date (content not shown)")
