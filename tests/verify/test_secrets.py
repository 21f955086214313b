"""Secrets and the config folder: the service user's, 0600/0750, never world-readable; an
opened stack's API key in a root-only environment file."""

from __future__ import annotations

import hashlib

import pytest

from tests.verify import expect
from tests.verify.conftest import Expected


def test_service_user_is_a_system_account_without_login(host, expected: Expected) -> None:
    user = host.user(expected.config.base.service_user)
    assert user.exists
    assert user.shell in ("/usr/sbin/nologin", "/bin/false", "/sbin/nologin")
    assert user.uid < 1000, f"{user.name} has uid {user.uid}; a system account is below 1000"


def test_config_dir_is_0750_root_service_group(host, expected: Expected) -> None:
    d = host.file(expect.CONFIG_DIR)
    assert d.is_directory
    assert d.mode == 0o750
    assert (d.user, d.group) == ("root", expected.config.base.service_user)


def test_secrets_are_0600_owned_by_the_service_user(host, expected: Expected) -> None:
    secrets = expect.secret_files(expected.config)
    if not secrets:
        pytest.skip("no secrets in the inventory")
    user = expected.config.base.service_user
    for path, local in secrets.items():
        f = host.file(path)
        assert f.exists, f"{path} is missing"
        assert f.mode == 0o600, f"{path} has mode {f.mode:o}"
        assert f.user == user, f"{path} is owned by {f.user}"
        # Compared by digest: the secret itself never reaches this process's output.
        if local.is_file():
            want = hashlib.sha256(local.read_bytes()).hexdigest()
            assert f.sha256sum == want, f"{path} is not the inventory's {local}; redeploy"


def test_secrets_dir_is_0750_root_service_group(host, expected: Expected) -> None:
    if not expect.secret_files(expected.config):
        pytest.skip("no secrets in the inventory")
    d = host.file(expect.SECRETS_DIR)
    assert d.is_directory
    assert d.mode == 0o750, f"{expect.SECRETS_DIR} has mode {d.mode:o}"
    assert (d.user, d.group) == ("root", expected.config.base.service_user)


def test_the_api_key_file_is_root_only_when_open_and_absent_on_loopback(
    host, expected: Expected
) -> None:
    path = expect.API_KEY_ENV_FILE
    if not expected.config.serving.open:
        # Nothing checks a key on loopback: a leftover key file is a secret kept for nothing.
        assert not host.file(path).exists, f"{path} is left over although serving is on loopback"
        return
    # systemd (root) reads the EnvironmentFile before dropping to the service user: root-owned.
    env = host.file(path)
    assert env.exists, f"{path} is missing"
    assert env.mode == 0o600, f"{path} has mode {env.mode:o}"
    assert (env.user, env.group) == ("root", "root"), f"{path}: {env.user}:{env.group}"
    # systemd ignores a line without '=': a raw key there would leave the endpoint open.
    values = dict(
        ln.split("=", 1) for ln in env.content_string.splitlines() if "=" in ln and ln[:1] != "#"
    )
    for name in expect.API_KEY_VARIABLES:
        assert values.get(name, "").strip(), f"{path} has no non-empty {name}="
