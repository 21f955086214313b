"""``secrets.put_secret``: a secret's bytes never appear in a command, a no-op line or an
argument's repr; a new file is created private before any byte lands; under sudo the upload is
staged in the login's 0700 folder, not in /tmp.

The facts are what pyinfra's ``File`` and ``Sha256File`` return for the host's file (``File``:
``{"user", "group", "mode": 600, …}``; ``Sha256File``: the hex digest ``sha256sum`` prints).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pyinfra.api import FileUploadCommand
from pyinfra.context import ctx_host

from deploys.operations.secrets import STAGING_DIR, Secret, put_secret
from tests.operations.test_operations import FakeHost

REPO = Path(__file__).resolve().parents[2]
KEY = b"RIGFORGE_API_KEY=6f1d2c0e9b8a7f6e5d4c3b2a19081726354433221100ffeeddccbbaa99887766\n"
DEST = "/etc/rigforge/secrets/api-key.env"

#: The rest of what pyinfra's ``File`` fact returns for a regular file (``stat`` output).
STAT = {
    "user": "root",
    "group": "root",
    "size": 33,
    "atime": "2026-12-01T10:00:00",
    "mtime": "2026-12-01T10:00:00",
    "ctime": "2026-12-01T10:00:00",
}


def _run(facts: dict[str, Any], **kwargs: Any) -> tuple[list[Any], FakeHost]:
    fake = FakeHost(facts)
    with ctx_host.use(fake):
        commands = list(put_secret._inner(secret=Secret(KEY), dest=DEST, **kwargs))
    return commands, fake


def _text(commands: list[Any], fake: FakeHost) -> str:
    return "\n".join([*(str(c) for c in commands), *fake.noops, repr(Secret(KEY))])


def test_new_secret_is_created_0600_before_the_upload_staged_privately() -> None:
    commands, fake = _run({"File": None})
    assert str(commands[0]) == f"install -m 600 -o root -g root /dev/null {DEST}"
    assert str(commands[1]).startswith("install -d -m 700 -o")
    upload = commands[3]
    assert isinstance(upload, FileUploadCommand)
    assert upload.dest == DEST
    assert upload.remote_temp_filename.startswith(STAGING_DIR + "/")
    # The staged file exists 0600 before SFTP writes into it (a new SFTP file would be 0644).
    assert str(commands[2]).startswith("install -m 600 -o")
    assert str(commands[2]).endswith(f"/dev/null {upload.remote_temp_filename}")
    assert not upload.remote_temp_filename.startswith("/tmp")
    assert b"6f1d2c0e" not in _text(commands, fake).encode()


def test_changed_secret_is_uploaded_without_showing_old_or_new_content() -> None:
    remote = {**STAT, "mode": 600}
    commands, fake = _run({"File": remote, "Sha256File": "0" * 64})
    kinds = [type(c).__name__ for c in commands]
    assert kinds == ["StringCommand", "StringCommand", "FileUploadCommand"]
    assert "6f1d2c0e" not in _text(commands, fake)


def test_same_secret_is_a_noop_that_says_nothing_of_the_content() -> None:
    remote = {**STAT, "mode": 600}
    commands, fake = _run({"File": remote, "Sha256File": hashlib.sha256(KEY).hexdigest()})
    assert commands == []
    assert fake.noops == [f"secret {DEST} is up to date (content not shown)"]


def test_wrong_mode_on_the_host_is_fixed() -> None:
    remote = {**STAT, "mode": 644}
    commands, _ = _run({"File": remote, "Sha256File": hashlib.sha256(KEY).hexdigest()})
    assert [str(c) for c in commands] == [f"chown root:root {DEST}", f"chmod 600 {DEST}"]


def test_a_mode_others_can_read_is_refused() -> None:
    import pytest
    from pyinfra.api import OperationValueError

    with pytest.raises(OperationValueError, match="others read"):
        _run({"File": None}, mode="644")


def _pyinfra_diff(tmp_path: Path, operation: str) -> str:
    """``pyinfra @local --diff`` of a one-operation deploy that would change ``dest.env``,
    answered "no" at the prompt: change detection (and its diff) runs, nothing is changed."""
    dest = tmp_path / "dest.env"
    dest.write_text("OLD-SECRET-4f2a\n")
    dest.chmod(0o600)
    deploy = tmp_path / "deploy.py"
    deploy.write_text(operation.format(dest=dest))
    pyinfra = Path(sys.executable).with_name("pyinfra")
    done = subprocess.run(
        [str(pyinfra), "@local", "--diff", str(deploy)],
        input="n\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert dest.read_text() == "OLD-SECRET-4f2a\n", "the answer was no: nothing changed"
    return done.stdout + done.stderr


def test_files_put_prints_the_secret_with_diff_but_put_secret_does_not(tmp_path: Path) -> None:
    """The real pyinfra: ``files.put`` shows old and new content under ``--diff`` (why the
    secrets do not use it); ``put_secret`` reports the change without either."""
    plain = _pyinfra_diff(
        tmp_path,
        "import io\nfrom pyinfra.operations import files\n"
        "files.put(name='plain', src=io.StringIO('NEW-SECRET-9c1d\\n'), dest='{dest}')\n",
    )
    assert "NEW-SECRET-9c1d" in plain, plain
    secret = _pyinfra_diff(
        tmp_path,
        "from deploys.operations.secrets import Secret, put_secret\n"
        "put_secret(name='secret', secret=Secret('NEW-SECRET-9c1d\\n'), dest='{dest}')\n",
    )
    assert "Detected changes" in secret, secret
    assert "NEW-SECRET-9c1d" not in secret
    assert "OLD-SECRET-4f2a" not in secret
