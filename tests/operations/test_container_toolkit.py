"""The container toolkit's key fetch and CDI decision, run for real against stub binaries.

``key_command`` runs in ``bash`` with ``curl`` and ``gpg`` stubs first on ``PATH``: a key with
the wrong fingerprint, or a download that fails, must leave the keyring as it was (and fail);
the right key lands atomically.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploys.container_toolkit import CTK_KEY_FINGERPRINT, cdi_command, key_command

URL = "https://nvidia.github.io/libnvidia-container/gpgkey"

CURL = """#!/bin/sh
[ -n "$STUB_CURL_FAIL" ] && { echo "curl: (22) 404" >&2; exit 22; }
out=""; while [ $# -gt 0 ]; do [ "$1" = -o ] && { out="$2"; shift; }; shift; done
printf 'ARMORED KEY\\n' > "$out"
"""
GPG = """#!/bin/sh
case "$*" in
  *--show-keys*) printf 'pub:-:4096:1:X:1::::::scESC:\\nfpr:::::::::%s:\\n' "$STUB_FPR" ;;
  *--dearmor*) out=""; for a; do [ "$prev" = -o ] && out="$a"; prev="$a"; done
               eval last=\\${$#}; printf 'BINARY<%s>' "$(cat "$last")" > "$out" ;;
esac
"""


@pytest.fixture
def stubs(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("curl", CURL), ("gpg", GPG)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _run(command: str, env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command], env={**env, **extra}, capture_output=True, text=True, check=False
    )


def test_right_key_is_installed(stubs: dict[str, str], tmp_path: Path) -> None:
    keyring = tmp_path / "keyrings" / "nvidia.gpg"
    keyring.parent.mkdir()
    keyring.write_bytes(b"")  # the empty keyring an earlier `curl | gpg` left behind
    proc = _run(key_command(URL, str(keyring)), stubs, STUB_FPR=CTK_KEY_FINGERPRINT.lower())
    assert proc.returncode == 0, proc.stderr
    assert keyring.read_text() == "BINARY<ARMORED KEY>"
    assert oct(keyring.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in keyring.parent.iterdir()) == ["nvidia.gpg"]


def test_wrong_fingerprint_is_refused_and_keyring_left_alone(
    stubs: dict[str, str], tmp_path: Path
) -> None:
    keyring = tmp_path / "nvidia.gpg"
    keyring.write_text("OLD")
    proc = _run(key_command(URL, str(keyring)), stubs, STUB_FPR="0" * 40)
    assert proc.returncode == 1
    assert "expected " + CTK_KEY_FINGERPRINT in proc.stderr
    assert keyring.read_text() == "OLD"


def test_failed_download_fails_the_step(stubs: dict[str, str], tmp_path: Path) -> None:
    keyring = tmp_path / "nvidia.gpg"
    proc = _run(
        key_command(URL, str(keyring)), stubs, STUB_FPR=CTK_KEY_FINGERPRINT, STUB_CURL_FAIL="1"
    )
    assert proc.returncode != 0
    assert not keyring.exists()


def test_paths_with_spaces_are_one_word() -> None:
    assert "'/srv/my keys/nv.gpg.rigforge-new'" in key_command(URL, "/srv/my keys/nv.gpg").replace(
        "'\"'\"'", "'"
    )
    assert "--output='/etc/my cdi/nvidia.yaml'" in cdi_command("/etc/my cdi/nvidia.yaml").replace(
        "'\"'\"'", "'"
    )
