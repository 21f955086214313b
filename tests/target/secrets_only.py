"""A deploy of the serving concern alone (its secrets), for ``test_sudo_secrets.py``: the
staging of a secret under ``ssh.sudo`` is what is under test, not the package installs."""

from __future__ import annotations

from deploys.serving import serving

serving()
